"""Owns a pod's volumes on this machine: which folder each is, and what is written into it.

`plan.volume_sources` says where each volume lives (pure); `PodVolumes.place` makes those
folders: emptyDir and other private volumes under the pod's folder, hostPath under the
node's folder (the parent only, for a file), ConfigMap, Secret and projected volumes with
their files written, and a PersistentVolumeClaim at its bound volume's hostPath or local
path — a claim not bound yet is reported as pending, and the supervisor tries again.
`remove` deletes the pod's private volumes once the pod is gone (docs/architecture.md,
"The pod runner").
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgemodel_sandbox.runner import plan


class ObjectGetter(Protocol):
    """The reads of claims and volumes (`kube.SyncKube` is one)."""

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None: ...


@dataclass
class Placement:
    """Where each volume is (by name), and the claims that are not bound yet."""

    dirs: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)


def materialize(source: plan.VolumeSource, path: str) -> None:
    """Make the volume's folder (a file volume's parent) and write its files."""
    target = Path(path)
    if source.is_file:
        target.parent.mkdir(parents=True, exist_ok=True)
        return
    target.mkdir(parents=True, exist_ok=True)
    for relative, content in source.files.items():
        file = target / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)


def volume_path(volume: Mapping[str, Any]) -> str | None:
    """The folder of a PersistentVolume this machine can use (hostPath or local)."""
    spec = volume.get("spec") or {}
    path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
    return str(path) if path else None


class PodVolumes:
    """One pod's volume folders: under its own folder, its node's, or its claims' volumes."""

    def __init__(self, api: ObjectGetter, namespace: str, pod_dir: Path, nodes_dir: Path) -> None:
        self._api = api
        self._namespace = namespace
        self._pod_dir = pod_dir
        self._nodes_dir = nodes_dir

    def claim_path(self, claim: str) -> str | None:
        """The folder of the volume bound to `claim`; None while it is not bound."""
        found = self._api.get(
            f"/api/v1/namespaces/{self._namespace}/persistentvolumeclaims/{claim}"
        )
        if not found or (found.get("status") or {}).get("phase") != "Bound":
            return None
        volume_name = (found.get("spec") or {}).get("volumeName")
        volume = self._api.get(f"/api/v1/persistentvolumes/{volume_name}")
        return None if volume is None else volume_path(volume)

    def place(
        self, pod: Mapping[str, Any], objects: Mapping[tuple[str, str], Mapping[str, str]]
    ) -> Placement:
        """Make every volume whose place is known; name the claims still pending."""
        node = str((pod.get("spec") or {}).get("nodeName", ""))
        sources = plan.volume_sources(pod, str(self._pod_dir), str(self._nodes_dir / node), objects)
        placement = Placement()
        for source in sources:
            path = self.claim_path(source.claim) if source.claim else source.host_path
            if path is None:
                placement.pending.append(source.claim)
                continue
            placement.dirs[source.name] = path
            materialize(source, path)
        return placement

    def remove(self) -> None:
        """Delete the pod's private volumes (hostPath and claims' volumes stay)."""
        shutil.rmtree(self._pod_dir / "volumes", ignore_errors=True)
