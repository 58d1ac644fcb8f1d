"""Attacks on objects the operator writes, against the sandbox's real kube-apiserver.

Takeover: an EdgeModel named so that its Service name (`<model>-<target>`) equals an existing
Service it does not own. Server-side apply with force would rewrite that Service (selector,
ports) and add an ownerReference, so deleting the EdgeModel would garbage-collect it. The
operator's client refuses instead (OwnershipConflict naming the kind, name and owner), and the
Service is left as it was.

Lost status: two operator replicas overlap during a rolling upgrade; one computed a status
from an older read. With the resourceVersion precondition its write is refused (409) rather
than overwriting the newer status. See docs/security.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import yaml

from edgemodel_operator import builders
from edgemodel_operator.api import parse_spec
from edgemodel_operator.kube import Credentials, Kube, KubeError, OwnershipConflict
from tests.conftest import Cluster

pytestmark = pytest.mark.sandbox
EM_API = "edgemodel.dev/v1alpha1"


def _kube(cluster: Cluster) -> Kube:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]
    return Kube(
        Credentials(
            server=server["server"],
            token=config["users"][0]["user"]["token"],
            ca_data=base64.b64decode(server["certificate-authority-data"]),
        )
    )


def test_an_unowned_service_of_the_same_name_is_not_taken_over(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl(
        "create", "service", "clusterip", "digits-arm", "--tcp=5432:5432", "-n", namespace
    )
    spec = parse_spec(
        {
            "model": {"uri": "https://models.example.com/digits.onnx", "sha256": "3" * 64},
            "targets": [{"name": "arm", "arch": "arm64"}],
        }
    )
    manifest = builders.target_service("digits", namespace, "uid-of-digits", spec.targets[0])
    assert manifest["metadata"]["name"] == "digits-arm"

    async def attempt() -> OwnershipConflict:
        kube = _kube(cluster)
        try:
            with pytest.raises(OwnershipConflict) as refused:
                await kube.apply(manifest)
            return refused.value
        finally:
            await kube.close()

    conflict = asyncio.run(attempt())
    assert "Service" in str(conflict) and f"{namespace}/digits-arm" in str(conflict)
    assert "kubectl" in conflict.owner  # the manager that created it
    after = json.loads(
        cluster.kubectl("get", "service", "digits-arm", "-n", namespace, "-o", "json").stdout
    )
    assert "ownerReferences" not in after["metadata"]
    assert [p["port"] for p in after["spec"]["ports"]] == [5432]
    assert after["spec"]["selector"] == {"app": "digits-arm"}


def test_a_status_computed_from_an_older_read_is_refused(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    manifest = {
        "apiVersion": EM_API,
        "kind": "EdgeModel",
        "metadata": {"name": "digits", "namespace": namespace},
        "spec": {
            "model": {"uri": "https://models.example.com/digits.onnx", "sha256": "3" * 64},
            "targets": [{"name": "arm", "arch": "arm64"}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    async def race() -> tuple[int, dict[str, Any]]:
        kube = _kube(cluster)
        try:
            read = await kube.get(EM_API, "EdgeModel", namespace, "digits")
            assert read is not None
            stale = read["metadata"]["resourceVersion"]
            # The new replica writes first, from the same read...
            await kube.patch_status(
                EM_API, "EdgeModel", namespace, "digits", {"phase": "Ready"}, stale
            )
            # ...and the old one, from that now older read, must not overwrite it.
            with pytest.raises(KubeError) as refused:
                await kube.patch_status(
                    EM_API, "EdgeModel", namespace, "digits", {"phase": "Compressing"}, stale
                )
            now = await kube.get(EM_API, "EdgeModel", namespace, "digits")
            assert now is not None
            return refused.value.status, now
        finally:
            await kube.close()

    status, now = asyncio.run(race())
    assert status == 409
    assert now["status"]["phase"] == "Ready"
