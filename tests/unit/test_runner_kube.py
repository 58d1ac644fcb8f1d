"""The pod runner's API client: the project's one client (`edgemodel_operator.kube.Kube`) behind
blocking calls. Kubeconfig credentials (token, CA, client certificate inline or in files),
the verbs with their 404/409 meanings, the one retry loop, the watch stream (events, label
selector, expiry), leaving a watch early, closing with calls in flight, and relisting; against
a local HTTP server, and a TLS one that asks for the client certificate.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from edgemodel_operator.kube import Credentials, KubeError
from edgemodel_sandbox import pki
from edgemodel_sandbox.runner.kube import (
    KubeconfigError,
    SyncKube,
    parse_kubeconfig,
    relisting,
)


def kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------ the kubeconfig


def test_token_and_inline_ca_become_the_clients_credentials() -> None:
    config = kubeconfig(
        {"token": "t0k"},
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(b"PEM")},
    )
    parsed = parse_kubeconfig(config)
    assert parsed.credentials == Credentials(
        server="https://127.0.0.1:6443", token="t0k", ca_data=b"PEM"
    )
    assert parsed.certificate_data is None and parsed.key_data is None


def test_files_are_read_relative_to_the_kubeconfig_and_a_token_file_is_kept_as_a_path() -> None:
    config = kubeconfig(
        {"client-certificate": "c.crt", "client-key": "/abs/c.key", "tokenFile": "token"},
        {"server": "https://h:1", "certificate-authority": "ca.crt"},
    )
    credentials = parse_kubeconfig(config, base=Path("/etc/k")).credentials
    assert credentials.certificate_path == "/etc/k/c.crt"
    assert credentials.private_key_path == "/abs/c.key"
    assert credentials.ca_path == "/etc/k/ca.crt"
    # A path, not its content: the client re-reads a (rotated) token before each request.
    assert credentials.token_path == "/etc/k/token" and credentials.token is None


def test_inline_client_certificate_is_kept_apart_for_the_tls_library() -> None:
    config = kubeconfig({"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")})
    parsed = parse_kubeconfig(config)
    assert (parsed.certificate_data, parsed.key_data) == (b"CERT", b"KEY")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({**kubeconfig({}), "current-context": "y"}, "contexts has no entry named 'y'"),
        (kubeconfig({}, {"certificate-authority-data": b64(b"x")}), "cluster 'c' has no server"),
        (kubeconfig({"client-key-data": "not base64!"}), "client-key-data is not base64"),
        (kubeconfig({"client-certificate": "c.crt"}), "needs its key"),
        (
            {**kubeconfig({}), "current-context": None, "contexts": []},
            "no current-context, and not exactly one context",
        ),
    ],
)
def test_a_kubeconfig_without_what_is_needed_is_refused_naming_the_field(
    config: dict[str, Any], named: str
) -> None:
    with pytest.raises(KubeconfigError, match=named):
        parse_kubeconfig(config, "cfg")


def test_an_unreadable_kubeconfig_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="missing"):
        SyncKube.from_kubeconfig(tmp_path / "missing")
    (tmp_path / "list").write_text("- a\n")
    with pytest.raises(KubeconfigError, match="not a kubeconfig"):
        SyncKube.from_kubeconfig(tmp_path / "list")


def test_credentials_that_do_not_load_are_refused_naming_the_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    config = kubeconfig(
        {"token": "t"}, {"server": "https://h:1", "certificate-authority": "no.crt"}
    )
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeconfigError, match=re.escape(f"{path}: its credentials do not load")):
        SyncKube.from_kubeconfig(path)


# ------------------------------------------------------------------ a local API server


class _Api(BaseHTTPRequestHandler):
    log: ClassVar[list[tuple[str, str, Any]]] = []
    flaky: ClassVar[list[int]] = []  # statuses /flaky answers with before a 200
    release: ClassVar[threading.Event] = threading.Event()  # what /slow and hung watches wait on

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

    def _watch(self) -> None:
        self.send_response(200)
        self.end_headers()
        events: list[dict[str, Any]] = [
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "6"}}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        ]
        if "/persistentvolumeclaims" in self.path:
            events.append({"type": "ERROR", "object": {"code": 410, "message": "too old"}})
        for event in events:
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()
        if "/nodes" in self.path:  # a watch that stays open with nothing to say
            _Api.release.wait(30)

    def do_GET(self) -> None:
        _Api.log.append(("GET", self.path, self.headers.get("Authorization")))
        if "watch=1" in self.path:
            self._watch()
        elif self.path.startswith("/missing"):
            self._reply(404, {"kind": "Status", "message": "not found"})
        elif self.path.startswith("/flaky") and _Api.flaky:
            self._reply(_Api.flaky.pop(0), {"kind": "Status", "message": "etcd"})
        elif self.path.startswith("/slow"):
            _Api.release.wait(30)
            self._reply(200, {"late": True})
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
        status = {"/gone": 404, "/moved": 409, "/boom": 500}.get(self.path, 200)
        self._reply(status, {"kind": "Status", "message": "no"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    _Api.log, _Api.flaky, _Api.release = [], [], threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield httpd
    _Api.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def kube(server: ThreadingHTTPServer) -> Iterator[SyncKube]:
    client = SyncKube(
        Credentials(server=f"http://127.0.0.1:{server.server_address[1]}", token="t"), attempts=2
    )
    yield client
    client.close()


def test_verbs_and_what_404_and_409_mean(kube: SyncKube) -> None:
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
    assert not kube.delete("/moved")  # a precondition (the uid) no longer holds


def test_transient_failures_are_retried_by_the_one_client_and_then_reported(
    kube: SyncKube,
) -> None:
    _Api.flaky = [503]
    assert kube.get("/flaky") == {"items": []}
    assert [entry[1] for entry in _Api.log] == ["/flaky", "/flaky"]
    with pytest.raises(KubeError) as failure:
        kube.delete("/boom")
    assert failure.value.status == 500
    assert [entry[1] for entry in _Api.log].count("/boom") == 2  # both attempts, then the error


def test_a_watch_streams_events_of_the_selected_objects_until_expired(kube: SyncKube) -> None:
    seen = []
    with pytest.raises(KubeError) as expired:
        for event in kube.watch("v1", "PersistentVolumeClaim", "5", labels={"app": "x"}):
            seen.append((event["type"], event["object"]["metadata"]["resourceVersion"]))
    assert expired.value.status == 410
    assert seen == [("ADDED", "6"), ("BOOKMARK", "9")]
    path = _Api.log[-1][1]
    assert path.startswith("/api/v1/persistentvolumeclaims?")
    assert "labelSelector=app%3Dx" in path and "resourceVersion=5" in path


def test_a_watch_the_server_ends_just_ends(kube: SyncKube) -> None:
    events = list(kube.watch("v1", "Pod", "5"))
    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK"]


def test_leaving_a_watch_early_stops_it_and_the_client_stays_usable(kube: SyncKube) -> None:
    for event in kube.watch("v1", "Node", "1"):
        assert event["type"] == "ADDED"
        break  # the server still holds the stream open
    assert kube.get("/after") == {"items": []}


def test_closing_fails_the_calls_in_flight_and_every_later_one(kube: SyncKube) -> None:
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(kube.get("/slow"))
        except KubeError as exc:
            outcomes.append(exc.status)

    def watch() -> None:
        try:
            outcomes.extend(event["type"] for event in kube.watch("v1", "Node", "1"))
        except KubeError as exc:
            outcomes.append(exc.status)

    threads = [threading.Thread(target=call), threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    while len(_Api.log) < 2:  # both requests reached the server, which holds them
        threading.Event().wait(0.05)
    kube.close()
    for thread in threads:
        thread.join(10)
    assert not _Api.release.is_set()  # the server never answered the slow GET
    assert sorted(map(str, outcomes)) == ["0", "0", "ADDED", "BOOKMARK"]
    with pytest.raises(KubeError) as closed:
        kube.get("/after")
    assert closed.value.status == 0


# ------------------------------------------------------------------ TLS with a client certificate


class _WhoAmI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.connection, ssl.SSLSocket)
        subject = dict(pair[0] for pair in self.connection.getpeercert()["subject"])
        data = json.dumps({"user": subject["commonName"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_an_inline_client_certificate_authenticates_over_tls(tmp_path: Path) -> None:
    authority = pki.create(tmp_path / "pki")
    client = pki.issue(authority, "runner", "edgemodel-runner", ["system:masters"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(authority.ca_cert))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(authority.server_cert), str(authority.server_key))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _WhoAmI)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            kubeconfig(
                {
                    "client-certificate-data": b64(client.cert.read_bytes()),
                    "client-key-data": b64(client.key.read_bytes()),
                },
                {
                    "server": f"https://127.0.0.1:{httpd.server_address[1]}",
                    "certificate-authority-data": b64(authority.ca_cert.read_bytes()),
                },
            )
        )
    )
    kube = SyncKube.from_kubeconfig(path, attempts=1)
    try:
        assert kube.get("/whoami") == {"user": "edgemodel-runner"}
    finally:
        kube.close()
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------ relisting


class _Stop(threading.Event):
    """A stop event whose waits are recorded instead of slept."""

    waits: list[float]

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.is_set()


def test_relisting_lists_again_at_once_after_410_and_after_a_pause_otherwise() -> None:
    stop = _Stop()
    stop.waits = []
    failures: list[Exception] = [KubeError(410, "too old"), KubeError(503, "busy"), ValueError()]

    def list_and_watch() -> None:
        if failures:
            raise failures.pop(0)
        stop.set()

    relisting(stop, "thing", list_and_watch)
    assert not failures and stop.is_set()
    assert len(stop.waits) == 2  # after the 503 and the malformed answer; not after the 410


def test_relisting_ends_quietly_when_the_client_is_closed_on_the_way_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = _Stop()
    stop.waits = []

    def list_and_watch() -> None:
        stop.set()  # shutdown: the runner stops, then closes the client under the watch
        raise KubeError(0, "the API client is closed")

    relisting(stop, "thing", list_and_watch)
    assert stop.waits == [] and "watch failed" not in caplog.text
