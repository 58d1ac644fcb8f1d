"""The runner's API client against the real API server: it authenticates with the sandbox's
kubeconfig, and a watch with the runner's label selector from a listing's version delivers the
pods it selects (and only those) with resourceVersions to watch on from.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.runner.kube import SyncKube
from edgemodel_sandbox.runner.main import SELECTOR, selector
from tests.conftest import Cluster
from tests.integration.runner.conftest import apply

pytestmark = [pytest.mark.sandbox]


def unschedulable_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod no node takes (so no runner or kubelet acts on it)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": {"edgemodel.dev/test-nowhere": "true"},
            "containers": [{"name": "c", "image": "ghcr.io/edgemodel/runtime:0.1.0"}],
        },
    }


def test_a_selected_watch_from_a_listing_sees_only_the_runners_pods(
    cluster: Cluster, namespace: str
) -> None:
    kube = SyncKube.from_kubeconfig(cluster.kubeconfig)
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    try:
        listing = kube.request("GET", "/api/v1/pods", query={"labelSelector": selector()})
        version = str(listing["metadata"]["resourceVersion"])

        def watch() -> None:
            try:
                for event in kube.watch("v1", "Pod", version, labels=SELECTOR):
                    if event["object"]["metadata"]["namespace"] == namespace:
                        events.put(event)
            except KubeError:
                pass  # closed at the end of the test

        threading.Thread(target=watch, daemon=True).start()
        # Created in this order, so an event for the unselected pod would come first.
        apply(cluster, namespace, unschedulable_pod("other", {"app": "other"}))
        apply(cluster, namespace, unschedulable_pod("ours", dict(SELECTOR)))
        first = events.get(timeout=60)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "ours")
        assert int(first["object"]["metadata"]["resourceVersion"]) > int(version)
        assert kube.get(f"/api/v1/namespaces/{namespace}/pods/other") is not None
        assert kube.get(f"/api/v1/namespaces/{namespace}/pods/absent") is None
    finally:
        kube.close()
