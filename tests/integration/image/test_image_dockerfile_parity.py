"""The Dockerfile and `make image` build one image.

runtime_image/Dockerfile (the Docker/buildx path) is read as text and compared with the image
`make image` actually built: same Debian suite and Python, same user, entrypoint, command,
ports, env, working directory and label keys, and the same installed distributions (the lock
the Dockerfile installs plus the project at pyproject's version).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib

import pytest

from edgemodel_sandbox.image import build, lock, spec
from tests.integration.image.archive import ArchiveView

pytestmark = pytest.mark.slow
DOCKERFILE = build.ROOT / "runtime_image" / "Dockerfile"


def final_stage() -> tuple[dict[str, str], list[str], str]:
    """(global ARG defaults, the final stage's instructions, the whole file joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [" ".join(raw.split()) for raw in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM "))
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines[:first_from]), flags=re.M))
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return args, lines[last_from:], "\n".join(lines)


def instruction(stage: list[str], keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in stage if line.startswith(keyword + " ")]


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_same_base_and_python(archive: ArchiveView, arch: str) -> None:
    args, stage, _ = final_stage()
    assert stage[0] == "FROM debian:${DEBIAN_SUITE}-slim"
    os_release = archive.layer_file(arch, 0, "usr/lib/os-release").decode()
    assert f"VERSION_CODENAME={args['DEBIAN_SUITE']}" in os_release
    assert f"usr/bin/python{args['PYTHON_VERSION']}" in archive.layer_members(arch, 0)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_same_runtime_config(archive: ArchiveView, arch: str) -> None:
    _, stage, _ = final_stage()
    config = archive.config(arch)["config"]
    assert config["User"] == instruction(stage, "USER")[-1]
    assert config["Entrypoint"] == json.loads(instruction(stage, "ENTRYPOINT")[-1])
    assert config["Cmd"] == json.loads(instruction(stage, "CMD")[-1])
    assert config["WorkingDir"] == instruction(stage, "WORKDIR")[-1]
    ports = [f"{port}/tcp" for port in instruction(stage, "EXPOSE")[-1].split()]
    assert sorted(config["ExposedPorts"]) == sorted(ports)
    env = {pair for line in instruction(stage, "ENV") for pair in line.split()}
    assert env <= set(config["Env"])
    assert f"PATH={dict(spec.ENV)['PATH']}" in config["Env"]  # Debian's default, written out
    labels = {
        pair.split("=", 1)[0] for line in instruction(stage, "LABEL") for pair in shlex.split(line)
    }
    assert labels == set(config["Labels"])
    useradd = " ".join(stage)
    user, group = config["User"].split(":")
    assert f"--uid {user}" in useradd and f"--gid {group}" in useradd


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_same_installed_distributions(archive: ArchiveView, arch: str) -> None:
    _, _, whole = final_stage()
    lock_paths = re.findall(r"--require-hashes .*?-r (\S+)", whole)
    assert len(lock_paths) == 1
    dockerfile_pins = lock.parse((build.ROOT / lock_paths[0]).read_text())
    pyproject = tomllib.loads((build.ROOT / "pyproject.toml").read_text())["project"]
    expected = {name: pin.version for name, pin in dockerfile_pins.items()}
    expected[pyproject["name"]] = pyproject["version"]
    names = [*archive.layer_members(arch, 1), *archive.layer_members(arch, 2)]
    assert build.installed_distributions(names) == expected
