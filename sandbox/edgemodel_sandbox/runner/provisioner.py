"""Owns the sandbox's `local-path` storage: the default StorageClass and its provisioner.

Like K3s's local-path provisioner: a Pending claim of class `local-path` (or of no class,
once the default class is assigned) gets a hostPath PersistentVolume under
`<state>/pvs/<pv-name>`, pre-bound to the claim through claimRef so the real PV controller
binds the pair. Binding is Immediate (not WaitForFirstConsumer) and the volumes carry no node
affinity: every simulated node is this one machine, so any pod can use any volume. When a
claim goes away, its volume (reclaimPolicy Delete) and folder go too.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgemodel_operator import labels
from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.runner import PROVISIONER_NAME, STORAGE_CLASS
from edgemodel_sandbox.runner.kube import SyncKube, relisting

log = logging.getLogger("edgemodel.runner.provisioner")
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def storage_class_manifest() -> dict[str, Any]:
    """The default StorageClass, as K3s ships it (binding Immediate: see the module doc)."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {DEFAULT_CLASS: "true"},
        },
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def wants_volume(claim: Mapping[str, Any]) -> bool:
    """Whether the provisioner should make a volume for this claim now."""
    meta = claim.get("metadata") or {}
    spec = claim.get("spec") or {}
    if meta.get("deletionTimestamp") or spec.get("volumeName"):
        return False
    if (claim.get("status") or {}).get("phase", "Pending") != "Pending":
        return False
    if spec.get("selector") or spec.get("dataSource"):
        return False  # neither can be honoured by a plain folder
    return spec.get("storageClassName") in (STORAGE_CLASS, None)


def pv_name(claim: Mapping[str, Any]) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def volume_manifest(claim: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """A hostPath PV pre-bound to `claim`, sized and moded as it asks."""
    meta = claim["metadata"]
    spec = claim.get("spec") or {}
    name = pv_name(claim)
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {PROVISIONED_BY: PROVISIONER_NAME},
            "labels": {labels.PROVISIONER: STORAGE_CLASS},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "hostPath": {"path": str(root / name), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


def should_delete(volume: Mapping[str, Any]) -> bool:
    """A volume of ours whose claim is gone and whose policy says Delete."""
    meta = volume.get("metadata") or {}
    spec = volume.get("spec") or {}
    return (
        (meta.get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER_NAME
        and spec.get("persistentVolumeReclaimPolicy") == "Delete"
        and (volume.get("status") or {}).get("phase") in ("Released", "Failed")
        and not meta.get("deletionTimestamp")
    )


class Provisioner:
    """Watches claims; makes and removes volumes. Runs on its own thread."""

    def __init__(self, kube: SyncKube, root: Path, stop: threading.Event) -> None:
        self._kube = kube
        self._root = root
        self._stop = stop

    def run(self) -> None:
        """List, then watch claims from the listing's version, until stopped."""
        relisting(self._stop, "claim", self._list_and_watch)

    def _list_and_watch(self) -> None:
        listing = self._kube.request("GET", "/api/v1/persistentvolumeclaims")
        for claim in listing.get("items") or []:
            self._claim(claim)
        self._collect_released()
        version = str(listing["metadata"]["resourceVersion"])
        while not self._stop.is_set():
            for event in self._kube.watch("v1", "PersistentVolumeClaim", version):
                kind, claim = event.get("type"), event.get("object") or {}
                version = str((claim.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    self._claim(claim)
                elif kind == "DELETED":
                    self._released(pv_name(claim))
                if self._stop.is_set():
                    return

    def _claim(self, claim: dict[str, Any]) -> None:
        if not wants_volume(claim):
            return
        manifest = volume_manifest(claim, self._root)
        folder = self._root / manifest["metadata"]["name"]
        folder.mkdir(parents=True, exist_ok=True)
        # As K3s's local-path provisioner: mode 0777, so a pod of any user (the chart's run as
        # 10001; fsGroup does not apply to hostPath) can write its volume on a real kubelet.
        folder.chmod(0o777)
        if self._kube.create("/api/v1/persistentvolumes", manifest) is not None:
            meta = claim["metadata"]
            log.info("provisioned %s for %s/%s", pv_name(claim), meta["namespace"], meta["name"])

    def _released(self, name: str) -> None:
        # The claim is gone, so the PV controller will mark the volume Released; removing it
        # right away (policy Delete) is what the provisioner would do a moment later.
        volume = self._kube.get(f"/api/v1/persistentvolumes/{name}")
        if volume is None:
            return
        annotations = (volume.get("metadata") or {}).get("annotations") or {}
        if annotations.get(PROVISIONED_BY) != PROVISIONER_NAME:
            return
        if (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") != "Delete":
            return
        self._delete(volume)

    def _collect_released(self) -> None:
        volumes = self._kube.request("GET", "/api/v1/persistentvolumes")
        for volume in volumes.get("items") or []:
            if should_delete(volume):
                self._delete(volume)

    def _delete(self, volume: Mapping[str, Any]) -> None:
        name = str(volume["metadata"]["name"])
        try:
            self._kube.delete(f"/api/v1/persistentvolumes/{name}")
        except KubeError as exc:
            log.warning("deleting volume %s failed: %s", name, exc)
            return
        path = ((volume.get("spec") or {}).get("hostPath") or {}).get("path")
        if path and Path(path).resolve().is_relative_to(self._root.resolve()):
            shutil.rmtree(path, ignore_errors=True)
        log.info("deleted released volume %s", name)
