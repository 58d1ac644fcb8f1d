"""Owns the shape of the simulated edge fleet: pure builders of kwok-managed Node objects.

The default fleet is six K3s-like edge nodes: two arm64 and two amd64 CPU nodes, one amd64
node with an NVIDIA GPU and one arm64 Jetson-like GPU node. `--nodes N` grows it with the
same mix. Capacities are those of real edge hardware so the real scheduler has real limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FLEET_LABEL = "edgemodel.dev/sandbox-node"


@dataclass(frozen=True)
class NodeClass:
    """One kind of edge hardware."""

    key: str
    arch: str
    gpu: bool
    cpu: str
    memory: str
    product: str


ARM64_CPU = NodeClass("arm64", "arm64", False, "4", "8Gi", "raspberry-pi-5")
AMD64_CPU = NodeClass("amd64", "amd64", False, "8", "16Gi", "intel-nuc-13")
AMD64_GPU = NodeClass("gpu-amd64", "amd64", True, "16", "64Gi", "NVIDIA-T4")
ARM64_GPU = NodeClass("gpu-arm64", "arm64", True, "12", "32Gi", "NVIDIA-Jetson-AGX-Orin")

DEFAULT_FLEET: tuple[NodeClass, ...] = (
    ARM64_CPU,
    ARM64_CPU,
    AMD64_CPU,
    AMD64_CPU,
    AMD64_GPU,
    ARM64_GPU,
)
# Beyond the default six, nodes repeat this mix: mostly CPU boxes, one GPU node in eight
# (amd64 GPU servers and arm64 Jetsons alternating).
GROWTH_MIX: tuple[NodeClass, ...] = (
    *(ARM64_CPU, AMD64_CPU) * 3,
    AMD64_GPU,
    *(ARM64_CPU, AMD64_CPU) * 3,
    ARM64_GPU,
)
SITES = 4


def fleet_classes(count: int) -> list[NodeClass]:
    """The node classes of a fleet of `count` nodes (at least the default six)."""
    count = max(count, len(DEFAULT_FLEET))
    classes = list(DEFAULT_FLEET)
    classes.extend(GROWTH_MIX[i % len(GROWTH_MIX)] for i in range(count - len(DEFAULT_FLEET)))
    return classes


def node_manifest(cls: NodeClass, index: int, ordinal: int) -> dict[str, Any]:
    """A Node object for kwok: labels, taints and status capacity of one edge box."""
    name = f"edge-{cls.key}-{index}"
    site = f"site-{ordinal % SITES}"
    labels = {
        "kubernetes.io/arch": cls.arch,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": "k3s",
        "topology.kubernetes.io/region": "edge",
        "topology.kubernetes.io/zone": site,
        "edgemodel.dev/site": site,
        "type": "kwok",
        FLEET_LABEL: "true",
    }
    capacity = {"cpu": cls.cpu, "memory": cls.memory, "pods": "110", "ephemeral-storage": "64Gi"}
    taints: list[dict[str, str]] = []
    if cls.gpu:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": cls.product,
                "nvidia.com/gpu.count": "1",
            }
        )
        capacity[GPU_RESOURCE] = "1"
        taints.append(dict(GPU_TAINT))
    else:
        labels["edgemodel.dev/hardware"] = cls.product
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "k3s.io/hostname": name},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "nodeInfo": {
                "architecture": cls.arch,
                "operatingSystem": "linux",
                "kubeletVersion": "v1.36.3+k3s1",
                "kubeProxyVersion": "v1.36.3+k3s1",
                "containerRuntimeVersion": "containerd://2.1.4-k3s1",
                "kernelVersion": "6.6.0-edge",
                "osImage": "K3s edge (kwok)",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
        },
    }


def fleet(count: int) -> list[dict[str, Any]]:
    """Node manifests for a fleet of `count` nodes, named edge-<class>-<n> per class."""
    per_class: dict[str, int] = {}
    nodes = []
    for ordinal, cls in enumerate(fleet_classes(count)):
        index = per_class.get(cls.key, 0)
        per_class[cls.key] = index + 1
        nodes.append(node_manifest(cls, index, ordinal))
    return nodes
