"""The sandbox's own containerd (edgemodel_sandbox.containerd), run for real with the pause image.

It starts from a rendered config with everything under its directory, imports an OCI archive
for both platforms, runs containers detached on either platform (arm64 under qemu behind a
native init, which passes SIGTERM on) and stops leaving no daemon, shim, mount, cgroup or shim
socket behind, also when the process that started it has gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgemodel_sandbox.containerd import Containerd, shim_socket
from edgemodel_sandbox.image.build import BuiltImage, ensure_pause_image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd and runc need root"),
]


@pytest.fixture(scope="module")
def pause() -> BuiltImage:
    return ensure_pause_image()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Containerd]:
    containerd = Containerd(tmp_path / "ctd")
    containerd.start()
    try:
        yield containerd
    finally:
        containerd.stop()


def leftovers(daemon: Containerd, names: list[str]) -> list[str]:
    found = [f"shim {pid}" for pid in daemon.shim_pids()]
    found += [f"mount {target}" for target in daemon.mounts()]
    for name in names:
        socket = shim_socket(daemon.address, daemon.namespace, name)
        found += [f"socket {socket}"] if socket.exists() else []
        found += [
            f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob(f"*/{daemon.namespace}/{name}")
        ]
    return found


def test_config_and_state_live_under_its_directory(daemon: Containerd) -> None:
    assert daemon.daemon_pids()
    assert daemon.address.is_socket()
    assert (daemon.directory / "root").is_dir()
    assert (daemon.directory / "state").is_dir()
    assert "restrict_oom_score_adj = true" in daemon.config_path.read_text()
    assert daemon.snapshotter == "overlayfs"  # ext4 here: overlay mounts work


def test_import_brings_both_platforms(daemon: Containerd, pause: BuiltImage) -> None:
    assert daemon.import_image(pause.path) == [pause.ref]
    assert daemon.image_config(pause.ref, "linux/amd64")["architecture"] == "amd64"
    assert daemon.image_config(pause.ref, "linux/arm64")["architecture"] == "arm64"


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
def test_a_container_runs_and_stops_on_sigterm(
    daemon: Containerd, pause: BuiltImage, platform: str
) -> None:
    from edgemodel_sandbox.image.binfmt import qemu_aarch64

    daemon.import_image(pause.path)
    with qemu_aarch64():
        daemon.run("p1", pause.ref, platform=platform)
        assert daemon.status("p1") == "RUNNING"
        assert shim_socket(daemon.address, daemon.namespace, "p1").exists()
        assert daemon.mounts() == [str(daemon.directory / "bundles" / "p1" / "rootfs")]
        daemon.kill("p1", "SIGTERM")
        assert daemon.wait("p1", timeout=30), "SIGTERM did not stop the container"
        daemon.delete("p1")
    assert leftovers(daemon, ["p1"]) == []


def test_stop_leaves_nothing_behind(daemon: Containerd, pause: BuiltImage) -> None:
    daemon.import_image(pause.path)
    daemon.run("a", pause.ref)
    daemon.run("b", pause.ref)
    assert len(daemon.shim_pids()) == 2
    daemon.stop()
    assert daemon.daemon_pids() == []
    assert leftovers(daemon, ["a", "b"]) == []
    assert not (daemon.directory / "root").exists()


def test_stop_cleans_up_after_a_process_that_died(daemon: Containerd, pause: BuiltImage) -> None:
    daemon.import_image(pause.path)
    daemon.run("orphan", pause.ref)
    daemon.process = None  # as if the process that started it had died
    later = Containerd(daemon.directory)
    later.stop()
    assert later.daemon_pids() == []
    assert leftovers(later, ["orphan"]) == []


def test_start_replaces_a_daemon_left_running(daemon: Containerd, pause: BuiltImage) -> None:
    daemon.import_image(pause.path)
    daemon.run("orphan", pause.ref)
    stale = daemon.daemon_pids()
    daemon.process = None  # as if the process that started it had died
    later = Containerd(daemon.directory)
    later.start()
    try:
        assert later.process is not None
        assert later.daemon_pids() == [later.process.pid] != stale
        assert later.image_names() == []  # a fresh root: the stale daemon's state went with it
        assert leftovers(later, ["orphan"]) == []
    finally:
        later.stop()
