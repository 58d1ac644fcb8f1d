"""Quantization pre-processing falls back when symbolic shape inference (or all of it) fails.

onnxruntime's pre-processor fails on some real exports (an assertion inside _infer_Reshape);
none of the generated fixtures trigger it, so this test substitutes a pre-processor that fails
the way it does there. That is the only fake in the compression tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from onnxruntime.quantization import shape_inference

from edgemodel_runtime.compress.quantize import preprocess


def test_falls_back_to_skipping_symbolic_shape_inference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []

    def fake(src: str, dst: str, *, skip_symbolic_shape: bool = False, **_: Any) -> None:
        calls.append(skip_symbolic_shape)
        if not skip_symbolic_shape:
            raise AssertionError("_infer_Reshape")
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(shape_inference, "quant_pre_process", fake)
    src = tmp_path / "in.onnx"
    src.write_bytes(b"model")
    assert preprocess(src, tmp_path / "out.onnx") == "quant_pre_process(skip_symbolic_shape)"
    assert calls == [False, True]


def test_quantizes_unprocessed_when_every_step_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("shape inference failed")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    src = tmp_path / "in.onnx"
    src.write_bytes(b"model")
    assert preprocess(src, tmp_path / "out.onnx") == "none"
    assert (tmp_path / "out.onnx").read_bytes() == b"model"
