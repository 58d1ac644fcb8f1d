"""The artifact server's HTTP API against a real `edgemodel artifact-server` process."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.artifacts.support import WRITER_TOKEN, ArtifactServer

AUTH = {"Authorization": f"Bearer {WRITER_TOKEN}"}


def _blob(size: int = 200_000) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


def _wait_until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_healthz(server: ArtifactServer) -> None:
    status, _, body = server.request("GET", "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_upload_download_round_trip(server: ArtifactServer) -> None:
    data, sha = _blob()
    status, _, body = server.request("PUT", f"/v1/artifacts/{sha}", data)
    assert status == 201, body
    assert json.loads(body) == {"sha256": sha, "sizeBytes": len(data), "created": True}
    # Content-addressed: the same PUT again is a success that stores nothing new.
    status, _, body = server.request("PUT", f"/v1/artifacts/{sha}", data)
    assert (status, json.loads(body)["created"]) == (200, False)

    status, headers, got = server.request("GET", f"/v1/artifacts/{sha}")
    assert status == 200
    assert got == data
    assert headers["Content-Length"] == str(len(data))
    assert headers["X-Content-Sha256"] == sha

    status, headers, got = server.request("HEAD", f"/v1/artifacts/{sha}")
    assert (status, got) == (200, b"")
    assert headers["Content-Length"] == str(len(data))
    assert headers["X-Content-Sha256"] == sha


def test_streamed_chunked_upload(server: ArtifactServer) -> None:
    """A body without Content-Length (chunked) is hashed as it streams, like any other."""
    data, sha = _blob(300_000)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(
        "PUT",
        f"/v1/artifacts/{sha}",
        body=iter([data[:100_000], data[100_000:]]),
        headers=AUTH,
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 201, response.read()
    conn.close()
    assert server.request("GET", f"/v1/artifacts/{sha}")[2] == data


def test_digest_mismatch_is_refused_and_nothing_stored(server: ArtifactServer) -> None:
    data, actual = _blob()
    claimed = hashlib.sha256(b"something else").hexdigest()
    status, _, body = server.request("PUT", f"/v1/artifacts/{claimed}", data)
    assert status == 400
    message = json.loads(body)["error"]
    assert claimed in message and actual in message
    assert server.request("HEAD", f"/v1/artifacts/{claimed}")[0] == 404
    assert server.request("HEAD", f"/v1/artifacts/{actual}")[0] == 404
    assert not (server.root / "artifacts" / claimed).exists()
    _wait_until(lambda: not any((server.root / ".tmp").iterdir()))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_refused(server: ArtifactServer, chunked: bool) -> None:
    data, sha = _blob(server.max_bytes + 1)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    if chunked:
        parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        conn.request(
            "PUT", f"/v1/artifacts/{sha}", body=iter(parts), headers=AUTH, encode_chunked=True
        )
    else:
        conn.request("PUT", f"/v1/artifacts/{sha}", body=data, headers=AUTH)
    response = conn.getresponse()
    assert response.status == 413
    assert str(server.max_bytes) in json.loads(response.read())["error"]
    conn.close()
    assert server.request("HEAD", f"/v1/artifacts/{sha}")[0] == 404


GOOD_SHA = "0" * 64
BAD_SHAS = ["A" * 64, "0" * 63, "0" * 65, "g" * 64, "short", "%2e%2e", "%20" + "0" * 63]
BAD_VARIANTS = ["Rev1", "-rev", "rev_1", "a" * 64, "%2e%2e", "r%20x", "r.1"]
UID = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"


def _record_path(name: str, variant: str = "amd64") -> str:
    """A record's URL; `name` picks the revision digest, so tests never share a record."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"/v1/records/ns1/{UID}/{digest}/{variant}"


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("value", BAD_SHAS)
def test_bad_sha256_is_400_naming_it(server: ArtifactServer, method: str, value: str) -> None:
    status, _, body = server.request(
        method, f"/v1/artifacts/{value}", b"x" if method == "PUT" else None
    )
    assert status == 400
    error = json.loads(body)["error"]
    assert "sha256" in error
    shown = value.replace("%2e", ".").replace("%20", " ")
    assert shown[:20] in error


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("value", BAD_VARIANTS)
def test_bad_record_key_is_400_naming_it(server: ArtifactServer, method: str, value: str) -> None:
    record = json.dumps({"artifactSha256": GOOD_SHA}).encode() if method == "PUT" else None
    status, _, body = server.request(method, _record_path("bad", value), record)
    assert status == 400
    error = json.loads(body)["error"]
    assert "variant" in error
    assert value.replace("%2e", ".").replace("%20", " ") in error


def test_head_of_bad_sha256_is_400(server: ArtifactServer) -> None:
    assert server.request("HEAD", "/v1/artifacts/nothex")[0] == 400


def test_revision_records(server: ArtifactServer) -> None:
    data, sha = _blob(1000)
    record = {"artifactSha256": sha, "report": {"result": "passed", "sizes": {"ratio": 0.25}}}
    body = json.dumps(record).encode()
    path = _record_path("rev-1")
    # The record may not point at an artifact the store does not hold.
    status, _, reply = server.request("PUT", path, body)
    assert status == 409
    assert sha in json.loads(reply)["error"]
    assert server.request("GET", path)[0] == 404

    assert server.request("PUT", f"/v1/artifacts/{sha}", data)[0] == 201
    assert server.request("PUT", path, body)[0] == 201
    assert server.request("PUT", path, body)[0] == 200  # the same record again: idempotent
    status, _, reply = server.request("GET", path)
    assert (status, json.loads(reply)) == (200, record)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "artifactSha256"),
        (json.dumps({"artifactSha256": "ABC"}).encode(), "artifactSha256"),
        (json.dumps({"artifactSha256": GOOD_SHA, "report": [1]}).encode(), "report"),
    ],
    ids=["syntax", "not-utf8", "array", "missing-sha", "bad-sha", "report-not-object"],
)
def test_malformed_revision_record_is_400(server: ArtifactServer, body: bytes, needle: str) -> None:
    status, _, reply = server.request("PUT", _record_path("rev-bad"), body)
    assert status == 400
    assert needle in json.loads(reply)["error"]


def test_oversized_revision_record_is_413(server: ArtifactServer) -> None:
    body = json.dumps({"artifactSha256": GOOD_SHA, "report": {"x": "y" * (4 << 20)}}).encode()
    assert server.request("PUT", _record_path("rev-big"), body)[0] == 413


def test_missing_artifact_is_404(server: ArtifactServer) -> None:
    assert server.request("GET", f"/v1/artifacts/{'f' * 64}")[0] == 404


def _start_partial_upload(server: ArtifactServer, total: int, sent: int) -> socket.socket:
    """Announce `total` bytes, send only `sent` of them, keep the connection open."""
    sha = "1" * 64
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = (
        f"PUT /v1/artifacts/{sha} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {total}\r\n"
        f"Authorization: Bearer {WRITER_TOKEN}\r\n\r\n"
    ).encode()
    sock.sendall(head + os.urandom(sent))
    return sock


def test_client_disconnect_mid_upload_leaves_nothing(server: ArtifactServer) -> None:
    tmp = server.root / ".tmp"
    sock = _start_partial_upload(server, total=500_000, sent=200_000)
    _wait_until(lambda: any(tmp.iterdir()))
    sock.close()
    _wait_until(lambda: not any(tmp.iterdir()))
    assert server.request("HEAD", f"/v1/artifacts/{'1' * 64}")[0] == 404


def test_killed_server_mid_upload_leaves_no_artifact(own_server: ArtifactServer) -> None:
    tmp = own_server.root / ".tmp"
    sock = _start_partial_upload(own_server, total=500_000, sent=200_000)
    _wait_until(lambda: any(tmp.iterdir()))
    own_server.stop(signal.SIGKILL)
    sock.close()
    assert any(tmp.iterdir()), "the killed upload should have left its temp file"
    restarted = ArtifactServer(own_server.root).start()
    try:
        assert not any(tmp.iterdir()), "leftovers are removed when the server starts"
        assert not any((own_server.root / "artifacts").iterdir())
        assert restarted.request("HEAD", f"/v1/artifacts/{'1' * 64}")[0] == 404
        assert any("interrupted uploads" in line for line in restarted.log)
    finally:
        assert restarted.stop() == 0


def test_sigterm_stops_cleanly(own_server: ArtifactServer) -> None:
    started = time.monotonic()
    assert own_server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10


def test_unusable_root_is_bad_input(tmp_path: Path) -> None:
    from tests.integration.artifacts.support import edgemodel

    blocker = tmp_path / "file"
    blocker.write_text("")
    result = edgemodel("artifact-server", "--root", str(blocker / "sub"), "--port", "0")
    assert result.returncode == 2
    assert "--root" in result.stderr
