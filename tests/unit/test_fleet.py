"""The simulated edge fleet: which nodes exist, and what each one tells the scheduler."""

from __future__ import annotations

from collections import Counter

import pytest

from edgemodel_sandbox import fleet


def _kind(node: dict) -> tuple[str, bool]:  # type: ignore[type-arg]
    return node["metadata"]["labels"]["kubernetes.io/arch"], "nvidia.com/gpu" in node["status"][
        "capacity"
    ]


def test_default_fleet_has_every_kind_of_edge_node() -> None:
    nodes = fleet.fleet(6)
    assert Counter(_kind(n) for n in nodes) == {
        ("arm64", False): 2,
        ("amd64", False): 2,
        ("amd64", True): 1,
        ("arm64", True): 1,
    }


@pytest.mark.parametrize("count", [0, 6, 7, 50, 1000])
def test_fleet_size_and_unique_names(count: int) -> None:
    nodes = fleet.fleet(count)
    assert len(nodes) == max(count, 6)
    assert len({n["metadata"]["name"] for n in nodes}) == len(nodes)


def test_growth_keeps_a_mostly_cpu_mix_with_both_gpu_kinds() -> None:
    kinds = Counter(_kind(n) for n in fleet.fleet(1000))
    gpus = kinds[("amd64", True)] + kinds[("arm64", True)]
    assert 0.10 < gpus / 1000 < 0.15
    assert kinds[("arm64", True)] > 50 and kinds[("amd64", True)] > 50


@pytest.mark.parametrize("node", fleet.fleet(8), ids=lambda n: n["metadata"]["name"])
def test_node_looks_like_a_k3s_edge_box(node: dict) -> None:  # type: ignore[type-arg]
    labels = node["metadata"]["labels"]
    arch, gpu = _kind(node)
    assert labels["node.kubernetes.io/instance-type"] == "k3s"
    assert labels["kubernetes.io/hostname"] == node["metadata"]["name"]
    assert labels["topology.kubernetes.io/zone"].startswith("site-")
    assert node["metadata"]["annotations"][fleet.FAKE_NODE_ANNOTATION] == "fake"
    assert node["status"]["nodeInfo"]["architecture"] == arch
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    taints = node["spec"].get("taints", [])
    if gpu:
        assert taints == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
        assert labels["nvidia.com/gpu.present"] == "true"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    else:
        assert taints == []
        assert "nvidia.com/gpu.present" not in labels
