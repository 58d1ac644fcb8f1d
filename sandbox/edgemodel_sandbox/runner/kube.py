"""Owns the runner's conversation with the API server: plain JSON over HTTPS with urllib3.

The kubernetes client's generated models validate strictly and cost CPU per object; the
runner only needs raw dicts, a few verbs and streaming watches, so it speaks REST directly
with the kubeconfig's credentials (token or client certificate, CA data or file).
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml


class ApiError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class WatchExpired(RuntimeError):
    """The watch's resourceVersion is too old (410): relist and watch again."""


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate to it (inline data or file paths)."""

    server: str
    token: str | None = None
    ca_data: bytes | None = None
    ca_file: str | None = None
    cert_data: bytes | None = None
    cert_file: str | None = None
    key_data: bytes | None = None
    key_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=self.ca_file, cadata=self.ca_data.decode() if self.ca_data else None
        )
        if self.cert_data and self.key_data:
            # load_cert_chain reads files only; they live just long enough to be read.
            with tempfile.TemporaryDirectory(prefix="edgemodel-runner-") as directory:
                cert, key = Path(directory) / "c.crt", Path(directory) / "c.key"
                cert.write_bytes(self.cert_data)
                key.write_bytes(self.key_data)
                context.load_cert_chain(str(cert), str(key))
        elif self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _decoded(data: str | None) -> bytes | None:
    return base64.b64decode(data) if data else None


def load_credentials(kubeconfig: Path) -> Credentials:
    config = yaml.safe_load(kubeconfig.read_text())
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    context = contexts.get(current) or next(iter(contexts.values()))
    cluster = {c["name"]: c["cluster"] for c in config["clusters"]}[context["cluster"]]
    user = {u["name"]: u["user"] for u in config.get("users") or []}.get(context.get("user"), {})
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        token=user.get("token"),
        ca_data=_decoded(cluster.get("certificate-authority-data")),
        ca_file=cluster.get("certificate-authority"),
        cert_data=_decoded(user.get("client-certificate-data")),
        cert_file=user.get("client-certificate"),
        key_data=_decoded(user.get("client-key-data")),
        key_file=user.get("client-key"),
    )


class Kube:
    """A thread-safe API client returning plain dicts."""

    def __init__(self, credentials: Credentials, pool_size: int = 32) -> None:
        self._server = credentials.server
        self._headers = {"Accept": "application/json"}
        if credentials.token:
            self._headers["Authorization"] = f"Bearer {credentials.token}"
        self._http = urllib3.PoolManager(
            maxsize=pool_size, block=False, ssl_context=credentials.ssl_context(), retries=False
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path) -> Kube:
        return cls(load_credentials(kubeconfig))

    def _url(self, path: str, query: dict[str, str] | None) -> str:
        url = self._server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    @property
    def server(self) -> str:
        return self._server

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        response = self._http.request(
            method,
            self._url(path, query),
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=5.0, read=timeout),
        )
        if response.status >= 400:
            raise ApiError(response.status, response.data.decode(errors="replace")[:500])
        loaded: dict[str, Any] = json.loads(response.data) if response.data else {}
        return loaded

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return self.request("GET", path, query=query)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST `body`; None when it already exists."""
        try:
            return self.request("POST", path, body=body)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: dict[str, Any] | None = None) -> bool:
        """DELETE; False when it was already gone (or a precondition no longer holds)."""
        try:
            self.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def watch(
        self, path: str, resource_version: str, query: dict[str, str] | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events from `resource_version` on; ends when the server closes it.

        BOOKMARK events are passed through so the caller can advance its resourceVersion.
        """
        params = dict(query or {})
        params.update(
            {
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "300",
            }
        )
        response = self._http.request(
            "GET",
            self._url(path, params),
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=5.0, read=330.0),
        )
        try:
            if response.status == 410:
                raise WatchExpired(path)
            if response.status >= 400:
                raise ApiError(response.status, response.read().decode(errors="replace")[:500])
            buffer = b""
            for chunk in response.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type", "")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpired(path)
                        raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
                    yield kind, obj
        finally:
            response.release_conn()
