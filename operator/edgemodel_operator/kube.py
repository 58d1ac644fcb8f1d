"""Owns every call the operator makes to the Kubernetes API server (principle 5).

A small async REST client over aiohttp with the credentials kopf resolved (kubeconfig or
in-cluster service account). It maps (apiVersion, kind) to paths, does server-side apply
(idempotent, conflict-free with force), merge-patches status, posts Events, and owns the
404 / 409 / 429 / 5xx handling: transient failures are retried with backoff here so the
handler never sees them; a missing object on get or delete is simply "not there".

Trust boundaries (docs/security.md): a bound ServiceAccount token expires, so a token read
from a file is re-read before each request and, on a 401, once more and the request retried
once; `apply` never takes over an object this EdgeModel does not control (OwnershipConflict;
an object the watches do not know is written create-only, so that check costs no request);
`patch_status` may carry a resourceVersion precondition, so a second operator replica (a
rolling upgrade) cannot overwrite a newer status with one computed from an older read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from edgemodel_operator.errors import EdgeModelOperatorError, failure_of_status
from edgemodel_operator.labels import GROUP, KIND, MANAGER, PLURAL, SERVICE_NAME, VERSION
from edgemodel_operator.timestamps import rfc3339

log = logging.getLogger("edgemodel.kube")

FIELD_MANAGER = MANAGER
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    # (apiVersion, kind) -> (plural, namespaced)
    ("v1", "Pod"): ("pods", True),
    ("v1", "Service"): ("services", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("v1", "Secret"): ("secrets", True),  # image pull secrets, copied by name
    ("v1", "ServiceAccount"): ("serviceaccounts", True),  # the artifact store's own
    ("v1", "Event"): ("events", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "Node"): ("nodes", False),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("endpointslices", True),
    (f"{GROUP}/{VERSION}", KIND): (PLURAL, True),
}
RETRYABLE = {429, 500, 502, 503, 504}
# Requests sent (every attempt) while a `counting()` block is active in this task and the
# tasks it starts: how the worker reports API requests per reconcile.
_COUNTER: ContextVar[list[int] | None] = ContextVar("edgemodel_kube_requests", default=None)


@contextlib.contextmanager
def counting() -> Iterator[list[int]]:
    """Counts the API requests made inside the block: what it yields holds at `[0]` every
    request sent (retries included) and at `[1]` those that were writes (not GET)."""
    box = [0, 0]
    token = _COUNTER.set(box)
    try:
        yield box
    finally:
        _COUNTER.reset(token)


def _count(method: str) -> None:
    box = _COUNTER.get()
    if box is not None:
        box[0] += 1
        box[1] += method != "GET"


class KubeError(EdgeModelOperatorError):
    """The API server refused a request for good (not retried)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.failure = failure_of_status(status)


class OwnershipConflict(KubeError):
    """An object of the name the operator would write exists and is not ours to change."""

    def __init__(self, kind: str, namespace: str | None, name: str, owner: str) -> None:
        where = f"{namespace}/{name}" if namespace else name
        super().__init__(409, f"{kind} {where} exists and is owned by {owner}, not this EdgeModel")
        self.kind = kind
        self.name = name
        self.owner = owner


def controller_of(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with controller=true of an object, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def foreign_owner(existing: Mapping[str, Any], manifest: Mapping[str, Any]) -> str | None:
    """Who owns `existing` when it is not the controller `manifest` names (pure); else None.

    Only manifests with a controller ownerReference are checked (what an EdgeModel owns); an
    existing object counts as ours only when its controller reference has the same uid.
    """
    ours = controller_of(manifest)
    if ours is None:
        return None
    theirs = controller_of(existing)
    if theirs is not None and theirs.get("uid") == ours.get("uid"):
        return None
    if theirs is not None:
        return f"{theirs.get('kind')} {theirs.get('name')}"
    managers = sorted(
        {str(m.get("manager")) for m in (existing.get("metadata") or {}).get("managedFields") or []}
    )
    return "no controller (managed by " + (", ".join(managers) or "unknown") + ")"


# A resourceVersion no object can have: etcd (and kine) revisions are signed 64-bit, this is
# 2**64 - 1. See `create_only`.
IMPOSSIBLE_RESOURCE_VERSION = str(2**64 - 1)


def create_only(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """`manifest` as a create-only server-side apply (pure).

    An apply carrying metadata.resourceVersion is conditional on it: the API server answers
    409 and writes nothing when an object of that name exists with another version, and
    creates the object when none exists (the version is not kept; checked against
    kube-apiserver v1.36 in tests/integration/api/test_create_only_apply.py). With a version
    no object can have, the apply creates or is refused: atomic, unlike a GET then a write.
    """
    meta = {**manifest["metadata"], "resourceVersion": IMPOSSIBLE_RESOURCE_VERSION}
    return {**manifest, "metadata": meta}


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate to it."""

    server: str
    token: str | None = None
    # A file to (re-)read the token from: a projected ServiceAccount token is bound and
    # rotated on disk (the kubelet refreshes it; it expires after an hour by default).
    token_path: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    insecure: bool = False
    # A client certificate given inline (kubeconfig `client-certificate-data` /
    # `client-key-data`, PEM or base64 of PEM): loaded through private temporary files.
    certificate_data: bytes | None = None
    private_key_data: bytes | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Credentials:
        return cls(
            server=info.server,
            token=info.token,
            ca_path=info.ca_path,
            ca_data=_as_bytes(info.ca_data),
            certificate_path=info.certificate_path,
            private_key_path=info.private_key_path,
            insecure=bool(info.insecure),
            certificate_data=_as_bytes(getattr(info, "certificate_data", None)),
            private_key_data=_as_bytes(getattr(info, "private_key_data", None)),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_path)
        if self.ca_data:
            context.load_verify_locations(cadata=_pem(self.ca_data).decode())
        if self.certificate_data and self.private_key_data:
            _load_inline_chain(context, _pem(self.certificate_data), _pem(self.private_key_data))
        elif self.certificate_path and self.private_key_path:
            context.load_cert_chain(self.certificate_path, self.private_key_path)
        return context


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _pem(data: bytes) -> bytes:
    """PEM as given, or decoded from base64 (kubeconfigs carry base64 of PEM)."""
    return data if data.lstrip().startswith(b"-----") else base64.b64decode(data)


def _load_inline_chain(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """ssl loads a certificate chain only from files: private ones, gone once it is loaded."""
    with tempfile.TemporaryDirectory(prefix="edgemodel-tls-") as directory:
        certificate_file, key_file = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        certificate_file.write_bytes(certificate)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        context.load_cert_chain(str(certificate_file), str(key_file))


def resource_path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    plural, namespaced = RESOURCES[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name:
        base += f"/{quote(name)}"
    if subresource:
        base += f"/{subresource}"
    return base


class Kube:
    """The operator's one API client."""

    def __init__(self, credentials: Credentials, attempts: int = 6) -> None:
        self._credentials = credentials
        self._attempts = attempts
        self._token = credentials.token
        self.requests = 0  # every request sent, all attempts (bench/operator reads it)
        headers = {"Accept": "application/json", "User-Agent": "edgemodel-operator"}
        self._session = aiohttp.ClientSession(
            base_url=credentials.server.rstrip("/") + "/",
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=credentials.ssl_context(), limit=32),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self._session.close()

    def _auth_headers(self) -> dict[str, str]:
        """The Authorization header, with the token re-read from its file when it has one."""
        path = self._credentials.token_path
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    self._token = handle.read().strip() or self._token
            except OSError as exc:  # keep the last good token; the 401 path says the rest
                log.warning("token file unreadable", extra={"path": path, "error": str(exc)})
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        url = path.lstrip("/")
        if params:
            url += "?" + urlencode(params)
        data = None if body is None else json.dumps(body)
        delay = 0.2
        reauthenticated = False
        attempt = 0
        while attempt < self._attempts:
            attempt += 1
            self.requests += 1
            _count(method)
            try:
                async with self._session.request(
                    method,
                    url,
                    data=data,
                    headers={"Content-Type": content_type, **self._auth_headers()},
                ) as response:
                    text = await response.text()
                    if response.status < 300:
                        return json.loads(text) if text else None
                    if response.status == 404 and method in ("GET", "DELETE"):
                        return None
                    if response.status == 401 and not reauthenticated:
                        # The token expired between reads: re-read it (above) and retry once,
                        # not counted as an attempt.
                        reauthenticated = True
                        attempt -= 1
                        log.info("401 from the API server; re-reading the token and retrying")
                        continue
                    if response.status not in RETRYABLE or attempt == self._attempts:
                        raise KubeError(response.status, _message(text))
                    retry_after = response.headers.get("Retry-After")
                    if retry_after and retry_after.isdigit():
                        delay = max(delay, float(retry_after))
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if attempt == self._attempts:
                    raise KubeError(0, f"API server unreachable: {exc}") from exc
            log.debug("retrying %s %s in %.1fs", method, path, delay)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.request(
            "GET", resource_path(api_version, kind, namespace, name)
        )
        return found

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        fields: str | None = None,
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if fields:
            params["fieldSelector"] = fields
        result = await self.request(
            "GET", resource_path(api_version, kind, namespace), params=params
        )
        items: list[dict[str, Any]] = (result or {}).get("items", [])
        return items

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        resource_version: str = "",
        timeout_s: int = 3600,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events ({"type", "object"}) of a collection, until the server ends it.

        Not retried here: the caller re-lists and watches on (a 410, or a stream the server
        dropped because the watcher fell behind). The operator's own watches are kopf's; this
        one serves the benches, the sandbox's pod runner and tools that speak to the API server
        through this client. `labels`: only objects carrying all of them (a label selector).
        """
        params = {"watch": "1", "timeoutSeconds": str(timeout_s)}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        if resource_version:
            params["resourceVersion"] = resource_version
        url = resource_path(api_version, kind, namespace).lstrip("/") + "?" + urlencode(params)
        self.requests += 1
        _count("GET")
        async with self._session.get(
            url,
            headers=self._auth_headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30),
        ) as response:
            if response.status != 200:
                raise KubeError(response.status, _message(await response.text()))
            async for line in response.content:
                if not line.strip():
                    continue
                event: dict[str, Any] = json.loads(line)
                if event.get("type") == "ERROR":
                    status = (event.get("object") or {}).get("code") or 500
                    raise KubeError(int(status), str((event.get("object") or {}).get("message")))
                yield event

    async def apply(
        self,
        manifest: Mapping[str, Any],
        known: Mapping[str, Any] | None = None,
        *,
        absent: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply: create or update to match `manifest`; our fields win conflicts.

        Forcing is only safe on objects we own: a manifest with a controller ownerReference
        (everything an EdgeModel owns) is applied only when no object of that name exists or
        the existing one has the same controller; otherwise OwnershipConflict, and nothing
        is written (a user's Service of the same name is never taken over).

        What the operator's watches said (cache.py) saves requests, never the check:
        `known`, the object as last reported: when it already has this manifest's controller
        the ownership GET is skipped. `absent`: the watches report no object of that name, so
        the write is first tried create-only (`create_only`): one request creates it, and if
        the watches were behind and the object exists, the API server refuses that write
        (409) and the GET decides as for an unknown object.
        """
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"]
        )
        ours = known is not None and foreign_owner(known, manifest) is None
        if controller_of(manifest) is not None and not ours:
            if absent and known is None:
                created = await self._apply_create_only(path, manifest)
                if created is not None:
                    return created
            existing = await self.request("GET", path)
            owner = foreign_owner(existing, manifest) if existing else None
            if owner is not None:
                raise OwnershipConflict(
                    manifest["kind"], meta.get("namespace"), meta["name"], owner
                )
        return await self._apply_patch(path, manifest)

    async def _apply_patch(self, path: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def _apply_create_only(
        self, path: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The object created by one apply; None (nothing written) when it already exists."""
        try:
            return await self._apply_patch(path, create_only(manifest))
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        gone = await self.request(
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
        return gone is not None

    async def patch_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource.

        With `resource_version` (the one the status was computed from) the patch is a
        precondition: if anyone wrote the object since, the API server answers 409 and this
        raises KubeError(409) without writing, so a status computed from an older read (a
        second replica during a rolling upgrade) never overwrites a newer one.
        """
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            result: dict[str, Any] | None = await self.request(
                "PATCH",
                resource_path(api_version, kind, namespace, name, "status"),
                body=body,
                content_type="application/merge-patch+json",
            )
        except KubeError as exc:
            if exc.status == 404:
                return None  # deleted meanwhile
            raise
        return result

    async def event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        meta = involved["metadata"]
        now = rfc3339(datetime.now(UTC))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
        }
        try:
            await self.request("POST", resource_path("v1", "Event", meta["namespace"]), body=body)
        except KubeError as exc:  # an Event is a courtesy: never fail a reconcile for it
            log.warning("event not posted", extra={"reason": reason, "error": str(exc)})

    async def service_address(self, namespace: str, service: str, port_name: str) -> str | None:
        """host:port of one ready endpoint of a Service (what kube-proxy would pick), or None."""
        slices = await self.list(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            namespace,
            labels={SERVICE_NAME: service},
        )
        for item in slices:
            port = next(
                (p.get("port") for p in item.get("ports") or [] if p.get("name") == port_name), None
            )
            for endpoint in item.get("endpoints") or []:
                if (
                    (endpoint.get("conditions") or {}).get("ready")
                    and endpoint.get("addresses")
                    and port
                ):
                    return f"{endpoint['addresses'][0]}:{port}"
        return None


def _message(text: str) -> str:
    try:
        return str(json.loads(text).get("message", text))[:2000]
    except (ValueError, AttributeError):
        return text[:2000]
