"""GPTQ, the calibrated weight-only method: error-minimising rounding on MatMulNBits' own grid.

Round to nearest keeps each weight close; GPTQ keeps the MatMul's *output* close on the
calibration activations, moving each row's rounding error onto the rows not yet rounded. The
grid, the packing and the node are onnxruntime's exactly: round-to-nearest through this
packer is bit-identical to onnxruntime's quantizer, GPTQ with no correlation between inputs
(H = I) moves no error and writes the very same artifact, and onnxruntime's MatMulNBits
kernel computes with the dequantized weights. With calibration data the pipeline builds both
and the gate keeps the better one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import matmul_nbits_quantizer as nbits

from edgemodel_runtime.compress import Request, compress, gptq, weightonly
from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.gate import Figures
from edgemodel_runtime.compress.pipeline import better_method
from edgemodel_runtime.compress.quantize import Variant
from edgemodel_runtime.compress.search import Attempt
from edgemodel_runtime.compress.settings import Settings, artifact_key, resolve

GRIDS = [(bits, symmetric) for bits in (4, 8) for symmetric in (False, True)]


def _weight(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((rows, cols)).astype(np.float32)
    weight[:32, 0] = 0.0  # an all-zero block
    weight[32:64, 1] = np.abs(weight[32:64, 1])  # a block without negative values
    weight[:, 2] *= 1e-3  # a column of tiny weights
    return weight


def _correlated(tokens: int, k: int, seed: int = 1) -> np.ndarray:
    """Activations with correlated channels and a few large ones, as a layer's inputs are."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((k, k)) / np.sqrt(k)
    x = rng.standard_normal((tokens, k)) @ mixing + 0.1 * rng.standard_normal((tokens, k))
    x[:, :4] *= 10.0
    return x


def _hessian(x: np.ndarray) -> np.ndarray:
    return 2.0 * x.T @ x / len(x)


@pytest.mark.parametrize(("bits", "symmetric"), GRIDS)
@pytest.mark.parametrize(("rows", "block_size"), [(96, 32), (96, 64), (100, 32), (128, 128)])
def test_round_to_nearest_through_this_packer_is_bit_identical_to_onnxruntime(
    bits: int, symmetric: bool, rows: int, block_size: int
) -> None:
    weight = _weight(rows, 7)
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=symmetric, bits=bits
    )
    packed, scales, zeros = nbits.DefaultWeightOnlyQuantizer(config).qbits_block_quant(weight)
    ours = gptq.pack_blocks(gptq.round_to_nearest(weight, bits, block_size, symmetric))
    assert ours[0].shape == packed.shape and np.array_equal(ours[0], packed)
    assert np.array_equal(ours[1], scales)
    if symmetric:
        assert ours[2] is None  # the kernel's default zero point, 2**(bits-1)
    else:
        assert ours[2] is not None and np.array_equal(ours[2], zeros)


@pytest.mark.parametrize(("bits", "symmetric"), GRIDS)
def test_without_correlated_inputs_gptq_moves_no_error_and_rounds_to_nearest(
    bits: int, symmetric: bool
) -> None:
    weight = _weight(100, 9)
    nearest = gptq.round_to_nearest(weight, bits, 32, symmetric)
    calibrated = gptq.gptq(weight, np.eye(100), bits=bits, block_size=32, symmetric=symmetric)
    assert np.array_equal(calibrated.levels, nearest.levels)
    assert np.array_equal(calibrated.scales, nearest.scales)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_cuts_the_output_error_on_correlated_inputs(symmetric: bool, act_order: bool) -> None:
    x = _correlated(2048, 256)
    weight = (np.random.default_rng(2).standard_normal((256, 64)) / 16).astype(np.float32)
    nearest = gptq.round_to_nearest(weight, 4, 32, symmetric).dequantized()
    calibrated = gptq.gptq(
        weight, _hessian(x), bits=4, block_size=32, symmetric=symmetric, act_order=act_order
    ).dequantized()

    def error(values: np.ndarray) -> float:
        return float(np.linalg.norm(x @ weight - x @ values))

    assert error(calibrated) < 0.7 * error(nearest)


def test_gptq_keeps_every_level_on_the_kernel_grid() -> None:
    weight = _weight(96, 16)
    blocks = gptq.gptq(
        weight, _hessian(_correlated(512, 96)), bits=4, block_size=32, symmetric=False
    )
    assert blocks.levels.dtype == np.uint8 and int(blocks.levels.max()) <= 15
    assert blocks.zero_points is not None and int(blocks.zero_points.max()) <= 15
    assert blocks.scales.shape == (3, 16) and blocks.scales.dtype == np.float32


def test_a_hessian_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Hessian \[8, 8\] does not match weight rows 16"):
        gptq.gptq(np.ones((16, 4), np.float32), np.eye(8), bits=4, block_size=32, symmetric=True)


def _nbits_model(
    packed: tuple[np.ndarray, np.ndarray, np.ndarray | None], k: int, n: int, bits: int
) -> bytes:
    names = ["B", "scales", "zeros"][: 3 if packed[2] is not None else 2]
    inits = [numpy_helper.from_array(a, name) for a, name in zip(packed, names, strict=False)]
    node = helper.make_node(
        "MatMulNBits",
        ["x", *names],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=32,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    return model.SerializeToString()


@pytest.mark.parametrize(("bits", "symmetric"), GRIDS)
def test_onnxruntime_computes_with_the_weights_gptq_chose(bits: int, symmetric: bool) -> None:
    x = _correlated(64, 96).astype(np.float32)
    blocks = gptq.gptq(_weight(96, 24), _hessian(x), bits=bits, block_size=32, symmetric=symmetric)
    session = ort.InferenceSession(
        _nbits_model(gptq.pack_blocks(blocks), 96, 24, bits), providers=["CPUExecutionProvider"]
    )
    got = session.run(["y"], {"x": x})[0]
    np.testing.assert_allclose(got, x @ blocks.dequantized()[:96], rtol=1e-4, atol=1e-3)


def _two_layer_model(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((64, 96)).astype(np.float32)
    w2 = rng.standard_normal((96, 40)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["hidden"], name="second"),
            helper.make_node("Relu", ["hidden"], ["y"], name="out"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 40])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("symmetric", [False, True])
def test_gptq_with_identity_hessians_writes_onnxruntimes_round_to_nearest_artifact(
    tmp_path: Path, symmetric: bool
) -> None:
    src = _two_layer_model(tmp_path / "m.onnx")
    plan = weightonly.WeightOnlyPlan(
        bits=4, block_size=32, symmetric=symmetric, embeddings=True, accuracy_level=4
    )
    weightonly.quantize_weight_only(src, tmp_path / "rtn.onnx", plan)
    identity = {"x": np.eye(64), "r": np.eye(96)}
    stats = weightonly.quantize_weight_only(src, tmp_path / "gptq.onnx", plan, hessians=identity)
    assert stats.matmuls == 2
    assert (tmp_path / "gptq.onnx").read_bytes() == (tmp_path / "rtn.onnx").read_bytes()


def test_hessians_are_twice_the_mean_outer_product_of_each_weight_input(tmp_path: Path) -> None:
    model = onnx.load_model(str(_two_layer_model(tmp_path / "m.onnx")))
    rng = np.random.default_rng(4)
    batches = [rng.standard_normal((5, 64)).astype(np.float32) for _ in range(3)]
    names = [node.input[0] for node, _ in weightonly.weight_matmuls(model)]
    assert names == ["x", "r"]
    hessians = gptq.collect_hessians(model, names, ({"x": b} for b in batches))
    x = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(hessians["x"], 2 * x.T @ x / 15, rtol=1e-6)
    w1 = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    r = np.maximum(x @ w1, 0)
    np.testing.assert_allclose(hessians["r"], 2 * r.T @ r / 15, rtol=1e-4, atol=1e-6)


def _attempt(method: str, agreement: float, passed: bool = True) -> Attempt:
    figures = Figures(
        output="logits",
        rows=8,
        agreement=agreement,
        accuracy_original=None,
        accuracy_compressed=None,
        accuracy_drop=None,
        cosine=1.0,
        max_abs_error=0.1,
        relative_error=1 - agreement,
    )
    reasons = () if passed else ("agreement too low",)
    return Attempt(Variant(weight_method=method), figures, reasons, Path(method))


def test_the_gate_decides_between_round_to_nearest_and_gptq() -> None:
    rtn, calibrated = _attempt("rtn", 0.944), _attempt("gptq", 0.952)
    assert better_method(rtn, calibrated) == (calibrated, rtn)
    worse = _attempt("gptq", 0.93)
    assert better_method(rtn, worse) == (rtn, worse)
    tie = _attempt("gptq", 0.944)
    assert better_method(rtn, tie) == (rtn, tie)  # round to nearest at a tie
    failed = _attempt("rtn", 0.80, passed=False)
    assert better_method(failed, worse) == (worse, failed)  # the one that passes
    unjudged = [Attempt(Variant(weight_method=m), None, (), Path(m)) for m in ("rtn", "gptq")]
    assert better_method(*unjudged) == (unjudged[1], unjudged[0])  # no evaluation data: GPTQ


def _settings(calibration: str | None = None, method: str | None = None) -> Settings:
    return resolve(
        mode="int4-weight",
        target=None,
        calibration_sha256=calibration,
        calibration_method=method,
        evaluation_sha256="e" * 64,
        prune_sparsity=None,
        max_accuracy_drop=None,
        min_agreement=None,
        search_budget_s=None,
    )


def test_weight_only_modes_key_their_calibration_data_and_take_no_method() -> None:
    calibrated = _settings("c" * 64)
    assert calibrated.calibration_sha256 == "c" * 64 and calibrated.calibration_method is None
    assert artifact_key("i" * 64, calibrated, "1") != artifact_key("i" * 64, _settings(), "1")
    with pytest.raises(CompressError, match="--calibration-method applies to static-int8"):
        _settings("c" * 64, "entropy")


def test_gptq_fitted_to_unrepresentative_calibration_rows_loses_to_round_to_nearest(
    tmp_path: Path,
) -> None:
    # Any model given calibration rows gets a GPTQ candidate; here the rows (correlated,
    # outlier channels) are not what the model is evaluated on (independent normals), GPTQ
    # fits the wrong inputs, and the gate keeps round to nearest.
    src = _two_layer_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "cal.npz", x=_correlated(256, 64).astype(np.float32))
    np.savez(tmp_path / "eval.npz", x=rng.standard_normal((64, 64)).astype(np.float32))
    outcome = compress(
        Request(
            source=str(src),
            output=tmp_path / "store",
            mode="int8-weight",
            calibration=tmp_path / "cal.npz",
            evaluation=tmp_path / "eval.npz",
            min_agreement=0.5,
            search_budget_s=0,
            measure_latency=False,
        )
    )
    report = outcome.report
    methods = [row["weight_method"] for row in report["candidates"]]
    assert methods == ["rtn", "gptq"], report["candidates"]
    chosen = [row for row in report["candidates"] if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["passed"]
    assert report["effective"]["weight_method"] == chosen[0]["weight_method"]
    rtn, calibrated = report["candidates"]
    assert rtn["agreement"] > calibrated["agreement"] and rtn["chosen"]
    assert report["effective"]["weight_method"] == "rtn"


def test_calibration_rows_must_fit_the_model_inputs(tmp_path: Path) -> None:
    src = _two_layer_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "cal.npz", wrong=np.zeros((4, 64), np.float32))
    with pytest.raises(CompressError, match="--calibration"):
        compress(
            Request(
                source=str(src),
                output=tmp_path / "store",
                mode="int4-weight",
                calibration=tmp_path / "cal.npz",
            )
        )
