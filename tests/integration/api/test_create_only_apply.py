"""A create-only server-side apply, against the sandbox's real kube-apiserver.

A model's first pass writes objects its watches have never seen. Rather than a GET before
each write to check ownership, the operator sends a server-side apply carrying a
resourceVersion no object can have (`kube.create_only`): the API server creates the object
when none of that name exists, and refuses the write (409, nothing changed) when one does.
These tests hold the API server to that, and the client to never taking over an object the
watches missed: the attack of tests/integration/api/test_security_ownership.py, with the
cache saying the name is free. See docs/architecture.md, "Watch-fed caches".
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import yaml

from edgemodel_operator import builders
from edgemodel_operator.api import parse_spec
from edgemodel_operator.kube import Credentials, Kube, OwnershipConflict, counting
from tests.conftest import Cluster

pytestmark = pytest.mark.sandbox
T = TypeVar("T")


def _run(cluster: Cluster, scenario: Callable[[Kube], Awaitable[T]]) -> T:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]
    credentials = Credentials(
        server=server["server"],
        token=config["users"][0]["user"]["token"],
        ca_data=base64.b64decode(server["certificate-authority-data"]),
    )

    async def main() -> T:
        kube = Kube(credentials)
        try:
            return await scenario(kube)
        finally:
            await kube.close()

    return asyncio.run(main())


@pytest.fixture
def owner(cluster: Cluster, namespace: str) -> str:
    """The uid of an object that exists, to own the Services: with an owner uid that names
    nothing, the garbage collector deletes the Service as soon as it can resolve the owner's
    kind (once any test installed the CRD), racing the test's reads."""
    cluster.kubectl("create", "configmap", "digits-owner", "-n", namespace)
    found = cluster.kubectl("get", "configmap", "digits-owner", "-n", namespace, "-o", "json")
    uid: str = json.loads(found.stdout)["metadata"]["uid"]
    return uid


def _service(namespace: str, uid: str) -> dict[str, Any]:
    spec = parse_spec(
        {
            "model": {"uri": "https://models.example.com/digits.onnx", "sha256": "3" * 64},
            "targets": [{"name": "arm", "arch": "arm64"}],
        }
    )
    service = builders.target_service("digits", namespace, uid, spec.targets[0])
    reference = service["metadata"]["ownerReferences"][0]
    reference.update(apiVersion="v1", kind="ConfigMap", name="digits-owner")
    return service


def _get(cluster: Cluster, namespace: str) -> dict[str, Any]:
    found = cluster.kubectl("get", "service", "digits-arm", "-n", namespace, "-o", "json")
    result: dict[str, Any] = json.loads(found.stdout)
    return result


def test_a_new_object_is_created_by_one_request(
    cluster: Cluster, namespace: str, owner: str
) -> None:
    async def scenario(kube: Kube) -> int:
        with counting() as calls:
            await kube.apply(_service(namespace, owner), absent=True)
        return calls[0]

    assert _run(cluster, scenario) == 1
    created = _get(cluster, namespace)
    assert created["metadata"]["ownerReferences"][0]["uid"] == owner
    # The precondition's impossible version is not kept: the object has a real one.
    assert int(created["metadata"]["resourceVersion"]) < 2**63


def test_an_unowned_object_the_cache_missed_is_not_taken_over(
    cluster: Cluster, namespace: str, owner: str
) -> None:
    cluster.kubectl(
        "create", "service", "clusterip", "digits-arm", "--tcp=5432:5432", "-n", namespace
    )
    before = _get(cluster, namespace)

    async def scenario(kube: Kube) -> OwnershipConflict:
        with pytest.raises(OwnershipConflict) as refused:
            await kube.apply(_service(namespace, owner), absent=True)  # "the name is free"
        return refused.value

    conflict = _run(cluster, scenario)
    assert "kubectl" in conflict.owner
    after = _get(cluster, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"]
    assert [p["port"] for p in after["spec"]["ports"]] == [5432]


def test_our_own_object_the_cache_missed_is_still_updated(
    cluster: Cluster, namespace: str, owner: str
) -> None:
    async def scenario(kube: Kube) -> int:
        await kube.apply(_service(namespace, owner))
        changed = _service(namespace, owner)
        changed["metadata"]["labels"]["extra"] = "yes"
        with counting() as calls:
            await kube.apply(changed, absent=True)
        return calls[0]

    assert _run(cluster, scenario) == 3  # refused create-only write, GET, apply
    assert _get(cluster, namespace)["metadata"]["labels"]["extra"] == "yes"
