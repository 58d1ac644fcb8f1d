"""Admission and blame, decided without a server: limits, the in-flight cap, who failed.

The pure parts of the serving boundary (docs/architecture.md, "Serving boundary"): the size of
a model's largest valid request, the default in-flight cap and body budget, the container's
memory limit, the client `timeout` parameter, which outcomes are timed, the off-process JSON
decoder, and `DataPlane.admit` / the shape-blame rule on the real digits model and a model
whose kernel refuses some shapes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.serve.dataplane import (
    BODY_BUDGET_FLOOR,
    FALLBACK_REQUEST_BYTES,
    INFLIGHT_FLOOR,
    DataPlane,
    DataPlaneConfig,
    InferRequest,
    InputTensor,
    check_timeout_us,
    default_body_budget,
    default_max_inflight,
    parse_memory_limit,
    read_memory_limit,
    request_size_limit,
)
from edgemodel_runtime.serve.errors import ErrorKind, ServeError
from edgemodel_runtime.serve.metrics import ServeMetrics
from edgemodel_runtime.serve.model import OnnxModel
from edgemodel_runtime.serve.tensors import (
    DecodeFailure,
    TensorSpec,
    decode_json_document,
    from_list,
)
from edgemodel_sandbox.models import digits_classifier

MiB = 1 << 20


# --- request size limit -----------------------------------------------------------------


def test_largest_request_is_the_json_encoding_of_a_full_batch() -> None:
    image = TensorSpec("x", "FP32", (-1, 3, 224, 224))
    assert request_size_limit([image], 8, batching=True) == 8 * 150528 * 24 + 64 * 1024
    # Two inputs add up; a model without batching takes its declared shape once.
    mask = TensorSpec("m", "BOOL", (-1, 10))
    assert request_size_limit([image, mask], 2, batching=True) == (
        2 * (150528 + 10) * 24 + 64 * 1024
    )
    fixed = TensorSpec("x", "FP32", (1, 64))
    assert request_size_limit([fixed], 32, batching=False) == 64 * 24 + 64 * 1024


@pytest.mark.parametrize(
    "spec",
    [TensorSpec("x", "FP32", (-1, -1)), TensorSpec("s", "BYTES", (-1, 2))],
    ids=["dynamic-non-batch-dim", "strings"],
)
def test_no_largest_request_falls_back(spec: TensorSpec) -> None:
    assert request_size_limit([spec], 32, batching=True) == FALLBACK_REQUEST_BYTES


def test_derived_limit_is_capped() -> None:
    huge = TensorSpec("x", "FP64", (-1, 4096, 4096))
    assert request_size_limit([huge], 32, batching=True) == 1 << 30


# --- in-flight cap and body budget --------------------------------------------------------


def test_inflight_cap_grows_with_cpus_and_batch() -> None:
    assert default_max_inflight(1, 1) == INFLIGHT_FLOOR
    assert default_max_inflight(2, 32) == 4 * 2 * 32
    assert default_max_inflight(8, 1) == 32


def test_body_budget_follows_limit_and_memory() -> None:
    assert default_body_budget(MiB) == BODY_BUDGET_FLOOR
    assert default_body_budget(100 * MiB) == 400 * MiB
    # A quarter of a 1 GiB container, but always room for one largest request.
    assert default_body_budget(100 * MiB, 1 << 30) == 256 * MiB
    assert default_body_budget(100 * MiB, 200 * MiB) == 100 * MiB


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1073741824\n", 1 << 30), ("max\n", None), ("9223372036854771712", None), ("", None)],
)
def test_memory_limit_file(text: str, expected: int | None) -> None:
    assert parse_memory_limit(text) == expected


def test_memory_limit_from_v1_and_v2_layouts(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    (tmp_path / "memory" / "pod").mkdir(parents=True)
    (tmp_path / "memory" / "pod" / "memory.limit_in_bytes").write_text("536870912\n")
    proc.write_text("5:cpu:/\n4:memory:/pod\n0::/\n")
    assert read_memory_limit(proc, tmp_path) == 512 * MiB
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "memory.max").write_text("268435456\n")
    proc.write_text("0::/unified\n")
    assert read_memory_limit(proc, tmp_path) == 256 * MiB
    assert read_memory_limit(tmp_path / "missing", tmp_path) is None


# --- the client's timeout parameter ------------------------------------------------------


def test_timeout_parameter() -> None:
    assert check_timeout_us(0) is None
    assert check_timeout_us(1_500_000) == 1.5
    assert check_timeout_us((1 << 63) - 1) is not None


@pytest.mark.parametrize("value", [-1, 1 << 63, int("9" * 400), 1.5, "1", True, None])
def test_absurd_timeouts_are_refused(value: Any) -> None:
    with pytest.raises(ServeError) as error:
        check_timeout_us(value)
    assert error.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "'timeout'" in error.value.message and len(error.value.message) < 200


# --- blame ---------------------------------------------------------------------------------


def test_only_accepted_work_is_timed_and_client_outcomes_are_4xx() -> None:
    assert {kind for kind in ErrorKind if kind.timed} == {
        ErrorKind.INTERNAL,
        ErrorKind.DEADLINE_EXCEEDED,
    }
    for kind in (ErrorKind.CLIENT_TIMEOUT, ErrorKind.DISCONNECTED):
        assert 400 <= kind.http_status < 500 and kind.grpc_code == "CANCELLED"
    assert (ErrorKind.OVERLOADED.http_status, ErrorKind.OVERLOADED.grpc_code) == (
        503,
        "RESOURCE_EXHAUSTED",
    )


# --- the off-process JSON decoder --------------------------------------------------------


def test_decoder_returns_arrays_or_reasons() -> None:
    text = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
                {"name": "b", "datatype": "INT8", "shape": [1], "data": [300]},
                {"name": "c", "datatype": "XX", "shape": [1], "data": [1]},
            ]
        }
    ).encode()
    document, error = decode_json_document(text)
    assert error is None
    a, b, c = (item["data"] for item in document["inputs"])
    np.testing.assert_array_equal(a, np.array([[1, 2], [3, 4]], np.float32))
    assert isinstance(b, DecodeFailure) and "not a list of INT8" in b.message
    assert isinstance(c, DecodeFailure) and "unknown datatype" in c.message
    # What the server does with them: the array passes, the reason becomes the 400.
    assert from_list("a", "FP32", (2, 2), a) is a
    with pytest.raises(ServeError, match="not a list of INT8"):
        from_list("b", "INT8", (1,), b)
    document, error = decode_json_document(b'{"inputs": [')
    assert document is None and error is not None and error.startswith("malformed JSON")


# --- DataPlane.admit and the shape rule ----------------------------------------------------


def request(array: np.ndarray, name: str = "input", model: str = "digits") -> InferRequest:
    return InferRequest(model, "", [InputTensor(name, "FP32", array.shape, raw=array.tobytes())])


def test_admission_sheds_past_the_cap_and_the_budget() -> None:
    async def run() -> None:
        metrics = ServeMetrics(model="digits", revision="", target="")
        config = DataPlaneConfig(name="digits", max_inflight=2, max_inflight_bytes=1000)
        dataplane = DataPlane(config, metrics)
        with pytest.raises(ServeError) as error, dataplane.admit(0):
            pass
        assert error.value.kind is ErrorKind.UNAVAILABLE  # not loaded yet
        await dataplane.start(OnnxModel(digits_classifier().model))
        assert dataplane.request_limit == 32 * 64 * 24 + 64 * 1024
        with pytest.raises(ServeError) as error, dataplane.admit(dataplane.request_limit + 1):
            pass
        assert error.value.kind is ErrorKind.TOO_LARGE
        with dataplane.admit(600), dataplane.admit(100):
            with pytest.raises(ServeError) as error, dataplane.admit(0):
                pass
            assert error.value.kind is ErrorKind.OVERLOADED  # count
        with dataplane.admit(600):
            with pytest.raises(ServeError) as error, dataplane.admit(401):
                pass
            assert error.value.kind is ErrorKind.OVERLOADED  # bytes
            with dataplane.admit(400):
                pass
        assert await dataplane.drain(0.1)  # every admission was released
        await dataplane.close()

    asyncio.run(run())


def test_kernel_refusal_blames_new_shapes_only(tmp_path: Path) -> None:
    """x [N, K] + B[4]: K = 1 (the warm-up) and 4 run; the kernel's refusal of K = 7, a shape
    this process never ran, is the client's 400, not onnxruntime's FAIL as a server error."""
    bias = numpy_helper.from_array(np.ones(4, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "B"], ["y"])],
        "broadcast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")

    async def run() -> None:
        metrics = ServeMetrics(model="m", revision="", target="")
        dataplane = DataPlane(DataPlaneConfig(name="m"), metrics)
        await dataplane.start(OnnxModel(tmp_path / "m.onnx"))
        ok = await dataplane.infer(request(np.ones((2, 4), np.float32), "x", "m"))
        assert ok.outputs[0][1].shape == (2, 4)
        with pytest.raises(ServeError) as error:
            await dataplane.infer(request(np.ones((1, 7), np.float32), "x", "m"))
        assert error.value.kind is ErrorKind.INVALID_ARGUMENT
        assert "rejected the input shapes (x [1, 7])" in error.value.message
        await dataplane.close()

    asyncio.run(run())
