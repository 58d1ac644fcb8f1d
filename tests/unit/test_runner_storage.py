"""The pod runner's local-path provisioner (which claims get a volume, the volume's shape,
which volumes are reclaimed) and its pod network range selection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.runner import network, provisioner


def claim(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "store", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "local-path",
            **spec,
        },
        "status": {"phase": "Pending"},
    }


def test_storage_class_is_the_default_local_path() -> None:
    manifest = provisioner.storage_class_manifest()
    assert manifest["metadata"]["name"] == "local-path"
    assert manifest["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"
    }
    assert manifest["provisioner"] == "rancher.io/local-path"
    assert manifest["reclaimPolicy"] == "Delete"


@pytest.mark.parametrize(
    ("changes", "wanted"),
    [
        ({}, True),
        ({"storageClassName": None}, True),
        ({"storageClassName": "fast-ssd"}, False),
        ({"volumeName": "pv-1"}, False),
        ({"selector": {"matchLabels": {"a": "b"}}}, False),
        ({"dataSource": {"kind": "VolumeSnapshot", "name": "s"}}, False),
    ],
)
def test_which_claims_get_a_volume(changes: dict[str, Any], wanted: bool) -> None:
    assert provisioner.wants_volume(claim(**changes)) is wanted


def test_bound_or_deleted_claims_get_none() -> None:
    bound = claim()
    bound["status"]["phase"] = "Bound"
    assert not provisioner.wants_volume(bound)
    deleted = claim()
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not provisioner.wants_volume(deleted)


def test_volume_is_pre_bound_and_sized_as_asked() -> None:
    volume = provisioner.volume_manifest(claim(), Path("/state/pvs"))
    assert volume["metadata"]["name"] == "pvc-u-1"
    spec = volume["spec"]
    assert spec["capacity"] == {"storage": "5Gi"}
    assert spec["accessModes"] == ["ReadWriteMany"]
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"
    assert spec["storageClassName"] == "local-path"
    assert spec["hostPath"] == {"path": "/state/pvs/pvc-u-1", "type": "DirectoryOrCreate"}
    assert spec["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "ns",
        "name": "store",
        "uid": "u-1",
    }


def test_volume_defaults() -> None:
    bare = claim()
    del bare["spec"]["accessModes"]
    del bare["spec"]["resources"]
    spec = provisioner.volume_manifest(bare, Path("/p"))["spec"]
    assert spec["accessModes"] == ["ReadWriteOnce"] and spec["capacity"] == {"storage": "1Gi"}


@pytest.mark.parametrize(
    ("phase", "policy", "ours", "delete"),
    [
        ("Released", "Delete", True, True),
        ("Failed", "Delete", True, True),
        ("Bound", "Delete", True, False),
        ("Released", "Retain", True, False),
        ("Released", "Delete", False, False),
    ],
)
def test_which_volumes_are_reclaimed(phase: str, policy: str, ours: bool, delete: bool) -> None:
    annotations = {provisioner.PROVISIONED_BY: "rancher.io/local-path"} if ours else {}
    volume = {
        "metadata": {"name": "pvc-1", "annotations": annotations},
        "spec": {"persistentVolumeReclaimPolicy": policy},
        "status": {"phase": phase},
    }
    assert provisioner.should_delete(volume) is delete


ROUTES = """\
default via 192.0.2.1 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
local 10.200.0.0/16 dev lo table local scope host
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1
10.201.4.0/24 via 192.0.2.9 dev eth0
"""


def test_routed_prefixes_reads_ip_route_output() -> None:
    assert network.routed_prefixes(ROUTES) == [
        "192.0.2.0/24",
        "10.200.0.0/16",
        "127.0.0.0/8",
        "127.255.255.255",
        "10.201.4.0/24",
    ]


def test_free_candidates_skip_every_overlapping_range() -> None:
    free = network.free_candidates(network.CANDIDATES, network.routed_prefixes(ROUTES))
    assert free[0] == "10.202.0.0/16"
    assert "10.200.0.0/16" not in free and "10.201.0.0/16" not in free
    assert network.free_candidates(["10.9.0.0/16"], ["junk", "0.0.0.0/0"]) == ["10.9.0.0/16"]


def test_loopback_range_needs_no_route(tmp_path: Path) -> None:
    claimed = network.claim(tmp_path, "127.1.0.0/16")
    assert claimed == network.PodNetwork("127.1.0.0/16")
    assert (tmp_path / "pod-cidr").read_text().strip() == "127.1.0.0/16"
    # A restarted runner keeps the range it had.
    assert network.claim(tmp_path).cidr == "127.1.0.0/16"
    network.release(claimed)  # nothing to remove


def test_pod_network_plumbing_keeps_pods_in_their_own_namespace() -> None:
    plumbing = network.Plumbing("10.201.0.0/16", "abc123")
    assert plumbing.pods == "10.201.0.0/17"
    assert plumbing.host_ip == "10.201.128.1" and plumbing.pod_side_ip == "10.201.128.2"
    assert len(plumbing.host_if) <= 15 and len(plumbing.pod_if) <= 15  # Linux interface names
    commands = [" ".join(c) for c in plumbing.commands()]
    assert commands[0] == "ip netns add em-abc123"
    # On the host only a route to the pod range through the veth; every pod address is local
    # inside the namespace alone.
    assert "ip route add 10.201.0.0/17 dev emhabc123" in commands
    assert "ip route add 10.201.128.2/32 dev emhabc123" in commands  # pods -> host replies
    assert "ip netns exec em-abc123 ip route add local 10.201.0.0/17 dev lo table local" in commands
    # ... and the `kubernetes` Service's address, served there by the runner's API proxy.
    assert commands[-1] == "ip netns exec em-abc123 ip addr add 10.96.0.1/32 dev lo"
