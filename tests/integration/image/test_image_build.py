"""The runtime image index: both platforms, the spec'd config, Debian's Python 3.11 per
architecture, the lock's distributions and the project, readable by skopeo.

Specification of `make image` (edgemodel_sandbox.image.build): build/image/edgemodel-runtime.oci.tar
is an oci-archive whose index.json names one multi-platform index (linux/amd64, linux/arm64/v8);
each platform's config runs `edgemodel --help` as uid/gid 10001 with the OCI labels (revision =
the commit, `-dirty` when the project's files have uncommitted changes).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from edgemodel_sandbox.image import build, lock, oci, spec
from tests.integration.image.archive import ArchiveView, git_revision

pytestmark = pytest.mark.slow
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64


def test_index_names_both_platforms_and_the_ref(
    runtime_image: build.BuiltImage, archive: ArchiveView
) -> None:
    entry = archive.layout_index["manifests"][0]
    assert len(archive.layout_index["manifests"]) == 1
    assert entry["mediaType"] == oci.INDEX_TYPE
    assert entry["digest"] == runtime_image.index_digest
    assert entry["annotations"][oci.REF_NAME] == runtime_image.ref
    assert entry["annotations"][oci.CONTAINERD_NAME] == runtime_image.ref
    version = spec.image_tag(runtime_image.info.version, git_revision())
    assert runtime_image.ref == f"edgemodel.local/runtime:{version}"
    platforms = [m["platform"] for m in archive.index["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert json.loads(archive.files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}


def test_skopeo_reads_the_archive_as_a_two_platform_index(
    runtime_image: build.BuiltImage,
) -> None:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{runtime_image.path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    index = json.loads(raw)
    assert oci.digest_of(raw.encode()) == runtime_image.index_digest
    assert index["mediaType"] == oci.INDEX_TYPE
    assert {m["platform"]["architecture"] for m in index["manifests"]} == {"amd64", "arm64"}


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_config_runs_edgemodel_as_the_non_root_user(archive: ArchiveView, arch: str) -> None:
    config = archive.config(arch)
    assert config["architecture"] == arch and config["os"] == "linux"
    run = config["config"]
    assert run["User"] == "10001:10001"
    assert run["Entrypoint"] == ["edgemodel"] and run["Cmd"] == ["--help"]
    assert sorted(run["ExposedPorts"]) == ["8000/tcp", "8001/tcp", "8002/tcp"]
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(run["Env"])
    assert run["WorkingDir"] == "/home/edgemodel"
    labels = run["Labels"]
    assert sorted(labels) == sorted(spec.LABEL_KEYS)
    assert labels["org.opencontainers.image.revision"] == git_revision()
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.title"] == "edgemodel-runtime"
    assert len(config["rootfs"]["diff_ids"]) == len(archive.manifest(arch)["layers"]) == 3


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_base_layer_is_debians_python_for_the_platform(archive: ArchiveView, arch: str) -> None:
    members = archive.layer_members(arch, 0)
    assert "usr/bin/python3.11" in members
    assert "etc/ssl/certs/ca-certificates.crt" in members
    assert "bookworm" in archive.layer_file(arch, 0, "usr/lib/os-release").decode()
    header = archive.layer_file(arch, 0, "usr/bin/python3.11")[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE[arch]
    assert not any(name.startswith("dev/") for name in members)
    for name in ("etc/hostname", "etc/resolv.conf"):
        assert members[name].size == 0  # nothing of the build host's network or name


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_wheel_layer_holds_exactly_the_lock_for_the_platform(
    archive: ArchiveView, arch: str
) -> None:
    members = archive.layer_members(arch, 1)
    pins = lock.parse(lock.RUNTIME_LOCK.read_text())
    installed = build.installed_distributions(list(members))
    assert installed == {name: pin.version for name, pin in pins.items()}
    site = spec.SITE_PACKAGES
    native = [n for n in members if n.startswith(f"{site}/onnxruntime/capi/") and ".so" in n]
    assert native, "onnxruntime's native library is missing"
    assert not [n for n in members if "__pycache__" in n or n.endswith((".pyc", "/RECORD"))]


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_project_layer_adds_the_project_script_and_user(archive: ArchiveView, arch: str) -> None:
    members = archive.layer_members(arch, 2)
    assert build.installed_distributions(list(members)) == {"edgemodel": "0.1.0"}
    for package in ("edgemodel_cli", "edgemodel_operator", "edgemodel_runtime"):
        assert f"{spec.SITE_PACKAGES}/{package}/__init__.py" in members
    script = archive.layer_file(arch, 2, spec.CONSOLE_SCRIPT).decode()
    assert script.splitlines()[0] == "#!/usr/bin/python3"
    assert members[spec.CONSOLE_SCRIPT].mode == 0o755
    passwd = archive.layer_file(arch, 2, "etc/passwd").decode().splitlines()
    assert "edgemodel:x:10001:10001::/home/edgemodel:/usr/sbin/nologin" in passwd
    assert passwd[0].startswith("root:x:0:0:")
    assert "edgemodel:x:10001:" in archive.layer_file(arch, 2, "etc/group").decode()
    home = members["home/edgemodel"]
    assert home.isdir() and (home.uid, home.gid) == (10001, 10001)
    shadow = members["etc/shadow"]
    assert shadow.mode == 0o640 and shadow.uid == 0


def test_platforms_share_the_project_layer(archive: ArchiveView) -> None:
    amd64, arm64 = (archive.manifest(arch)["layers"] for arch in ("amd64", "arm64"))
    assert amd64[2] == arm64[2]
    assert amd64[0] != arm64[0] and amd64[1] != arm64[1]


def test_pause_image_is_a_static_binary_for_both_platforms() -> None:
    pause = build.ensure_pause_image()
    view = ArchiveView.read(pause.path)
    assert view.layout_index["manifests"][0]["annotations"][oci.REF_NAME] == (
        "edgemodel.local/pause:3.10"
    )
    for arch in ("amd64", "arm64"):
        assert view.config(arch)["config"]["Entrypoint"] == ["/pause"]
        members = view.layer_members(arch, 0)
        assert list(members) == ["pause"]
        header = view.layer_file(arch, 0, "pause")[:20]
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE[arch]
