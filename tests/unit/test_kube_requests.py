"""The operator's one API client counts what it sends and streams watches.

Against a real HTTP server on 127.0.0.1: `kube.counting()` counts every request sent inside
the block, retries included and requests of tasks started inside it, but nothing outside it
(that is the "API requests per reconcile" the worker logs and bench/operator reports).
`apply` skips its ownership GET only when the watch-fed copy it is handed is already this
EdgeModel's; a foreign or unknown copy is read afresh; an object the watches do not know
(`absent`) is written create-only, and read afresh only when the server says it exists.
`Kube.watch` yields a collection's watch events in order and turns an ERROR event (410: the
resourceVersion is too old) into a KubeError for the caller to re-list.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from edgemodel_operator.kube import (
    IMPOSSIBLE_RESOURCE_VERSION,
    Credentials,
    Kube,
    KubeError,
    OwnershipConflict,
    counting,
    create_only,
)
from tests.local_http import LocalHTTPServer


class ApiServer(LocalHTTPServer):
    """Answers GETs with an empty list; `fail_next` answers 503 first; watches stream
    `events` as JSON lines."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0
        self.paths: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.objects: dict[str, dict[str, Any]] = {}  # path -> what a GET answers
        self.bodies: list[dict[str, Any]] = []  # what each PATCH sent

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path_qs)
        if request.query.get("watch") == "1":
            response = web.StreamResponse()
            await response.prepare(request)
            for event in self.events:
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
            return response
        if request.method == "PATCH":
            sent = json.loads(await request.text())
            self.bodies.append(sent)
            version = sent.get("metadata", {}).get("resourceVersion")
            if version and request.path in self.objects:  # a precondition no object meets
                return web.json_response({"message": "the object has been modified"}, status=409)
            return web.json_response(sent)
        if request.path in self.objects:
            return web.json_response(self.objects[request.path])
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"message": "busy"}, status=503)
        return web.json_response({"items": [], "metadata": {"resourceVersion": "7"}})


def run(scenario: Any) -> Any:
    async def main() -> Any:
        async with ApiServer() as server:
            kube = Kube(Credentials(server=server.url), attempts=3)
            try:
                return await scenario(server, kube)
            finally:
                await kube.close()

    return asyncio.run(main())


def test_counting_counts_the_requests_of_the_block_and_its_tasks_only() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> tuple[int, int, int]:
        await kube.list("v1", "Pod", "ns")  # before: not counted
        with counting() as calls:
            await kube.list("v1", "Pod", "ns")
            await asyncio.gather(kube.list("v1", "Service", "ns"), kube.get("v1", "Pod", "ns", "p"))
        await kube.list("v1", "Pod", "ns")  # after: not counted
        return calls[0], kube.requests, len(server.paths)

    counted, total, served = run(scenario)
    assert counted == 3
    assert total == served == 5


def test_a_retried_request_counts_each_attempt() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> int:
        server.fail_next = 2
        with counting() as calls:
            await kube.list("v1", "Pod", "ns")
        return calls[0]

    assert run(scenario) == 3


def test_watch_yields_the_events_in_order_from_the_given_version() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> tuple[list[str], str]:
        server.events = [
            {"type": "ADDED", "object": {"metadata": {"name": "a"}}},
            {"type": "MODIFIED", "object": {"metadata": {"name": "a"}}},
            {"type": "DELETED", "object": {"metadata": {"name": "a"}}},
        ]
        seen = [e["type"] async for e in kube.watch("apps/v1", "Deployment", "ns", "7")]
        return seen, server.paths[-1]

    seen, path = run(scenario)
    assert seen == ["ADDED", "MODIFIED", "DELETED"]
    assert path.startswith("/apis/apps/v1/namespaces/ns/deployments?")
    assert "watch=1" in path and "resourceVersion=7" in path


def test_an_expired_watch_raises_410_for_the_caller_to_relist() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> list[str]:
        server.events = [
            {"type": "ADDED", "object": {"metadata": {"name": "a"}}},
            {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}},
        ]
        seen: list[str] = []
        with pytest.raises(KubeError) as raised:
            async for event in kube.watch("v1", "Pod", "ns", "1"):
                seen.append(event["type"])
        assert raised.value.status == 410
        return seen

    assert run(scenario) == ["ADDED"]


SERVICE_PATH = "/api/v1/namespaces/ns/services/digits-arm"


def service(owner_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "digits-arm",
            "namespace": "ns",
            "ownerReferences": [
                {"kind": "EdgeModel", "name": "digits", "uid": owner_uid, "controller": True}
            ],
        },
    }


def test_apply_of_an_object_known_to_be_ours_skips_the_ownership_read() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> list[str]:
        server.objects[SERVICE_PATH] = service("em-1")
        await kube.apply(service("em-1"), known=service("em-1"))
        return [p.split("?")[0] for p in server.paths]

    assert run(scenario) == [SERVICE_PATH]  # the PATCH alone


def test_apply_reads_afresh_when_the_known_copy_is_not_ours_or_absent() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> tuple[int, str]:
        server.objects[SERVICE_PATH] = service("someone-else")
        with pytest.raises(OwnershipConflict) as raised:
            await kube.apply(service("em-1"), known=service("someone-else"))
        with pytest.raises(OwnershipConflict):
            await kube.apply(service("em-1"))  # nothing known: the GET decides
        return len(server.paths), raised.value.owner

    requests, owner = run(scenario)
    assert requests == 2  # two GETs, no write
    assert owner == "EdgeModel digits"


def test_an_object_the_watches_do_not_know_is_created_by_one_conditional_write() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> tuple[list[str], list[dict[str, Any]]]:
        await kube.apply(service("em-1"), absent=True)
        return [p.split("?")[0] for p in server.paths], server.bodies

    requests, writes = run(scenario)
    assert requests == [SERVICE_PATH] and len(writes) == 1  # the write alone, no ownership GET
    assert writes[0]["metadata"]["resourceVersion"] == IMPOSSIBLE_RESOURCE_VERSION


def test_an_unowned_object_the_watches_missed_is_still_not_taken_over() -> None:
    # The cache said nothing of that name exists; it does, and is not ours: the conditional
    # write is refused, the GET names the owner, and no unconditional write follows.
    async def scenario(server: ApiServer, kube: Kube) -> tuple[int, str, list[dict[str, Any]]]:
        server.objects[SERVICE_PATH] = service("someone-else")
        with pytest.raises(OwnershipConflict) as raised:
            await kube.apply(service("em-1"), absent=True)
        return len(server.paths), raised.value.owner, server.bodies

    requests, owner, writes = run(scenario)
    assert requests == 2  # the refused conditional write, the GET
    assert owner == "EdgeModel digits"
    assert [w["metadata"].get("resourceVersion") for w in writes] == [IMPOSSIBLE_RESOURCE_VERSION]


def test_our_object_the_watches_missed_is_applied_after_the_refused_create() -> None:
    async def scenario(server: ApiServer, kube: Kube) -> list[str | None]:
        server.objects[SERVICE_PATH] = service("em-1")
        await kube.apply(service("em-1"), absent=True)
        return [w["metadata"].get("resourceVersion") for w in server.bodies]

    # refused create-only write, GET (ours), then the ordinary apply without a precondition
    assert run(scenario) == [IMPOSSIBLE_RESOURCE_VERSION, None]


def test_create_only_adds_the_precondition_and_leaves_the_manifest_alone() -> None:
    manifest = service("em-1")
    conditional = create_only(manifest)
    assert conditional["metadata"]["resourceVersion"] == str(2**64 - 1)
    assert "resourceVersion" not in manifest["metadata"]
    assert conditional["metadata"]["ownerReferences"] == manifest["metadata"]["ownerReferences"]
