"""Language models through `edgemodel compress`: 4-/8-bit weight-only modes and the LM gate.

The generated decoder (edgemodel_sandbox.decoder: Llama-shaped, KV cache, dynamic batch, sequence
and past dims) is compressed block-wise and judged on held-out byte sequences by next-token
agreement and perplexity against the fp32 model (thresholds in compress.lm_gate: agreement >=
0.70, perplexity at most 10 % higher). A decoder with outlier input channels shows why blocks are
small: one 128-value block per column lets the outliers' scale wipe out the other weights, and the
gate refuses that artifact.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgemodel_runtime.compress import Request, compress
from edgemodel_sandbox.decoder import DecoderConfig, empty_past, ensure_decoder
from tests.integration.conftest import CliRunner, published

OUTLIERS = DecoderConfig(outlier_scale=10.0)


@pytest.fixture(scope="module")
def decoder() -> Path:
    return ensure_decoder()


@pytest.fixture(scope="module")
def outlier_decoder() -> Path:
    return ensure_decoder(OUTLIERS)


def _compress(run: CliRunner, folder: Path, out: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    done = run(
        folder / "model.onnx",
        "--output",
        out,
        "--eval",
        folder / "evaluation.npz",
        "--search-budget-seconds",
        "0",
        "--json",
        *flags,
    )
    assert done.returncode in (0, 3), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def _ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load_model(str(path)).graph.node)


def _weight_matmuls(path: Path) -> int:
    model = onnx.load_model(str(path))
    weights = {init.name for init in model.graph.initializer}
    return sum(n.op_type == "MatMul" and n.input[1] in weights for n in model.graph.node)


def test_int4_weight_decoder_is_a_quarter_of_fp32_and_passes_the_lm_gate(
    run_compress: CliRunner, decoder: Path, tmp_path: Path
) -> None:
    code, report = _compress(run_compress, decoder, tmp_path, "--mode", "int4-weight")
    assert code == 0, report["gate"]
    assert report["sizes"]["ratio"] <= 0.30
    accuracy = report["accuracy"]
    assert accuracy["kind"] == "language-model"
    assert accuracy["agreement"] >= 0.70
    assert accuracy["perplexity_compressed"] <= 1.10 * accuracy["perplexity_original"]
    assert report["gate"]["min_agreement"] == 0.70
    assert report["settings"]["block_size"] == 32 and report["settings"]["symmetric"] is False
    artifact = published(tmp_path)[0] / "model.onnx"
    ops = _ops(artifact)
    assert ops["MatMulNBits"] == 15 and ops["GatherBlockQuantized"] == 1
    assert _weight_matmuls(artifact) == 0  # every weight MatMul is 4-bit now
    assert report["latency"]["compressed_p50_ms"] > 0


def test_the_compressed_decoder_still_decodes_with_its_kv_cache(
    run_compress: CliRunner, decoder: Path, tmp_path: Path
) -> None:
    code, _ = _compress(run_compress, decoder, tmp_path, "--mode", "int4-weight")
    assert code == 0
    session = ort.InferenceSession(
        str(published(tmp_path)[0] / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    ids = np.load(decoder / "evaluation.npz")["input_ids"][:1, :20]
    cfg = DecoderConfig()
    full = session.run(
        ["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids), **empty_past(cfg, 1)}
    )[0]
    outputs = session.run(
        None,
        {
            "input_ids": ids[:, :19],
            "attention_mask": np.ones((1, 19), np.int64),
            **empty_past(cfg, 1),
        },
    )
    past = {
        n.replace("present", "past_key_values"): v
        for n, v in zip(names[1:], outputs[1:], strict=True)
    }
    step = session.run(
        ["logits"], {"input_ids": ids[:, 19:], "attention_mask": np.ones((1, 20), np.int64), **past}
    )[0]
    np.testing.assert_allclose(step[:, 0], full[:, 19], atol=1e-3)


def test_int8_weight_follows_the_fp32_model_closely(
    run_compress: CliRunner, decoder: Path, tmp_path: Path
) -> None:
    code, report = _compress(
        run_compress, decoder, tmp_path, "--mode", "int8-weight", "--block-size", "128"
    )
    assert code == 0, report["gate"]
    assert report["accuracy"]["agreement"] >= 0.95
    assert report["accuracy"]["task_metric"] >= 0.99
    assert report["sizes"]["ratio"] <= 0.45
    assert report["activations"]["int8"] is False


def test_one_block_per_column_under_outlier_channels_is_refused(
    run_compress: CliRunner, outlier_decoder: Path, tmp_path: Path
) -> None:
    small, passed = _compress(
        run_compress, outlier_decoder, tmp_path / "small", "--mode", "int4-weight"
    )
    assert small == 0, passed["gate"]
    code, report = _compress(
        run_compress,
        outlier_decoder,
        tmp_path / "large",
        "--mode",
        "int4-weight",
        "--block-size",
        "128",
        "--symmetric",
    )
    assert code == 3
    assert report["result"] == "gate-failed"
    assert any("language-model agreement" in r for r in report["gate"]["reasons"])
    assert report["accuracy"]["agreement"] < passed["accuracy"]["agreement"] - 0.2
    assert not any((tmp_path / "large").glob("*/model.onnx"))  # nothing to deploy


@pytest.mark.parametrize(("mode", "min_agreement"), [("dynamic-int8", 0.9), ("fp16", 0.99)])
def test_the_other_modes_judge_a_decoder_by_its_next_tokens(
    decoder: Path, tmp_path: Path, mode: str, min_agreement: float
) -> None:
    outcome = compress(
        Request(
            source=str(decoder / "model.onnx"),
            output=tmp_path,
            mode=mode,
            evaluation=decoder / "evaluation.npz",
            search_budget_s=0,
            measure_latency=False,
        )
    )
    assert outcome.passed, outcome.report["gate"]
    accuracy = outcome.report["accuracy"]
    assert accuracy["kind"] == "language-model" and accuracy["agreement"] >= min_agreement
    assert outcome.report["gate"]["min_task_metric"] == pytest.approx(1 / 1.10)


def _int4_for(decoder: Path, out: Path, target: str) -> Path:
    outcome = compress(
        Request(
            source=str(decoder / "model.onnx"),
            output=out,
            mode="int4-weight",
            target=target,
            evaluation=decoder / "evaluation.npz",
            search_budget_s=0,
            measure_latency=False,
        )
    )
    assert outcome.passed, outcome.report["gate"]
    return outcome.directory / "model.onnx"


def test_one_int4_artifact_serves_both_cpu_architectures(decoder: Path, tmp_path: Path) -> None:
    amd64 = _int4_for(decoder, tmp_path, "amd64")
    arm64 = _int4_for(decoder, tmp_path, "arm64")
    assert amd64 != arm64 and amd64.read_bytes() == arm64.read_bytes()


def test_gpu_artifacts_keep_embedding_tables_out_of_cpu_only_kernels(
    decoder: Path, tmp_path: Path
) -> None:
    ops = _ops(_int4_for(decoder, tmp_path, "gpu"))
    assert ops["MatMulNBits"] == 15 and ops["GatherBlockQuantized"] == 0


def test_language_model_evaluation_data_must_be_token_sequences(
    run_compress: CliRunner, decoder: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.zeros((4, 1), np.int64))
    done = run_compress(
        decoder / "model.onnx", "--output", tmp_path / "out", "--mode", "int4-weight", "--eval", bad
    )
    assert done.returncode == 2
    assert "'input_ids' must be integer token ids [N, L] with L >= 2" in done.stderr
