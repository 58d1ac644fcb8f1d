"""Who may write to a real `edgemodel artifact-server`, each test named after the attack it
plays: anonymous and wrong-token writes, one EdgeModel's writer forging another's record, a
second record over a stored one, and a store started without any way to authenticate writers.
Reads stay anonymous and digest-verified. (TokenReview of a Job pod's projected token against a
real API server: test_store_token_review.py.)"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.artifacts.support import (
    WRITER_TOKEN,
    ArtifactServer,
    compress_output,
    edgemodel,
)

UID = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
OTHER_UID = "0b9d3a52-5c4e-4f7e-9a43-1d2c3b4a5f60"
SCOPED_TOKEN = "scoped-writer-token-0123456789"


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactServer]:
    """A server with one unscoped token (WRITER_TOKEN) and one for EdgeModel ns1/UID only."""
    root = tmp_path_factory.mktemp("auth") / "store"
    tokens = root.parent / "tokens"
    tokens.write_text(f"{WRITER_TOKEN}\n{SCOPED_TOKEN} ns1/{UID}\n")
    instance = ArtifactServer(root, writers=["--write-token-file", str(tokens)]).start()
    yield instance
    instance.stop()


def _blob(text: str) -> tuple[bytes, str]:
    data = text.encode() * 100
    return data, hashlib.sha256(data).hexdigest()


def _record_path(uid: str, name: str) -> str:
    return f"/v1/records/ns1/{uid}/{hashlib.sha256(name.encode()).hexdigest()}/amd64"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("headers", [{}, _bearer("wrong-token-0123456789"), {"Authorization": "x"}])
def test_anonymous_or_unknown_writers_are_refused_401(
    scoped: ArtifactServer, headers: dict[str, str]
) -> None:
    data, sha = _blob("anonymous")
    status, reply_headers, body = scoped.request(
        "PUT", f"/v1/artifacts/{sha}", data, headers, auth=False
    )
    assert status == 401 and "Bearer" in reply_headers["WWW-Authenticate"]
    assert "token" in json.loads(body)["error"]
    record = json.dumps({"artifactSha256": sha}).encode()
    assert scoped.request("PUT", _record_path(UID, "anon"), record, headers, auth=False)[0] == 401
    assert scoped.request("HEAD", f"/v1/artifacts/{sha}")[0] == 404  # nothing stored


def test_a_writer_cannot_forge_another_edgemodels_record_403(scoped: ArtifactServer) -> None:
    data, sha = _blob("scoped")
    status, _, _ = scoped.request("PUT", f"/v1/artifacts/{sha}", data, _bearer(SCOPED_TOKEN))
    assert status == 201  # blobs are content-addressed: any authenticated writer may add one
    record = json.dumps({"artifactSha256": sha, "report": {}}).encode()
    status, _, body = scoped.request(
        "PUT", _record_path(OTHER_UID, "forged"), record, _bearer(SCOPED_TOKEN)
    )
    assert status == 403 and OTHER_UID in json.loads(body)["error"]
    assert scoped.request("GET", _record_path(OTHER_UID, "forged"))[0] == 404
    # Its own EdgeModel's record it may write; anyone may read it (no credentials).
    path = _record_path(UID, "own")
    assert scoped.request("PUT", path, record, _bearer(SCOPED_TOKEN))[0] == 201
    status, _, body = scoped.request("GET", path)
    assert status == 200 and json.loads(body)["artifactSha256"] == sha


def test_replacing_a_stored_record_with_an_ungated_artifact_is_409(
    scoped: ArtifactServer,
) -> None:
    gated, gated_sha = _blob("passed its gate")
    ungated, ungated_sha = _blob("never gated")
    for data, sha in ((gated, gated_sha), (ungated, ungated_sha)):
        assert scoped.request("PUT", f"/v1/artifacts/{sha}", data)[0] == 201
    path = _record_path(UID, "write-once")
    first = json.dumps({"artifactSha256": gated_sha, "report": {}}).encode()
    assert scoped.request("PUT", path, first)[0] == 201
    second = json.dumps({"artifactSha256": ungated_sha, "report": {}}).encode()
    status, _, body = scoped.request("PUT", path, second)
    assert status == 409 and "write-once" in json.loads(body)["error"]
    assert json.loads(scoped.request("GET", path)[2])["artifactSha256"] == gated_sha


def test_a_store_with_no_way_to_authenticate_writers_does_not_start(tmp_path: Path) -> None:
    result = edgemodel("artifact-server", "--root", str(tmp_path / "store"), "--port", "0")
    assert result.returncode == 2
    assert "anonymous writes are refused by default" in result.stderr


def test_token_review_outside_a_cluster_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = edgemodel(
        "artifact-server", "--root", str(tmp_path / "store"), "--port", "0", "--token-review"
    )
    assert result.returncode == 2
    assert "KUBECONFIG" in result.stderr


def test_anonymous_writes_only_with_the_explicit_insecure_flag(tmp_path: Path) -> None:
    server = ArtifactServer(
        tmp_path / "store", writers=["--insecure-allow-anonymous-writes"], token=None
    ).start()
    try:
        data, sha = _blob("anonymous but allowed")
        assert server.request("PUT", f"/v1/artifacts/{sha}", data)[0] == 201
        assert any("anonymous writes are allowed" in line for line in server.log)
    finally:
        server.stop()


def test_a_retried_job_cannot_replace_the_published_record_and_reports_the_stored_one(
    scoped: ArtifactServer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(SCOPED_TOKEN)
    digest = hashlib.sha256(b"retried revision").hexdigest()
    summaries = []
    for attempt in ("first", "second"):  # the time-bounded search found other bytes the 2nd time
        model = tmp_path / f"{attempt}.onnx"
        model.write_bytes(f"model of the {attempt} attempt".encode() * 50)
        output = tmp_path / attempt
        compress_output(output, model)
        result = edgemodel(
            "publish", str(output), "--server", scoped.url, "--revision", "r1-amd64",
            "--namespace", "ns1", "--uid", UID, "--revision-digest", digest,
            "--variant", "amd64", "--token-file", str(token),
            "--termination-log", str(tmp_path / f"{attempt}.log"),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summaries.append(json.loads(result.stdout))
    first_sha = hashlib.sha256(b"model of the first attempt" * 50).hexdigest()
    assert summaries[0]["artifactSha256"] == summaries[1]["artifactSha256"] == first_sha
    record = scoped.request("GET", f"/v1/records/ns1/{UID}/{digest}/amd64")[2]
    assert json.loads(record)["artifactSha256"] == first_sha
