"""Every compression mode on every fixture, through the library entry point.

The BERT-shaped fixture is the 2-layer version of the benchmark's encoder (full hidden size
and vocabulary), so these runs exercise the real transformer paths: fusion, embedding Gather
quantization, fp16 with blocked ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgemodel_runtime.compress import Request, compress
from edgemodel_sandbox.models import ModelFixture

# (mode, max size ratio, min cosine) — fp16 halves weights; int8 quarters them.
EXPECT = {
    "dynamic-int8": (0.30, 0.99),
    "static-int8": (0.35, 0.98),
    "fp16": (0.65, 0.999),
    "none": (1.01, 0.99999),
}


def run_mode(
    fixture: ModelFixture, mode: str, out: Path, **request: Any
) -> tuple[dict[str, Any], Path]:
    outcome = compress(
        Request(
            source=str(fixture.model),
            output=out,
            mode=mode,
            calibration=fixture.calibration,
            evaluation=fixture.evaluation,
            search_budget_s=0,
            measure_latency=False,
            **request,
        )
    )
    assert outcome.passed, outcome.report["gate"]
    artifact = outcome.directory / "model.onnx"
    onnx.checker.check_model(str(artifact))
    ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    if mode == "none":  # portable: only standard ONNX ops, never layout-specific contrib ops
        domains = {n.domain for n in onnx.load_model(str(artifact)).graph.node}
        assert domains <= {"", "ai.onnx", "ai.onnx.ml"}, domains
    return outcome.report, artifact


@pytest.mark.parametrize("mode", list(EXPECT))
def test_digits_every_mode(digits: ModelFixture, tmp_path: Path, mode: str) -> None:
    report, _ = run_mode(digits, mode, tmp_path)
    max_ratio, min_cosine = EXPECT[mode]
    accuracy = report["accuracy"]
    assert isinstance(accuracy, dict)
    assert accuracy["cosine"] >= min_cosine
    assert accuracy["accuracy_drop"] <= 0.5  # labels exist: the gate judged real accuracy
    if mode != "fp16":  # skl2onnx's MLP keeps some fp32 around its blocked ops
        assert report["sizes"]["ratio"] <= max_ratio


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(EXPECT))
def test_bert_encoder_every_mode(bert2: ModelFixture, tmp_path: Path, mode: str) -> None:
    # Random weights on random tokens: the 2 logits sit within rounding of each other, so
    # top-1 agreement is a coin toss on a few rows; the test judges cosine and sets its own
    # agreement floor below the 0.99 that unlabelled evaluation data gets by default.
    report, artifact = run_mode(bert2, mode, tmp_path, min_agreement=0.9)
    max_ratio, min_cosine = EXPECT[mode]
    assert report["sizes"]["ratio"] <= max_ratio
    assert report["accuracy"]["cosine"] >= min_cosine
    assert report["accuracy"]["accuracy_drop"] is None  # no labels for random token ids
    if mode == "dynamic-int8":
        effective = report["effective"]
        assert isinstance(effective, dict)
        assert "Gather" in effective["quantized_op_types"]
        assert "Attention" in effective["preprocessing"]  # fused before quantizing
    if mode in ("dynamic-int8", "static-int8"):
        # CPU artifacts keep residual norms out of onnxruntime's slow SkipLayerNormalization
        # (graph.residual_sums_before_layernorm): check what the runtime actually runs.
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "as-run.onnx")
        ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        ops = {n.op_type for n in onnx.load_model(options.optimized_model_filepath).graph.node}
        assert "SkipLayerNormalization" not in ops
        assert "LayerNormalization" in ops


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8"])
def test_bert_encoder_4bit_embedding_tables(bert2: ModelFixture, tmp_path: Path, mode: str) -> None:
    def run(bits: int) -> dict[str, Any]:
        # The random-weight encoder's 2 logits sit within rounding of each other on random
        # tokens: this test judges size and cosine, and sets its own agreement floor below
        # the 0.99 default (4-bit tables flip 1-2 of its 32 rows).
        report, artifact = run_mode(
            bert2,
            mode,
            tmp_path / str(bits),
            target="arm64",
            embedding_bits=bits,
            min_agreement=0.9,
        )
        ops = [n.op_type for n in onnx.load_model(str(artifact)).graph.node]
        return {**report, "ops": ops}

    int8, four = run(8), run(4)
    assert four["effective"]["embedding_tables_4bit"] == ["Gather_embeddings.word_out"]
    assert int8["effective"]["embedding_tables_4bit"] == []
    assert four["ops"].count("GatherBlockQuantized") == 1
    # The 2-layer encoder is mostly its 30522 x 768 word table: 4-bit blocks save ~8.7 MB.
    assert four["sizes"]["ratio"] < int8["sizes"]["ratio"] - 0.04
    assert four["sizes"]["wire_ratio"] < int8["sizes"]["wire_ratio"]
    assert four["accuracy"]["cosine"] >= 0.98
    assert all(entry["node"] != "Gather_embeddings.word_out" for entry in four["kept_in_float"])


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_digits_static_int8_every_calibration_method(
    digits: ModelFixture, tmp_path: Path, method: str
) -> None:
    outcome = compress(
        Request(
            source=str(digits.model),
            output=tmp_path,
            mode="static-int8",
            calibration=digits.calibration,
            calibration_method=method,
            evaluation=digits.evaluation,
            max_accuracy_drop=1.0,
            search_budget_s=0,
            measure_latency=False,
        )
    )
    assert outcome.passed, outcome.report["gate"]
    assert outcome.report["settings"]["calibration_method"] == method


@pytest.mark.parametrize(
    ("target", "mode", "activation"),
    [("gpu", "fp16", None), ("amd64", "dynamic-int8", "uint8"), ("arm64", "dynamic-int8", "uint8")],
)
def test_target_picks_the_mode_when_none_is_given(
    digits: ModelFixture, tmp_path: Path, target: str, mode: str, activation: str | None
) -> None:
    outcome = compress(
        Request(source=str(digits.model), output=tmp_path, target=target, measure_latency=False)
    )
    settings = outcome.report["settings"]
    assert (settings["mode"], settings["activation_type"]) == (mode, activation)
    assert outcome.report["accuracy"] is None  # no --eval: nothing to gate, still passes
    assert outcome.passed


def _outside_fp16_classifier(folder: Path) -> tuple[Path, Path]:
    """A classifier with class priors past fp16's range (65504): fp16 clamps both large ones
    to 65504 and the inputs decide between them, where fp32 keeps their 10-logit gap; the
    other weights fit fp16."""
    rng = np.random.default_rng(3)
    prior = np.zeros(10, np.float32)
    prior[:2] = (70000.0, 69990.0)
    weights = {
        "w": (rng.standard_normal((512, 10)) / 2).astype(np.float32),
        "prior": prior,
    }
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["scores"]),
            helper.make_node("Add", ["scores", "prior"], ["logits"]),
        ],
        "outside_fp16",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    evaluation = folder / "evaluation.npz"
    np.savez(evaluation, input=rng.standard_normal((200, 512)).astype(np.float32))
    return model, evaluation


def test_fp16_that_loses_the_gate_falls_back_to_fp16_weights_computed_in_fp32(
    tmp_path: Path,
) -> None:
    model, evaluation = _outside_fp16_classifier(tmp_path)
    outcome = compress(
        Request(
            source=str(model),
            output=tmp_path / "store",
            mode="fp16",
            evaluation=evaluation,
            search_budget_s=30,
            measure_latency=False,
        )
    )
    report = outcome.report
    assert outcome.passed, report["gate"]
    candidates = {c["recipe"]: c for c in report["candidates"]}
    # Full fp16 clamps the priors and is refused with its figure; the fallback keeps the one
    # weight fp16 cannot hold in fp32 and gives fp32's answers.
    assert candidates["fp16"]["passed"] is False and candidates["fp16"]["agreement"] < 0.99
    fallback = candidates["fp16 weights, fp32 compute"]
    assert fallback["chosen"] and fallback["agreement"] >= 0.99 and fallback["size_ratio"] <= 0.52
    assert report["activations"]["fp16_compute"] is False
    artifact = onnx.load_model(str(outcome.directory / "model.onnx"))
    stored = sorted(i.data_type for i in artifact.graph.initializer)
    assert stored == [onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16]  # prior, w
    assert [n.op_type for n in artifact.graph.node] == ["Cast", "MatMul", "Add"]
