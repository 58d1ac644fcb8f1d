"""Block-wise weight-only quantization (`int4-weight`, `int8-weight`): the request and the math.

The EdgeModel fields reaching the compression Job, the settings a request resolves to, the
block quantizer's rounding and packing (pure numpy), and which Gathers count as embedding
tables: token-id lookups are quantized, tables looked up at computed positions (rotary cos/sin)
are not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemodel_operator import builders
from edgemodel_operator.api import parse_spec
from edgemodel_operator.settings import Settings
from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.settings import artifact_key, resolve
from edgemodel_runtime.compress.weightonly import (
    block_quantize_gathers,
    pack,
    quantize_blocks,
)


def test_block_fields_reach_the_compression_job_for_every_target() -> None:
    spec = parse_spec(
        {
            "model": {"uri": "https://x/m.onnx", "sha256": "3" * 64},
            "targets": [{"name": "cpu", "arch": "arm64"}],
            "compression": {"quantization": "int4-weight", "blockSize": 64, "symmetric": True},
        }
    )
    for variant in ("arm64", "amd64", "gpu"):
        job = builders.compression_job("m", "ns", "uid", spec, "r1", variant, Settings())
        args = list(job["spec"]["template"]["spec"]["initContainers"][0]["args"])
        assert args[args.index("--mode") + 1] == "int4-weight"
        assert args[args.index("--block-size") + 1] == "64" and "--symmetric" in args


def _resolve(**kwargs: object) -> object:
    base: dict[str, object] = {
        "mode": "int4-weight",
        "target": None,
        "calibration_sha256": None,
        "calibration_method": None,
        "evaluation_sha256": None,
        "prune_sparsity": None,
        "max_accuracy_drop": None,
        "min_agreement": None,
        "search_budget_s": None,
    }
    base.update(kwargs)
    return resolve(**base)  # type: ignore[arg-type]


def test_weight_modes_default_to_32_value_asymmetric_blocks() -> None:
    settings = _resolve()
    assert (settings.block_size, settings.symmetric) == (32, False)  # type: ignore[attr-defined]
    eight = _resolve(mode="int8-weight", block_size=128, symmetric=True)
    assert (eight.block_size, eight.symmetric) == (128, True)  # type: ignore[attr-defined]


def test_block_size_and_symmetry_are_part_of_the_artifact_key() -> None:
    keys = {
        artifact_key("0" * 64, _resolve(**variant), "1")  # type: ignore[arg-type]
        for variant in ({}, {"block_size": 64}, {"symmetric": True}, {"mode": "int8-weight"})
    }
    assert len(keys) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_size": 48}, "--block-size 48 is not supported"),
        ({"mode": "dynamic-int8", "block_size": 32}, "--block-size/--symmetric apply to"),
        ({"mode": "fp16", "symmetric": True}, "not --mode fp16"),
    ],
)
def test_bad_weight_only_requests_name_the_flag(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CompressError, match=message):
        _resolve(**kwargs)


def _dequantize(
    levels: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bits: int, block: int
) -> np.ndarray:
    zero = (1 << (bits - 1)) if zeros is None else np.repeat(zeros, block, axis=1)
    return (levels.astype(np.float32) - zero) * np.repeat(scales, block, axis=1)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_block_rounding_error_is_at_most_half_a_step(bits: int, symmetric: bool) -> None:
    values = np.random.default_rng(0).standard_normal((16, 128)).astype(np.float32)
    levels, scales, zeros = quantize_blocks(values, bits, 32, symmetric)
    assert levels.max() < (1 << bits)
    assert scales.shape == (16, 4)
    assert (zeros is None) == symmetric
    error = np.abs(_dequantize(levels, scales, zeros, bits, 32) - values)
    assert np.all(error <= np.repeat(scales, 32, axis=1) / 2 + 1e-6)


def test_one_outlier_spoils_only_its_own_block() -> None:
    values = np.random.default_rng(1).standard_normal((1, 128)).astype(np.float32) * 0.1
    values[0, 0] = 50.0
    restored = {}
    for block in (32, 128):
        levels, scales, zeros = quantize_blocks(values, 4, block, True)
        restored[block] = _dequantize(levels, scales, zeros, 4, block)[0, 32:]
    # Blocks of 32: the other blocks keep their own small scale.
    assert np.abs(restored[32] - values[0, 32:]).max() < 0.02
    # One block of 128: the outlier's scale (50 / 7) rounds every small value to zero.
    assert not restored[128].any()


def test_four_bit_levels_pack_two_per_byte_low_nibble_first() -> None:
    packed = pack(np.array([[1, 2, 3, 15, 7]], np.uint8), 4)
    assert packed.tolist() == [[0x21, 0xF3, 0x07]]
    assert pack(np.array([[200, 3]], np.uint8), 8).tolist() == [[200, 3]]


def test_columns_must_fill_whole_blocks() -> None:
    with pytest.raises(ValueError, match="not a multiple of block size 32"):
        quantize_blocks(np.zeros((2, 48), np.float32), 4, 32, True)


def _lookup_model(table: np.ndarray, positions: np.ndarray) -> onnx.ModelProto:
    """Token ids -> embedding table; a second table looked up at computed positions."""
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["tokens"], name="token_lookup"),
        helper.make_node("Shape", ["input_ids"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["seq"], name="seq_len"),
        helper.make_node("Range", ["zero", "seq", "one"], ["pos"], name="range"),
        helper.make_node("Gather", ["rope", "pos"], ["angles"], name="rope_lookup"),
    ]
    graph = helper.make_graph(
        nodes,
        "lookups",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [
            helper.make_tensor_value_info("tokens", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("angles", TensorProto.FLOAT, None),
        ],
        [
            numpy_helper.from_array(table, "embed"),
            numpy_helper.from_array(positions, "rope"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("symmetric", [True, False])
def test_token_tables_become_block_quantized_lookups(tmp_path: Path, symmetric: bool) -> None:
    rng = np.random.default_rng(2)
    table = rng.standard_normal((300, 64)).astype(np.float32)
    rope = rng.standard_normal((64, 64)).astype(np.float32)
    model = _lookup_model(table, rope)
    converted = block_quantize_gathers(model, 4, 32, symmetric, ())
    assert converted == ["token_lookup"]  # the rotary table is read at positions: left alone
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "lookup.onnx"
    onnx.save_model(model, str(path))
    ids = np.array([[0, 5, 299]], np.int64)
    tokens, angles = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids}
    )
    levels, scales, zeros = quantize_blocks(table, 4, 32, symmetric)
    expected = _dequantize(levels, scales, zeros, 4, 32)[ids]
    np.testing.assert_allclose(tokens, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(angles, rope[:3])
