"""Static int8 on a real model: per-tensor calibration ranges, and QDQ against QOperator.

The PP-OCR direction classifier (a small convolutional network) goes through onnxruntime's
static quantizer with the zoo's calibration lines. Per-tensor calibration gives each
activation the range (minmax, entropy or percentile) that quantizes its sampled values with
the least error, written as a calibration cache the quantizer reads as it would one method's.
On amd64 a passing static pick gets its QOperator twin converted, gated and timed; the twin
replaces QDQ only when measurably faster, and the report says which format won and why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgemodel_runtime.compress import Request, compress, quantize, tasks
from edgemodel_runtime.compress.calibration import PER_TENSOR, load_ranges
from edgemodel_runtime.compress.inputs import input_specs
from edgemodel_runtime.compress.runner import make_session, run_all
from edgemodel_runtime.compress.search import LATENCY_TOLERANCE
from edgemodel_runtime.compress.settings import CALIBRATION_METHODS, resolve
from edgemodel_sandbox import zoo

pytestmark = pytest.mark.slow

Entry = Callable[[str], zoo.ZooEntry]


def test_per_tensor_calibration_mixes_the_methods_ranges(zoo_entry: Entry, tmp_path: Path) -> None:
    entry = zoo_entry("ppocr-cls")
    original = onnx.load_model(str(entry.model))
    specs = input_specs(original)
    settings = resolve(
        mode="static-int8",
        target="amd64",
        calibration_sha256="pinned",
        calibration_method=None,
        evaluation_sha256=None,
        prune_sparsity=None,
        max_accuracy_drop=None,
        min_agreement=None,
        search_budget_s=0,
    )
    prepared = quantize.prepare(original, settings, tmp_path, "ppocr-cls")
    out = tmp_path / "per-tensor.onnx"
    quantize.convert(
        prepared,
        out,
        settings=settings,
        variant=quantize.Variant(calibration_method=PER_TENSOR),
        calibration=dict(np.load(entry.calibration)),
        specs=specs,
        workdir=tmp_path,
    )
    methods = {m: load_ranges(tmp_path / f"calibration-{m}.json") for m in CALIBRATION_METHODS}
    mixed = load_ranges(tmp_path / f"calibration-{PER_TENSOR}.json")
    assert set(mixed) == set(methods["minmax"])
    origin = {
        tensor: next(m for m, ranges in methods.items() if ranges[tensor] == low_high)
        for tensor, low_high in mixed.items()
    }
    assert len(set(origin.values())) >= 2  # a real mix, not one method under another name
    artifact = onnx.load_model(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in artifact.graph.node)
    data = dict(np.load(entry.evaluation))
    first = original.graph.output[0].name
    reference = run_all(make_session(entry.model), data, specs)[first]
    got = run_all(make_session(out), data, specs)[first]
    assert tasks.figures("classifier", reference, got).agreement >= 0.9


def test_a_static_pick_on_amd64_is_timed_against_its_qoperator_twin(
    zoo_entry: Entry, tmp_path: Path
) -> None:
    entry = zoo_entry("ppocr-cls")
    outcome = compress(
        Request(
            source=str(entry.model),
            output=tmp_path,
            mode="static-int8",
            target="amd64",
            calibration=entry.calibration,
            evaluation=entry.evaluation,
            output_kind=entry.spec.output_kind,
            search_budget_s=20.0,
        )
    )
    report = outcome.report
    assert outcome.passed, report["gate"]["reasons"]
    table = report["candidates"]
    twin = next(c for c in table if "QOperator" in c["recipe"])
    qdq = next(c for c in table if c["recipe"].startswith("int8 kernels") and c is not twin)
    assert twin["latency_ratio"] is not None and qdq["latency_ratio"] is not None
    assert "QOperator" in twin["note"] and "QDQ" in twin["note"]
    faster = twin["latency_ratio"] < qdq["latency_ratio"] * (1 - LATENCY_TOLERANCE)
    chosen = next(c for c in table if c["chosen"])
    if faster:
        assert "measurably faster" in twin["note"]
    else:  # QDQ is the rule: the twin is reported, never picked
        assert "QDQ kept" in twin["note"] and chosen is not twin
    layout = {n.op_type for n in onnx.load_model(str(outcome.directory / "model.onnx")).graph.node}
    assert ("QLinearConv" in layout) == ("QOperator" in chosen["recipe"])
