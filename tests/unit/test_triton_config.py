"""Triton config.pbtxt generation, checked by parsing it with Triton's own ModelConfig proto."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from edgemodel_runtime.artifacts.triton import (
    DATA_TYPES,
    DEFAULT_MAX_BATCH_SIZE,
    TritonConfigError,
    triton_config,
)

Dim = int | str | None


def _model(
    inputs: Sequence[tuple[str, int, Sequence[Dim] | None]],
    outputs: Sequence[tuple[str, int, Sequence[Dim] | None]],
) -> onnx.ModelProto:
    """Identity-wired graph: output i is Identity(input 0); only the signature matters here."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [inputs[0][0]], [name]) for name, _, _ in outputs],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def _config(model: onnx.ModelProto, **overrides: object) -> mc.ModelConfig:
    kwargs: dict[str, object] = {
        "max_batch_size": None,
        "gpu": False,
        "fp16": False,
        "instance_count": 1,
    }
    kwargs.update(overrides)
    return _parse(triton_config(model, "m", **kwargs))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def digits() -> onnx.ModelProto:
    from edgemodel_sandbox.models import digits_classifier

    return onnx.load(str(digits_classifier().model))


def test_digits_defaults(digits: onnx.ModelProto) -> None:
    config = _parse(
        triton_config(
            digits, "digits", max_batch_size=None, gpu=False, fp16=False, instance_count=1
        )
    )
    assert config.name == "digits"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    [tensor] = config.input
    assert (tensor.name, tensor.data_type, list(tensor.dims)) == ("input", mc.TYPE_FP32, [64])
    label, probabilities = config.output
    # [N] once the batch dim is dropped is rank 0: Triton wants dims [1] reshaped to [].
    assert (label.name, label.data_type, list(label.dims)) == ("label", mc.TYPE_INT64, [1])
    assert label.HasField("reshape") and list(label.reshape.shape) == []
    assert (probabilities.name, list(probabilities.dims)) == ("probabilities", [10])
    assert not probabilities.HasField("reshape")
    [group] = config.instance_group
    assert (group.kind, group.count) == (mc.ModelInstanceGroup.KIND_CPU, 1)
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert not config.HasField("optimization")


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("fp16", [False, True])
def test_instance_kind_and_tensorrt_fp16(digits: onnx.ModelProto, gpu: bool, fp16: bool) -> None:
    config = _config(digits, gpu=gpu, fp16=fp16, instance_count=3)
    [group] = config.instance_group
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    assert (group.kind, group.count) == (kind, 3)
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    if gpu and fp16:
        [trt] = accelerators
        assert trt.name == "tensorrt"
        assert dict(trt.parameters) == {"precision_mode": "FP16"}
    else:
        assert not accelerators


def test_batching_disabled_keeps_full_dims(digits: onnx.ModelProto) -> None:
    config = _config(digits, max_batch_size=0)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [-1, 64]
    assert [list(o.dims) for o in config.output] == [[-1], [-1, 10]]
    assert not config.HasField("dynamic_batching")


def test_explicit_batch_size_and_no_dynamic_batching(digits: onnx.ModelProto) -> None:
    config = _parse(
        triton_config(
            digits,
            "m",
            max_batch_size=8,
            gpu=False,
            fp16=False,
            instance_count=1,
            dynamic_batching=False,
        )
    )
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [64]
    assert not config.HasField("dynamic_batching")


def test_queue_delay(digits: onnx.ModelProto) -> None:
    config = _config(digits, max_queue_delay_us=2500)
    assert config.dynamic_batching.max_queue_delay_microseconds == 2500


def test_fixed_shapes_are_not_batched() -> None:
    model = _model(
        [("x", TensorProto.FLOAT, [1, 3, 8, 8])], [("y", TensorProto.FLOAT, [1, 3, 8, 8])]
    )
    config = _config(model)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [1, 3, 8, 8]
    assert list(config.output[0].dims) == [1, 3, 8, 8]
    assert not config.HasField("dynamic_batching")


@pytest.mark.parametrize(
    ("inputs", "outputs", "batched"),
    [
        ([["batch", 4]], [["batch", 2]], True),
        ([[None, 4]], [[None]], True),
        ([["n", 4], ["n", 1]], [["n"]], True),
        ([["n", 4], [2, 4]], [["n"]], False),  # one input with a fixed first dim
        ([["n", 4]], [[1, 2]], False),  # an output with a fixed first dim
        ([[]], [[]], False),  # scalars have no batch dim
    ],
)
def test_batching_needs_a_dynamic_first_dim_everywhere(
    inputs: list[list[Dim]], outputs: list[list[Dim]], batched: bool
) -> None:
    model = _model(
        [(f"x{i}", TensorProto.FLOAT, shape) for i, shape in enumerate(inputs)],
        [(f"y{i}", TensorProto.FLOAT, shape) for i, shape in enumerate(outputs)],
    )
    config = _config(model)
    assert config.max_batch_size == (DEFAULT_MAX_BATCH_SIZE if batched else 0)
    for tensor, shape in zip(config.input, inputs, strict=True):
        full = [d if isinstance(d, int) else -1 for d in shape]
        expected = full[1:] if batched else full
        assert list(tensor.dims) == (expected or [1])
        assert tensor.HasField("reshape") == (not expected)


def test_dynamic_inner_dims_are_minus_one() -> None:
    model = _model(
        [("tokens", TensorProto.INT64, ["b", "seq"])], [("o", TensorProto.INT64, ["b", "seq"])]
    )
    config = _config(model)
    assert list(config.input[0].dims) == [-1]
    assert list(config.output[0].dims) == [-1]


@pytest.mark.parametrize("onnx_type", sorted(DATA_TYPES), ids=TensorProto.DataType.Name)
def test_data_types(onnx_type: int) -> None:
    model = _model([("x", onnx_type, ["n", 2])], [("y", onnx_type, ["n", 2])])
    config = _config(model)
    expected = mc.DataType.Value(DATA_TYPES[onnx_type])
    assert config.input[0].data_type == expected
    assert config.output[0].data_type == expected


def test_unsupported_type_is_named() -> None:
    model = _model([("z", TensorProto.COMPLEX64, [2])], [("w", TensorProto.COMPLEX64, [2])])
    with pytest.raises(TritonConfigError, match=r"input 'z'.*COMPLEX64"):
        triton_config(model, "m", max_batch_size=None, gpu=False, fp16=False, instance_count=1)


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    """Older exporters list every weight as a graph input; Triton must not ask clients for it."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    config = _config(model)
    assert [t.name for t in config.input] == ["x"]
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE


def test_missing_output_shape_is_inferred() -> None:
    model = _model([("x", TensorProto.FLOAT, ["n", 5])], [("y", TensorProto.FLOAT, None)])
    config = _config(model)
    assert config.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert list(config.output[0].dims) == [5]


def test_output_of_unknown_rank_is_refused() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(TritonConfigError, match="unknown rank"):
        triton_config(model, "m", max_batch_size=None, gpu=False, fp16=False, instance_count=1)


@pytest.mark.parametrize(
    "overrides",
    [{"instance_count": 0}, {"max_batch_size": -1}, {"max_queue_delay_us": -5}],
)
def test_bad_arguments_are_refused(digits: onnx.ModelProto, overrides: dict[str, object]) -> None:
    with pytest.raises(TritonConfigError):
        _config(digits, **overrides)


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_tensor_name_survives_quoting(name: str) -> None:
    model = _model([(name, TensorProto.FLOAT, ["n", 2])], [("out", TensorProto.FLOAT, ["n", 2])])
    config = _parse(
        triton_config(model, name, max_batch_size=None, gpu=False, fp16=False, instance_count=1)
    )
    assert config.input[0].name == name
    assert config.name == name
