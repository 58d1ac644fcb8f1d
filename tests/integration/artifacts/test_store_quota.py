"""A real `edgemodel artifact-server` with `--quota-bytes`: a writer trying to fill the disk for
good is refused with 507 before anything is published, announced or streamed, and the quota's
count survives a restart. (What the collector may delete: tests/unit/test_security_artifact_store.)
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.artifacts.support import WRITER_TOKEN, ArtifactServer

QUOTA = 500_000
AUTH = {"Authorization": f"Bearer {WRITER_TOKEN}"}


@pytest.fixture
def quota_server(tmp_path: Path) -> Iterator[ArtifactServer]:
    tokens = tmp_path / "tokens"
    tokens.write_text(WRITER_TOKEN + "\n")
    instance = ArtifactServer(
        tmp_path / "store",
        writers=["--write-token-file", str(tokens), "--quota-bytes", str(QUOTA)],
    ).start()
    yield instance
    if instance.process is not None and instance.process.poll() is None:
        instance.stop()


def _blob(size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


def _stored(server: ArtifactServer) -> list[str]:
    return sorted(p.name for p in (server.root / "artifacts").iterdir())


@pytest.mark.parametrize("chunked", [False, True], ids=["announced", "chunked"])
def test_filling_the_disk_past_the_quota_is_507_and_leaves_nothing(
    quota_server: ArtifactServer, chunked: bool
) -> None:
    first, first_sha = _blob(300_000)
    assert quota_server.request("PUT", f"/v1/artifacts/{first_sha}", first)[0] == 201
    second, second_sha = _blob(300_000)
    conn = http.client.HTTPConnection("127.0.0.1", quota_server.port, timeout=10)
    if chunked:  # no Content-Length: refused once received, before it is published
        parts = [second[i : i + 65536] for i in range(0, len(second), 65536)]
        conn.request(
            "PUT", f"/v1/artifacts/{second_sha}", body=iter(parts), headers=AUTH,
            encode_chunked=True,
        )  # fmt: skip
    else:  # Content-Length says it cannot fit: refused before the body is read
        conn.request("PUT", f"/v1/artifacts/{second_sha}", body=second, headers=AUTH)
    response = conn.getresponse()
    error = json.loads(response.read())["error"]
    conn.close()
    assert response.status == 507
    assert f"quota of {QUOTA}" in error
    assert _stored(quota_server) == [first_sha]
    assert not any((quota_server.root / ".tmp").iterdir())
    # What is already stored is still accepted again (nothing new to hold) and still served.
    assert quota_server.request("PUT", f"/v1/artifacts/{first_sha}", first)[0] == 200
    assert quota_server.request("GET", f"/v1/artifacts/{first_sha}")[2] == first


def test_the_quota_counts_what_an_earlier_run_stored(quota_server: ArtifactServer) -> None:
    first, first_sha = _blob(400_000)
    assert quota_server.request("PUT", f"/v1/artifacts/{first_sha}", first)[0] == 201
    assert quota_server.stop() == 0
    tokens = str(quota_server.root.parent / "tokens")
    writers = ["--write-token-file", tokens, "--quota-bytes", str(QUOTA)]
    restarted = ArtifactServer(quota_server.root, writers=writers).start()
    try:
        assert any("used=400000" in line for line in restarted.log)
        second, second_sha = _blob(200_000)
        assert restarted.request("PUT", f"/v1/artifacts/{second_sha}", second)[0] == 507
    finally:
        assert restarted.stop() == 0
