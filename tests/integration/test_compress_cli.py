"""`edgemodel compress` end to end through the real CLI: reports, cache hits, gate failures,
the accuracy search, http sources, and every kind of bad input (exit 2, one line, no traceback).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemodel_sandbox.models import ModelFixture
from tests.integration.conftest import CliRunner, old_opset_mlp, outlier_mlp, published


def report_of(stdout: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(stdout)
    return report


def test_report_fields_and_cache_hit(
    run_compress: CliRunner, digits: ModelFixture, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    args = (
        digits.model,
        "--output",
        out,
        "--mode",
        "dynamic-int8",
        "--eval",
        digits.evaluation,
        "--json",
    )
    first = run_compress(*args, "--sha256", digits.sha256)
    assert first.returncode == 0, first.stderr
    report = report_of(first.stdout)
    key = report["key"]
    assert isinstance(key, str)
    assert published(out) == [out / key]
    assert sorted(p.name for p in (out / key).iterdir()) == ["model.onnx", "report.json"]
    assert report["result"] == "passed" and report["cache_hit"] is False
    assert report["input"]["sha256"] == digits.sha256
    artifact = report["artifact"]
    assert isinstance(artifact, dict)
    assert artifact["sha256"] == hashlib.sha256((out / key / "model.onnx").read_bytes()).hexdigest()
    sizes = report["sizes"]
    assert (
        isinstance(sizes, dict)
        and 0 < sizes["ratio"] < 0.5
        and 0 < sizes["wire_ratio"] < sizes["ratio"]
    )
    for field in ("accuracy", "latency", "tool", "settings", "elapsed_s", "kept_in_float"):
        assert field in report
    assert report["accuracy"]["agreement"] >= 0.99
    assert report["latency"]["original_p50_ms"] > 0
    assert json.loads((out / key / "report.json").read_text())["key"] == key

    mtime = (out / key / "model.onnx").stat().st_mtime_ns
    again = run_compress(*args)
    assert again.returncode == 0, again.stderr
    hit = report_of(again.stdout)
    assert hit["cache_hit"] is True and hit["key"] == key
    assert (out / key / "model.onnx").stat().st_mtime_ns == mtime  # not recompressed

    other = run_compress(*args[:-1], "--prune-sparsity", "0.5", "--json")
    assert other.returncode == 0, other.stderr
    pruned = report_of(other.stdout)
    assert pruned["key"] != key and pruned["pruning"]["zeroed"] > 0
    assert pruned["sizes"]["wire_bytes"] < sizes["wire_bytes"]


def test_sabotaged_calibration_fails_the_gate_without_an_artifact(
    run_compress: CliRunner, digits: ModelFixture, tmp_path: Path
) -> None:
    calibration = dict(np.load(digits.calibration))
    calibration["input"] = calibration["input"] * 1000.0  # ranges 1000x too wide
    sabotaged = tmp_path / "calibration.npz"
    np.savez(sabotaged, **calibration)
    out = tmp_path / "store"
    args = (
        digits.model,
        "--output",
        out,
        "--mode",
        "static-int8",
        "--calibration",
        sabotaged,
        "--eval",
        digits.evaluation,
        "--max-accuracy-drop",
        "0.5",
        "--search-budget-seconds",
        "0",
        "--json",
    )
    result = run_compress(*args)
    assert result.returncode == 3, result.stderr
    assert "accuracy gate failed" in result.stderr and "Traceback" not in result.stderr
    report = report_of(result.stdout)
    assert report["result"] == "gate-failed"
    assert report["accuracy"]["accuracy_drop"] > 0.5
    directory = out / str(report["key"])
    assert sorted(p.name for p in directory.iterdir()) == ["report.json"]  # nothing to deploy
    # The verdict is cached like a success: same request, same answer, no recompression.
    again = run_compress(*args)
    assert again.returncode == 3 and report_of(again.stdout)["cache_hit"] is True


def test_absurd_agreement_threshold_fails_with_figures(
    run_compress: CliRunner, digits: ModelFixture, tmp_path: Path
) -> None:
    bad = dict(np.load(digits.calibration))
    bad["input"] = np.zeros_like(bad["input"])  # every range collapses to zero
    cal = tmp_path / "zeros.npz"
    np.savez(cal, **bad)
    result = run_compress(
        digits.model,
        "--output",
        tmp_path / "s",
        "--mode",
        "static-int8",
        "--calibration",
        cal,
        "--eval",
        digits.evaluation,
        "--min-agreement",
        "1.0",
        "--search-budget-seconds",
        "0",
        "--json",
    )
    assert result.returncode == 3
    report = report_of(result.stdout)
    assert report["gate"]["reasons"] and report["accuracy"]["agreement"] < 1.0


def test_search_keeps_the_sensitive_layer_in_float(run_compress: CliRunner, tmp_path: Path) -> None:
    model, data = outlier_mlp(tmp_path)
    args = (
        model,
        "--output",
        tmp_path / "s",
        "--mode",
        "dynamic-int8",
        "--eval",
        data,
        "--min-agreement",
        "0.95",
        "--json",
    )
    no_search = run_compress(*args, "--search-budget-seconds", "0")
    assert no_search.returncode == 3, no_search.stderr
    result = run_compress(*args, "--search-budget-seconds", "60")
    assert result.returncode == 0, result.stderr
    report = report_of(result.stdout)
    kept = report["kept_in_float"]
    assert isinstance(kept, list) and [k["node"] for k in kept] == ["mm1"]
    # The kept node's figure is its sensitivity in the chosen candidate (int8 kernels or
    # weight-only int8, whichever passed smaller); with int8 activations it is the outlier.
    assert kept[0]["sensitivity_relative_error"] > 0.1
    sensitivity = report["search"]["sensitivity"]
    assert sensitivity[0]["node"] == "mm1"
    assert sensitivity[0]["relative_error"] > 0.5
    assert report["accuracy"]["agreement"] >= 0.95


def test_old_opset_is_upgraded_for_per_channel_qdq(run_compress: CliRunner, tmp_path: Path) -> None:
    model, data = old_opset_mlp(tmp_path, opset=11)
    result = run_compress(
        model,
        "--output",
        tmp_path / "s",
        "--mode",
        "static-int8",
        "--calibration",
        data,
        "--eval",
        data,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert report_of(result.stdout)["effective"]["opset_upgraded_from"] == 11


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_source(
    run_compress: CliRunner, digits: ModelFixture, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, url = http_root
    (root / "model.onnx").write_bytes(digits.model.read_bytes())
    result = run_compress(
        f"{url}/model.onnx", "--output", tmp_path / "s", "--sha256", digits.sha256, "--json"
    )
    assert result.returncode == 0, result.stderr
    report = report_of(result.stdout)
    assert report["input"]["sha256"] == digits.sha256
    bad = run_compress(f"{url}/model.onnx", "--output", tmp_path / "s2", "--sha256", "0" * 64)
    assert bad.returncode == 2 and digits.sha256 in bad.stderr and "0" * 64 in bad.stderr
    assert published(tmp_path / "s2") == []


def test_calibration_and_evaluation_from_uris_are_digest_checked(
    run_compress: CliRunner, digits: ModelFixture, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    # What a compression Job runs: every input fetched by URI and pinned by its digest.
    root, url = http_root
    (root / "calibration.npz").write_bytes(digits.calibration.read_bytes())
    (root / "evaluation.npz").write_bytes(digits.evaluation.read_bytes())
    calib_sha = hashlib.sha256(digits.calibration.read_bytes()).hexdigest()
    eval_sha = hashlib.sha256(digits.evaluation.read_bytes()).hexdigest()
    result = run_compress(
        digits.model,
        "--output",
        tmp_path / "u",
        "--mode",
        "static-int8",
        "--calibration",
        f"{url}/calibration.npz",
        "--calibration-sha256",
        calib_sha,
        "--eval",
        f"{url}/evaluation.npz",
        "--eval-sha256",
        eval_sha,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert report_of(result.stdout)["accuracy"]["agreement"] > 0.95
    bad = run_compress(
        digits.model,
        "--output",
        tmp_path / "v",
        "--eval",
        f"{url}/evaluation.npz",
        "--eval-sha256",
        "0" * 64,
    )
    assert bad.returncode == 2 and eval_sha in bad.stderr and "0" * 64 in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def _bad_inputs(tmp: Path, digits: ModelFixture) -> dict[str, tuple[list[object], str]]:
    """name -> (CLI args after SOURCE-less prefix, text the one-line message must contain)."""
    not_onnx = tmp / "notes.onnx"
    not_onnx.write_text("this is not a model\n" * 20)
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(digits.model.read_bytes()[:5000])
    empty = tmp / "empty.onnx"
    empty.write_bytes(b"")
    newer = tmp / "opset99.onnx"
    unknown_op = tmp / "unknown-op.onnx"
    import onnx
    from onnx import TensorProto, helper

    def tiny(op: str, opset: int, domain: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node(op, ["x"], ["y"], domain=domain)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        )
        opsets = [helper.make_opsetid("", opset)]
        if domain:
            opsets.append(helper.make_opsetid(domain, 1))
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        return model

    newer.write_bytes(tiny("Relu", 99).SerializeToString())
    unknown_op.write_bytes(tiny("NoSuchOp", 17, domain="com.example").SerializeToString())
    ev = dict(np.load(digits.evaluation))
    wrong_name = tmp / "wrong-name.npz"
    np.savez(wrong_name, pixels=ev["input"], labels=ev["labels"])
    wrong_dtype = tmp / "wrong-dtype.npz"
    np.savez(wrong_dtype, input=ev["input"].astype(np.float64))
    wrong_shape = tmp / "wrong-shape.npz"
    np.savez(wrong_shape, input=ev["input"][:, :32])
    garbage_npz = tmp / "garbage.npz"
    garbage_npz.write_text("not an archive")
    m = digits.model
    return {
        "missing file": ([tmp / "nope.onnx"], "no such file"),
        "not onnx": ([not_onnx], "not an ONNX model"),
        "truncated": ([truncated], "not an ONNX model"),
        "empty": ([empty], "empty file"),
        "digest mismatch": ([m, "--sha256", "f" * 64], "sha256 mismatch"),
        "malformed digest": ([m, "--sha256", "xyz"], "invalid sha256"),
        "unsupported opset": ([newer], "unsupported opset 99"),
        "unsupported op": ([unknown_op], "NoSuchOp"),
        "static without calibration": ([m, "--mode", "static-int8"], "needs --calibration"),
        "eval wrong name": ([m, "--eval", wrong_name], "'pixels' is not a model input"),
        "eval wrong dtype": ([m, "--eval", wrong_dtype], "dtype float64"),
        "calibration wrong shape": (
            [m, "--mode", "static-int8", "--calibration", wrong_shape],
            "dimension 1 differs",
        ),
        "eval not npz": ([m, "--eval", garbage_npz], "not a readable .npz"),
        "eval missing": ([m, "--eval", tmp / "none.npz"], "no such file"),
        "sparsity too high": ([m, "--prune-sparsity", "0.99"], "prune-sparsity"),
        "sparsity negative": ([m, "--prune-sparsity", "-0.1"], "prune-sparsity"),
        "threshold without eval": ([m, "--min-agreement", "0.9"], "need --eval"),
        "embedding bits unsupported": ([m, "--embedding-bits", "2"], "--embedding-bits 2"),
        "embedding bits with fp16": (
            [m, "--mode", "fp16", "--embedding-bits", "4"],
            "applies to the int8 modes",
        ),
        "unknown scheme": (["s3://bucket/model.onnx"], "unsupported scheme"),
        "output is a file": ([m, "--output", digits.evaluation], "cannot create"),
    }


BAD_CASES = [
    "missing file",
    "not onnx",
    "truncated",
    "empty",
    "digest mismatch",
    "malformed digest",
    "unsupported opset",
    "unsupported op",
    "static without calibration",
    "eval wrong name",
    "eval wrong dtype",
    "calibration wrong shape",
    "eval not npz",
    "eval missing",
    "sparsity too high",
    "sparsity negative",
    "threshold without eval",
    "embedding bits unsupported",
    "embedding bits with fp16",
    "unknown scheme",
    "output is a file",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(
    run_compress: CliRunner, digits: ModelFixture, tmp_path: Path, case: str
) -> None:
    args, problem = _bad_inputs(tmp_path, digits)[case]
    out = tmp_path / "store"
    result = run_compress(args[0], "--output", out, *args[1:], timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert problem in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert published(out) == []
