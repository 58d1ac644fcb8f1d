"""Static checks of runtime_image/Dockerfile (no Docker engine runs here to build it).

What is checked is what the image promises: multi-stage with a slim final stage that has no
compilers, multi-arch through a platform-neutral base and TARGETARCH, a non-root user (uid
10001), the `edgemodel` entrypoint, and the project installed from its pyproject.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "runtime_image" / "Dockerfile"


@pytest.fixture(scope="module")
def stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_multi_stage_with_slim_platform_neutral_bases(stages: list[list[str]]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        base = stage[0].split()[1]
        assert base.startswith("python:") and base.endswith("-slim")
        assert "--platform" not in stage[0]  # each target platform gets its own native base
    assert any("ARG TARGETARCH" in line for line in stages[0])


def test_final_stage_has_no_compilers_and_runs_as_non_root(stages: list[list[str]]) -> None:
    final = " ".join(stages[-1])
    for tool in ("gcc", "g++", "build-essential", "apt-get install", "make "):
        assert tool not in final
    users = [line for line in stages[-1] if line.upper().startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] == "10001"
    assert "--uid 10001" in final


def test_entrypoint_and_ports(stages: list[list[str]]) -> None:
    entrypoints = [line for line in stages[-1] if line.upper().startswith("ENTRYPOINT ")]
    assert json.loads(entrypoints[-1].split(None, 1)[1]) == ["edgemodel"]
    assert any(line.startswith("EXPOSE 8000 8001 8002") for line in stages[-1])


def test_installs_the_project_from_pyproject(stages: list[list[str]]) -> None:
    builder = " ".join(stages[0])
    for path in ("pyproject.toml", "README.md", "operator/", "runtime_image/", "sandbox/"):
        assert path in builder
    assert "pip wheel" in builder
    assert "pip install --no-index" in " ".join(stages[-1])
