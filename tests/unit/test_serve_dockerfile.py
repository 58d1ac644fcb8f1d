"""Static checks of runtime_image/Dockerfile (no Docker engine runs here to build it).

The Dockerfile is the Docker/buildx path to the runtime image; `make image` is the Docker-free
path. Both must describe one image, so the Dockerfile is held to the builder's declared spec
(edgemodel_sandbox.image.spec): Debian bookworm's python3 as the base, the same pinned wheels,
a non-root user (uid/gid 10001), the `edgemodel` entrypoint, ports, env and OCI labels. It also
keeps its own promises: multi-stage with a final stage that has no compilers or pip, multi-arch
through a platform-neutral base and TARGETARCH, the project installed from its pyproject.
The built image's distributions are compared in tests/integration/image/.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from edgemodel_sandbox.image import build, lock, spec

DOCKERFILE = Path(__file__).resolve().parents[2] / "runtime_image" / "Dockerfile"


def _global_args(text: str) -> dict[str, str]:
    before_first_from = text.split("\nFROM ", 1)[0]
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", before_first_from, flags=re.M))


@pytest.fixture(scope="module")
def stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped, global ARGs
    substituted into FROM lines."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args = _global_args(DOCKERFILE.read_text())
    result: list[list[str]] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            for name, value in args.items():
                line = line.replace("${" + name + "}", value)
            result.append([])
        if result:
            result[-1].append(line)
    return result


def _instructions(stage: list[str], keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.upper().startswith(keyword + " ")]


def test_multi_stage_on_debians_own_python_platform_neutral(stages: list[list[str]]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert stage[0].split()[1] == f"debian:{spec.DEBIAN_SUITE}-slim"
        assert "--platform" not in stage[0]  # each target platform gets its own native base
    assert any("ARG TARGETARCH" in line for line in stages[0])
    assert _global_args(DOCKERFILE.read_text())["PYTHON_VERSION"] == spec.PYTHON_VERSION


def test_final_stage_installs_only_debians_python_and_no_build_tools(
    stages: list[list[str]],
) -> None:
    final = " ".join(stages[-1])
    for tool in ("gcc", "g++", "build-essential", "python3-pip", "pip install", "make "):
        assert tool not in final
    installs = re.findall(r"apt-get install (.*?)(?:&&|$)", final)
    assert len(installs) == 1
    words = shlex.split(installs[0])
    assert "--no-install-recommends" in words
    assert sorted(w for w in words if not w.startswith("-")) == sorted(spec.DEBIAN_PACKAGES)


def test_non_root_user_matches_the_spec(stages: list[list[str]]) -> None:
    final = " ".join(stages[-1])
    assert _instructions(stages[-1], "USER")[-1] == f"{spec.UID}:{spec.GID}"
    assert f"--uid {spec.UID}" in final and f"--gid {spec.GID}" in final
    assert f"groupadd --gid {spec.GID} {spec.USER_NAME}" in final
    assert f"--home-dir {spec.HOME}" in final
    assert _instructions(stages[-1], "WORKDIR")[-1] == spec.HOME


def test_entrypoint_cmd_ports_env_and_labels_match_the_spec(stages: list[list[str]]) -> None:
    final = stages[-1]
    assert json.loads(_instructions(final, "ENTRYPOINT")[-1]) == list(spec.ENTRYPOINT)
    assert json.loads(_instructions(final, "CMD")[-1]) == list(spec.CMD)
    exposed = [int(port) for port in _instructions(final, "EXPOSE")[-1].split()]
    assert exposed == list(spec.EXPOSED_PORTS)
    env = dict(pair.split("=", 1) for e in _instructions(final, "ENV") for pair in e.split())
    # PATH is the Debian image's default; the builder writes it out because it has no parent.
    assert env == {k: v for k, v in spec.ENV if k != "PATH"}
    labels = dict(
        pair.split("=", 1) for e in _instructions(final, "LABEL") for pair in shlex.split(e)
    )
    assert sorted(labels) == sorted(spec.LABEL_KEYS)
    assert labels["org.opencontainers.image.title"] == spec.IMAGE_TITLE
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"] == spec.SOURCE_URL


def test_installs_the_lock_and_the_project_from_pyproject(stages: list[list[str]]) -> None:
    builder = " ".join(stages[0])
    copied = [word.rstrip("/") for c in _instructions(stages[0], "COPY") for word in c.split()[:-1]]
    assert sorted(copied) == sorted(build.PROJECT_INPUTS)
    assert "pip wheel" in builder and "--no-deps ." in builder
    lock_path = lock.RUNTIME_LOCK.relative_to(lock.ROOT)
    assert f"--require-hashes --only-binary=:all: --no-compile -r {lock_path}" in builder
    assert "SITE=/rootfs/usr/local/lib/python${PYTHON_VERSION}/dist-packages" in builder
    assert "COPY --from=builder /rootfs/ /" in stages[-1]
