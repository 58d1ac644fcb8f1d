"""Attack: an EdgeModel whose `file://` source names a node directory nobody allowed.

One real reconcile pass (handlers.reconcile) against the sandbox's kube-apiserver: the
EdgeModel is refused with Ready=False, reason HostPathNotAllowed, naming the field, a Warning
Event says the same, and no Job (so no hostPath volume) is created. See docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml

from edgemodel_operator.handlers import Runtime, reconcile
from edgemodel_operator.settings import Settings
from tests.conftest import Cluster
from tests.integration.api.test_security_ownership import _kube

pytestmark = pytest.mark.sandbox


def test_file_source_outside_the_allowlist_is_refused_naming_the_field(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    manifest = {
        "apiVersion": "edgemodel.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": "sneaky", "namespace": namespace},
        "spec": {
            "model": {"uri": "file:///etc/kubernetes/admin.conf", "sha256": "3" * 64},
            "targets": [{"name": "arm", "arch": "arm64"}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    async def one_pass() -> float | None:
        runtime = Runtime(
            settings=Settings(host_path_allowlist=("/srv/models",), manage_artifact_store=False)
        )
        runtime.kube = _kube(cluster)
        try:
            return await reconcile(runtime, (namespace, "sneaky"))
        finally:
            await runtime.kube.close()

    assert asyncio.run(one_pass()) is None  # nothing to retry until the spec changes
    stored = json.loads(
        cluster.kubectl("get", "em", "sneaky", "-n", namespace, "-o", "json").stdout
    )
    ready = next(c for c in stored["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "HostPathNotAllowed"
    assert "spec.model.uri" in ready["message"] and "/srv/models" in ready["message"]
    assert stored["status"]["phase"] == "Failed"
    jobs = json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)
    assert jobs["items"] == []
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    assert "HostPathNotAllowed" in {e["reason"] for e in events["items"]}
