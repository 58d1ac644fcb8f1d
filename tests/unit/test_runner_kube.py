"""The pod runner's API client: kubeconfig credentials, verbs with their 404/409 meanings,
and the watch stream (events, bookmarks, expiry), against a local HTTP server."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemodel_sandbox.runner.kube import (
    ApiError,
    Credentials,
    Kube,
    WatchExpired,
    load_credentials,
)


def test_load_credentials_from_inline_data(tmp_path: Path) -> None:
    config = {
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://127.0.0.1:6443/",
                    "certificate-authority-data": base64.b64encode(b"PEM").decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": "t0k"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert load_credentials(path) == Credentials(
        server="https://127.0.0.1:6443", token="t0k", ca_data=b"PEM"
    )


class _Api(BaseHTTPRequestHandler):
    log: list[tuple[str, str, Any]] = []

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def do_GET(self) -> None:
        _Api.log.append(("GET", self.path, self.headers.get("Authorization")))
        if self.path.startswith("/missing"):
            self._reply(404, {"kind": "Status"})
        elif "watch=true" in self.path and "expired" in self.path:
            self._reply(410, {"kind": "Status", "code": 410})
        elif "watch=true" in self.path:
            self.send_response(200)
            self.end_headers()
            events = [
                {"type": "ADDED", "object": {"metadata": {"name": "a"}}},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
                {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
            ]
            for event in events:
                self.wfile.write(json.dumps(event).encode() + b"\n")
                self.wfile.flush()
        else:
            self._reply(200, {"items": []})

    def do_POST(self) -> None:
        _Api.log.append(("POST", self.path, self._body()))
        self._reply(409 if self.path.endswith("exists") else 201, {"ok": True})

    def do_PATCH(self) -> None:
        _Api.log.append(("PATCH", self.headers.get("Content-Type") or "", self._body()))
        self._reply(200, {"patched": True})

    def do_DELETE(self) -> None:
        _Api.log.append(("DELETE", self.path, self._body()))
        self._reply(404 if "gone" in self.path else 500 if "boom" in self.path else 200, {})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def kube() -> Iterator[Kube]:
    _Api.log = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Kube(Credentials(server=f"http://127.0.0.1:{server.server_address[1]}", token="t"))
    server.shutdown()
    server.server_close()


def test_verbs(kube: Kube) -> None:
    assert kube.get("/api/v1/pods", {"labelSelector": "a=b"}) == {"items": []}
    assert _Api.log[-1] == ("GET", "/api/v1/pods?labelSelector=a%3Db", "Bearer t")
    assert kube.get("/missing") is None
    assert kube.create("/new", {"a": 1}) == {"ok": True}
    assert kube.create("/exists", {"a": 1}) is None
    assert kube.merge_patch("/p/status", {"status": {}}) == {"patched": True}
    assert _Api.log[-1] == ("PATCH", "application/merge-patch+json", {"status": {}})
    assert kube.delete("/pod", {"gracePeriodSeconds": 0})
    assert _Api.log[-1] == ("DELETE", "/pod", {"gracePeriodSeconds": 0})
    assert not kube.delete("/gone")
    with pytest.raises(ApiError) as failure:
        kube.delete("/boom")
    assert failure.value.status == 500


def test_watch_yields_events_then_expires(kube: Kube) -> None:
    seen = []
    with pytest.raises(WatchExpired):
        for kind, obj in kube.watch("/api/v1/pods", "5", {"labelSelector": "x=y"}):
            seen.append((kind, obj["metadata"]))
    assert seen == [("ADDED", {"name": "a"}), ("BOOKMARK", {"resourceVersion": "9"})]
    path = _Api.log[-1][1]
    assert "resourceVersion=5" in path and "allowWatchBookmarks=true" in path
    with pytest.raises(WatchExpired):
        list(kube.watch("/expired", "1"))
