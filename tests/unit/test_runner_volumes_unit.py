"""A pod's volumes on this machine, placed by the pod runner: private folders, the node's
hostPath folders, ConfigMap files, and claims at their bound volume's path (pending until
bound). Claims and volumes come from a fake API; the folders are real.

The same volumes in a running sandbox are in tests/integration/runner/test_runner_volumes.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgemodel_sandbox.runner import plan
from edgemodel_sandbox.runner.volumes import PodVolumes, materialize, volume_path


class FakeApi:
    """Objects by API path; None for anything else (a 404)."""

    def __init__(self, objects: dict[str, dict[str, Any]] | None = None) -> None:
        self.objects = objects or {}

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        return self.objects.get(path)


def pod(*volumes: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"nodeName": "node-1", "containers": [], "volumes": list(volumes)},
    }


def bound_claim(name: str, volume: str) -> dict[str, Any]:
    return {"spec": {"volumeName": volume}, "status": {"phase": "Bound"}}


def volumes(tmp_path: Path, api: FakeApi | None = None) -> PodVolumes:
    return PodVolumes(api or FakeApi(), "ns", tmp_path / "pod", tmp_path / "nodes")


def test_private_volumes_live_under_the_pod(tmp_path: Path) -> None:
    placement = volumes(tmp_path).place(pod({"name": "scratch", "emptyDir": {}}), {})
    assert placement.pending == []
    assert placement.dirs == {"scratch": str(tmp_path / "pod" / "volumes" / "scratch")}
    assert (tmp_path / "pod" / "volumes" / "scratch").is_dir()


def test_config_map_volumes_hold_their_files(tmp_path: Path) -> None:
    objects = {("configmaps", "settings"): {"a.yaml": "x: 1", "b.txt": "b"}}
    volume = {
        "name": "cfg",
        "configMap": {"name": "settings", "items": [{"key": "a.yaml", "path": "sub/a.yaml"}]},
    }
    placement = volumes(tmp_path).place(pod(volume), objects)
    folder = Path(placement.dirs["cfg"])
    assert (folder / "sub" / "a.yaml").read_text() == "x: 1"
    assert not (folder / "b.txt").exists()


def test_host_paths_live_under_the_node(tmp_path: Path) -> None:
    placement = volumes(tmp_path).place(
        pod(
            {"name": "dir", "hostPath": {"path": "/var/data"}},
            {"name": "sock", "hostPath": {"path": "/run/app.sock", "type": "Socket"}},
        ),
        {},
    )
    node = tmp_path / "nodes" / "node-1"
    assert placement.dirs == {"dir": str(node / "var/data"), "sock": str(node / "run/app.sock")}
    assert (node / "var" / "data").is_dir()
    assert (node / "run").is_dir() and not (node / "run" / "app.sock").exists()


def test_a_claim_waits_until_bound_then_is_its_volume(tmp_path: Path) -> None:
    api = FakeApi()
    unit = volumes(tmp_path, api)
    spec = pod({"name": "store", "persistentVolumeClaim": {"claimName": "models"}})
    assert unit.place(spec, {}).pending == ["models"]
    claim_path = "/api/v1/namespaces/ns/persistentvolumeclaims/models"
    api.objects[claim_path] = {"spec": {}, "status": {"phase": "Pending"}}
    assert unit.place(spec, {}).pending == ["models"]
    api.objects[claim_path] = bound_claim("models", "pv-1")
    assert unit.place(spec, {}).pending == ["models"]  # the volume itself is not there yet
    api.objects["/api/v1/persistentvolumes/pv-1"] = {
        "spec": {"hostPath": {"path": str(tmp_path / "pvs" / "pv-1")}}
    }
    placement = unit.place(spec, {})
    assert placement.pending == [] and placement.dirs == {"store": str(tmp_path / "pvs" / "pv-1")}
    assert (tmp_path / "pvs" / "pv-1").is_dir()


def test_local_volumes_count_as_paths_too() -> None:
    assert volume_path({"spec": {"local": {"path": "/mnt/disk"}}}) == "/mnt/disk"
    assert volume_path({"spec": {"nfs": {"path": "/export"}}}) is None


def test_remove_deletes_only_the_pods_own_volumes(tmp_path: Path) -> None:
    unit = volumes(tmp_path)
    placement = unit.place(
        pod({"name": "scratch", "emptyDir": {}}, {"name": "dir", "hostPath": {"path": "/keep"}}),
        {},
    )
    unit.remove()
    assert not Path(placement.dirs["scratch"]).exists()
    assert Path(placement.dirs["dir"]).is_dir()


def test_materialize_rewrites_files(tmp_path: Path) -> None:
    source = plan.VolumeSource("v", host_path=str(tmp_path / "v"), files={"token": b"new"})
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "token").write_bytes(b"old")
    materialize(source, source.host_path)
    assert (tmp_path / "v" / "token").read_bytes() == b"new"
