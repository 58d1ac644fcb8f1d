"""`edgemodel publish` and `edgemodel fetch` end to end, as real CLI processes against a real
artifact server: compression output -> store -> node cache -> plain or Triton layout."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from edgemodel_cli.main import main as edgemodel_main
from edgemodel_runtime.sources import sha256_file
from tests.integration.artifacts.support import (
    WRITER_TOKEN,
    ArtifactServer,
    Digits,
    compress_output,
    edgemodel,
)

UID = "0b9d3a52-5c4e-4f7e-9a43-1d2c3b4a5f60"


def _digest(revision: str) -> str:
    """A full revision digest per test revision, so tests sharing a server never share a record."""
    return hashlib.sha256(revision.encode()).hexdigest()


def _record(revision: str) -> str:
    return f"/v1/records/ns1/{UID}/{_digest(revision)}/amd64"


def _key_args(tmp_path: Path, revision: str) -> list[str]:
    """Where the record goes, and the writer's credentials (a Job gets a projected token)."""
    token = tmp_path / "writer-token"
    token.write_text(WRITER_TOKEN + "\n")
    return [
        "--namespace", "ns1", "--uid", UID, "--revision-digest", _digest(revision),
        "--variant", "amd64", "--token-file", str(token),
    ]  # fmt: skip


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _publish(server: ArtifactServer, output: Path, revision: str, log: Path) -> dict[str, object]:
    result = edgemodel(
        "publish", str(output), "--server", server.url, "--revision", revision,
        "--termination-log", str(log), *_key_args(log.parent, revision),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    assert json.loads(log.read_text()) == summary
    return summary


def test_publish_end_to_end(server: ArtifactServer, digits: Digits, tmp_path: Path) -> None:
    output = tmp_path / "work"
    compress_output(output, digits.path)
    (output / ".tmp-run-host-1-x").mkdir()  # compress's temp dirs are not artifacts
    log = tmp_path / "termination-log"
    summary = _publish(server, output, "digits-7f3a", log)

    assert len(log.read_bytes()) <= 4096
    assert "\n" not in log.read_text() and " " not in log.read_text()  # compact
    assert summary == {
        "schema": "edgemodel.dev/publish-summary/v1",
        "revision": "digits-7f3a",
        "artifactSha256": digits.sha256,
        "artifactUri": f"{server.url}/v1/artifacts/{digits.sha256}",
        "sizeBytes": digits.path.stat().st_size,
        "inputBytes": digits.path.stat().st_size * 3,
        "ratio": 0.3333,
        "wireBytes": digits.path.stat().st_size // 2,
        "wireRatio": 0.1667,
        "result": "passed",
        "mode": "dynamic-int8",
        "target": "arm64",
        "key": "a" * 64,
        "accuracy": {
            "agreement": 0.9963,
            "accuracyOriginal": 97.78,
            "accuracyCompressed": 97.59,
            "accuracyDrop": 0.19,
            "cosine": 0.9999,
        },
    }
    status, _, body = server.request("GET", f"/v1/artifacts/{digits.sha256}")
    assert status == 200 and body == digits.path.read_bytes()
    status, _, body = server.request("GET", _record("digits-7f3a"))
    record = json.loads(body)
    assert record["artifactSha256"] == digits.sha256
    assert record["report"]["accuracy"]["agreement"] == 0.9963
    # The record carries the summary too, for the operator's lookup of reusable artifacts.
    assert {k: v for k, v in record.items() if k != "report"} == summary

    # Publishing again (a retried Job) is a no-op success.
    assert _publish(server, output, "digits-7f3a", log) == summary


def _run(*args: str) -> int:
    """The CLI in-process, for the quick refusals (same parser and code path)."""
    return edgemodel_main(list(args))


def test_publish_refuses_a_model_that_does_not_match_its_report(
    server: ArtifactServer, digits: Digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = compress_output(tmp_path / "work", digits.path)
    with (artifact / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    log = tmp_path / "log"
    code = _run(
        "publish", str(tmp_path / "work"), "--server", server.url, "--revision", "r1",
        "--termination-log", str(log), *_key_args(tmp_path, "r1"),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert digits.sha256 in err and len(err.strip().splitlines()) == 1
    failure = json.loads(log.read_text())
    assert failure["revision"] == "r1" and digits.sha256 in failure["error"]
    assert server.request("GET", _record("r1"))[0] == 404


@pytest.mark.parametrize("case", ["empty", "two", "gate-failed", "bad-revision", "bad-server"])
def test_publish_bad_input_exits_2(
    case: str,
    server: ArtifactServer,
    digits: Digits,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "work"
    output.mkdir()
    revision, url = "r2", server.url
    if case == "two":
        compress_output(output, digits.path, key="a" * 64)
        compress_output(output, digits.path, key="b" * 64)
    elif case == "gate-failed":
        (compress_output(output, digits.path) / "model.onnx").unlink()
    elif case == "bad-revision":
        compress_output(output, digits.path)
        revision = "Not_A_Label"
    elif case == "bad-server":
        compress_output(output, digits.path)
        url = "ftp://example"
    code = _run(
        "publish", str(output), "--server", url, "--revision", revision,
        *_key_args(tmp_path, revision),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("edgemodel publish: ") and len(err.strip().splitlines()) == 1


def test_publish_to_an_unreachable_server_exits_1(
    digits: Digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compress_output(tmp_path / "work", digits.path)
    code = _run(
        "publish", str(tmp_path / "work"), "--server", _closed_port_url(), "--revision", "r3",
        "--timeout-s", "0.6", *_key_args(tmp_path, "r3"),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "retrying" in err and "gave up after 0.6 s" in err


def _fetch(*args: str) -> tuple[int, dict[str, object], str]:
    result = edgemodel("fetch", *args)
    out = json.loads(result.stdout) if result.returncode == 0 else {}
    return result.returncode, out, result.stderr


def test_fetch_from_server_then_from_cache_when_the_server_is_gone(
    own_server: ArtifactServer, digits: Digits, tmp_path: Path
) -> None:
    compress_output(tmp_path / "work", digits.path)
    _publish(own_server, tmp_path / "work", "rev-a", tmp_path / "log")
    cache = tmp_path / "cache"
    code, out, err = _fetch(
        "--sha256", digits.sha256, "--server", own_server.url, "--cache", str(cache),
        "--dest", str(tmp_path / "models-1"),
    )  # fmt: skip
    assert code == 0, err
    assert out["cacheHit"] is False
    assert sha256_file(cache / digits.sha256 / "model.onnx") == digits.sha256
    assert sha256_file(tmp_path / "models-1" / "model.onnx") == digits.sha256
    assert [p.name for p in (cache / digits.sha256).iterdir()] == ["model.onnx"]

    # The edge site loses the cluster: a restarted pod must come up from the node cache.
    own_server.stop()
    code, out, err = _fetch(
        "--sha256", digits.sha256, "--server", own_server.url, "--cache", str(cache),
        "--dest", str(tmp_path / "models-2"), "--timeout-s", "1",
    )  # fmt: skip
    assert code == 0, err
    assert out == {
        "sha256": digits.sha256,
        "cacheHit": True,
        "layout": "plain",
        "path": str(tmp_path / "models-2" / "model.onnx"),
    }
    assert "retrying" not in err  # never tried the network
    assert sha256_file(tmp_path / "models-2" / "model.onnx") == digits.sha256


def test_corrupt_cache_entry_is_refetched(
    server: ArtifactServer, digits: Digits, tmp_path: Path
) -> None:
    compress_output(tmp_path / "work", digits.path)
    _publish(server, tmp_path / "work", "rev-b", tmp_path / "log")
    entry = tmp_path / "cache" / digits.sha256 / "model.onnx"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"bit rot")
    code, out, err = _fetch(
        "--sha256", digits.sha256, "--server", server.url, "--cache", str(tmp_path / "cache"),
        "--dest", str(tmp_path / "models"),
    )  # fmt: skip
    assert code == 0, err
    assert out["cacheHit"] is False
    assert sha256_file(entry) == digits.sha256
    assert sha256_file(tmp_path / "models" / "model.onnx") == digits.sha256


def test_fetch_triton_layout(server: ArtifactServer, digits: Digits, tmp_path: Path) -> None:
    compress_output(tmp_path / "work", digits.path)
    _publish(server, tmp_path / "work", "rev-c", tmp_path / "log")
    code, out, err = _fetch(
        "--sha256", digits.sha256, "--server", server.url, "--cache", str(tmp_path / "cache"),
        "--dest", str(tmp_path / "repo"), "--layout", "triton", "--model-name", "digits",
        "--gpu", "--fp16", "--instance-count", "2", "--max-batch-size", "32",
    )  # fmt: skip
    assert code == 0, err
    model_dir = tmp_path / "repo" / "digits"
    assert out["path"] == str(model_dir)
    assert sha256_file(model_dir / "1" / "model.onnx") == digits.sha256
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert config.name == "digits"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 32
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [64])]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.instance_group[0].count == 2
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"


def test_fetch_by_uri_refuses_other_bytes(digits: Digits, tmp_path: Path) -> None:
    wrong = "c" * 64
    code, _, err = _fetch(
        "--sha256", wrong, "--uri", digits.path.as_uri(), "--cache", str(tmp_path / "cache"),
        "--dest", str(tmp_path / "models"),
    )  # fmt: skip
    assert code == 1
    assert wrong in err and digits.sha256 in err
    assert "retrying" not in err  # a mismatch is permanent
    assert not (tmp_path / "cache" / wrong / "model.onnx").exists()
    assert not any((tmp_path / "cache" / wrong).iterdir())
    assert not (tmp_path / "models").exists()


def test_fetch_by_file_uri(
    digits: Digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(
        "fetch", "--sha256", digits.sha256, "--uri", str(digits.path),
        "--cache", str(tmp_path / "cache"), "--dest", str(tmp_path / "models"),
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert sha256_file(tmp_path / "models" / "model.onnx") == digits.sha256


def test_fetch_from_an_unreachable_server_gives_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(
        "fetch", "--sha256", "d" * 64, "--server", _closed_port_url(),
        "--cache", str(tmp_path / "cache"), "--dest", str(tmp_path / "models"),
        "--timeout-s", "0.6",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "retrying" in err and "gave up" in err


@pytest.mark.parametrize(
    "extra",
    [
        ["--sha256", "xyz"],
        ["--sha256", "e" * 64, "--uri", "ftp://host/model.onnx"],
        ["--sha256", "e" * 64],  # not cached and nowhere to fetch from
        ["--sha256", "e" * 64, "--server", "localhost:8080"],
        ["--sha256", "e" * 64, "--layout", "triton", "--model-name", "../x"],
    ],
    ids=["bad-sha", "bad-scheme", "no-source", "bad-server", "bad-model-name"],
)
def test_fetch_bad_input_exits_2(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run("fetch", *extra, "--cache", str(tmp_path / "c"), "--dest", str(tmp_path / "d"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("edgemodel fetch: ") and len(err.strip().splitlines()) == 1


def test_fetch_leaves_a_cache_shared_by_two_layouts(digits: Digits, tmp_path: Path) -> None:
    """Two pods on one node: the second reuses the first one's cache entry."""
    cache = tmp_path / "cache"
    for n, layout in enumerate(["plain", "triton"]):
        code = _run(
            "fetch", "--sha256", digits.sha256, "--uri", str(digits.path), "--cache", str(cache),
            "--dest", str(tmp_path / f"d{n}"), "--layout", layout,
        )  # fmt: skip
        assert code == 0
    shutil.rmtree(tmp_path / "d0")
    assert sha256_file(tmp_path / "d1" / "model" / "1" / "model.onnx") == digits.sha256
    assert (tmp_path / "d1" / "model" / "config.pbtxt").is_file()
