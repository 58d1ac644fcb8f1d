"""Specification of the size rule: no function outside tests is over 80 lines.

ruff's size rules (too many branches, statements, returns: pyproject.toml) bound a function's
complexity but not its length; this walks operator/, runtime_image/, sandbox/ and bench/ with
`ast` so that a long function of flat code (a builder returning one big dict) is split as well.
Only tests are exempt; bench/ keeps ruff's branch and statement limits off, not this one
(docs/architecture.md, "Code size").
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("operator", "runtime_image", "sandbox", "bench")
MAX_LINES = 80


def long_functions(source: str, filename: str) -> list[str]:
    """`file:line name (N lines)` for each function or method of `source` over MAX_LINES.

    A function's lines run from its `def` (decorators excluded) to its last line, docstring
    and nested functions included."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES:
                found.append(f"{filename}:{node.lineno} {node.name} ({lines} lines)")
    return found


def shipped_sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_the_walk_finds_the_shipped_code() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in shipped_sources()}
    assert "operator/edgemodel_operator/builders.py" in names
    assert "runtime_image/edgemodel_runtime/compress/pipeline.py" in names
    assert any(name.startswith("sandbox/edgemodel_sandbox/") for name in names)


def function(name: str, lines: int, keyword: str = "def") -> str:
    """The source of a function `lines` long, its `def` line included."""
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 1))
    return f"{keyword} {name}():\n{body}"


def test_80_lines_pass_and_81_are_named() -> None:
    source = function("at_limit", MAX_LINES) + function("over", MAX_LINES + 1, "async def")
    assert long_functions(source, "m.py") == [f"m.py:{MAX_LINES + 1} over (81 lines)"]


def test_methods_and_nested_functions_count_too() -> None:
    method = textwrap.indent(function("method", MAX_LINES + 1), "    ")
    nested = "def outer():\n" + textwrap.indent(function("inner", MAX_LINES + 1), "    ")
    source = "class C:\n" + method + nested
    assert long_functions(source, "m.py") == [
        f"m.py:{MAX_LINES + 3} outer ({MAX_LINES + 2} lines)",
        "m.py:2 method (81 lines)",
        f"m.py:{MAX_LINES + 4} inner (81 lines)",
    ]


def test_no_shipped_function_is_over_80_lines() -> None:
    found = [
        entry
        for path in shipped_sources()
        for entry in long_functions(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert not found, "split these into well-named helpers:\n" + "\n".join(found)
