"""edgemodel_runtime.sources: fetching paths, file:// and http(s):// with sha256 and size checks."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from edgemodel_runtime.sources import SourceError, fetch_to_file, normalize_sha256, sha256_file

PAYLOAD = b"edgemodel" * 5000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "model.onnx").write_bytes(PAYLOAD)
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src.bin"
    path.write_bytes(PAYLOAD)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("form", ["path", "file-uri"])
def test_local_sources_copy_and_return_digest(source: Path, tmp_path: Path, form: str) -> None:
    uri = str(source) if form == "path" else source.as_uri()
    dest = tmp_path / "out" / "model.onnx"
    assert fetch_to_file(uri, dest, expected_sha256=DIGEST.upper()) == DIGEST
    assert dest.read_bytes() == PAYLOAD
    assert sha256_file(dest) == DIGEST


def test_http_source_is_streamed_and_verified(served: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    assert fetch_to_file(f"{served}/model.onnx", dest, expected_sha256=DIGEST) == DIGEST
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == []


def test_digest_mismatch_names_both_digests_and_leaves_nothing(served: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    wrong = "0" * 64
    with pytest.raises(SourceError) as info:
        fetch_to_file(f"{served}/model.onnx", dest, expected_sha256=wrong)
    assert wrong in str(info.value) and DIGEST in str(info.value)
    assert not dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("remote", [False, True])
def test_size_limit_is_enforced(served: str, source: Path, tmp_path: Path, remote: bool) -> None:
    uri = f"{served}/model.onnx" if remote else str(source)
    with pytest.raises(SourceError, match="limit"):
        fetch_to_file(uri, tmp_path / "m.onnx", max_bytes=1000)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("/nonexistent/model.onnx", "no such file"),
        ("ftp://example.invalid/model.onnx", "unsupported scheme"),
        ("http://127.0.0.1:9/model.onnx", "cannot connect"),
    ],
)
def test_unreachable_sources_fail_in_one_line(tmp_path: Path, uri: str, problem: str) -> None:
    with pytest.raises(SourceError, match=problem) as info:
        fetch_to_file(uri, tmp_path / "m.onnx", timeout_s=5)
    assert "\n" not in str(info.value) and uri in str(info.value)


def test_http_404_is_reported(served: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_to_file(f"{served}/missing.onnx", tmp_path / "m.onnx")


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "0" * 63])
def test_malformed_digests_are_rejected(bad: str) -> None:
    with pytest.raises(SourceError, match="invalid sha256"):
        normalize_sha256(bad)


def test_credentials_and_query_tokens_never_reach_messages(served: str, tmp_path: Path) -> None:
    port = served.rsplit(":", 1)[1]
    uri = f"http://user:s3cret@127.0.0.1:{port}/missing.onnx?X-Amz-Signature=tok3n"
    with pytest.raises(SourceError) as info:
        fetch_to_file(uri, tmp_path / "m.onnx")
    message = str(info.value)
    assert "s3cret" not in message and "tok3n" not in message
    assert f"http://127.0.0.1:{port}/missing.onnx?..." in message
