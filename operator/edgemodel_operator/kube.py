"""Owns every call the operator makes to the Kubernetes API server (principle 5).

A small async REST client over aiohttp with the credentials kopf resolved (kubeconfig or
in-cluster service account). It maps (apiVersion, kind) to paths, does server-side apply
(idempotent, conflict-free with force), merge-patches status, posts Events, and owns the
404 / 409 / 429 / 5xx handling: transient failures are retried with backoff here so the
handler never sees them; a missing object on get or delete is simply "not there".
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from edgemodel_operator.api import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger("edgemodel.kube")

FIELD_MANAGER = "edgemodel-operator"
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    # (apiVersion, kind) -> (plural, namespaced)
    ("v1", "Pod"): ("pods", True),
    ("v1", "Service"): ("services", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("v1", "Secret"): ("secrets", True),  # image pull secrets, copied by name
    ("v1", "Event"): ("events", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "Node"): ("nodes", False),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("endpointslices", True),
    (f"{GROUP}/{VERSION}", KIND): (PLURAL, True),
}
RETRYABLE = {429, 500, 502, 503, 504}


class KubeError(Exception):
    """The API server refused a request for good (not retried)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate to it."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    insecure: bool = False

    @classmethod
    def from_kopf(cls, info: Any) -> Credentials:
        ca_data = info.ca_data
        return cls(
            server=info.server,
            token=info.token,
            ca_path=info.ca_path,
            ca_data=ca_data.encode() if isinstance(ca_data, str) else ca_data,
            certificate_path=info.certificate_path,
            private_key_path=info.private_key_path,
            insecure=bool(info.insecure),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        context = ssl.create_default_context(cafile=self.ca_path)
        if self.ca_data:
            pem = (
                self.ca_data
                if self.ca_data.lstrip().startswith(b"-----")
                else base64.b64decode(self.ca_data)
            )
            context.load_verify_locations(cadata=pem.decode())
        if self.certificate_path and self.private_key_path:
            context.load_cert_chain(self.certificate_path, self.private_key_path)
        return context


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
        headers = {"Accept": "application/json", "User-Agent": "edgemodel-operator"}
        if credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token}"
        self._session = aiohttp.ClientSession(
            base_url=credentials.server.rstrip("/") + "/",
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=credentials.ssl_context(), limit=32),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self._session.close()

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
        for attempt in range(self._attempts):
            try:
                async with self._session.request(
                    method, url, data=data, headers={"Content-Type": content_type}
                ) as response:
                    text = await response.text()
                    if response.status < 300:
                        return json.loads(text) if text else None
                    if response.status == 404 and method in ("GET", "DELETE"):
                        return None
                    if response.status not in RETRYABLE or attempt == self._attempts - 1:
                        raise KubeError(response.status, _message(text))
                    retry_after = response.headers.get("Retry-After")
                    if retry_after and retry_after.isdigit():
                        delay = max(delay, float(retry_after))
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if attempt == self._attempts - 1:
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

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply: create or update to match `manifest`; our fields win conflicts."""
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"]
        )
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        gone = await self.request(
            "DELETE",
            resource_path(api_version, kind, namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
        return gone is not None

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource (no resourceVersion: never a conflict)."""
        try:
            result: dict[str, Any] | None = await self.request(
                "PATCH",
                resource_path(api_version, kind, namespace, name, "status"),
                body={"status": status},
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
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
            labels={"kubernetes.io/service-name": service},
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
