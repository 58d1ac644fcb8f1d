"""The dataplane on the real digits model: validation messages, batching, readiness, drain.

No server process here: requests are built as the protocol layers build them and driven
through `DataPlane.infer` on an asyncio loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgemodel_runtime.serve.dataplane import DataPlane, DataPlaneConfig, InferRequest, InputTensor
from edgemodel_runtime.serve.errors import ErrorKind, ServeError
from edgemodel_runtime.serve.metrics import ServeMetrics
from edgemodel_runtime.serve.model import OnnxModel
from edgemodel_sandbox.models import ModelFixture, digits_classifier


@pytest.fixture(scope="module")
def digits() -> ModelFixture:
    return digits_classifier()


@pytest.fixture(scope="module")
def model(digits: ModelFixture) -> OnnxModel:
    return OnnxModel(digits.model)


def rows(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 64), dtype=np.float32)


def request(array: np.ndarray, **overrides: Any) -> InferRequest:
    tensor = InputTensor("input", "FP32", array.shape, raw=array.tobytes())
    fields: dict[str, Any] = {"model_name": "digits", "model_version": "", "inputs": [tensor]}
    fields.update(overrides)
    return InferRequest(**fields)


async def started(model: OnnxModel, **config: Any) -> DataPlane:
    metrics = ServeMetrics(model="digits", revision="r", target="t", max_batch_size=32)
    dataplane = DataPlane(DataPlaneConfig(name="digits", **config), metrics)
    await dataplane.start(model)
    return dataplane


@pytest.mark.parametrize("execution", ["inline", "thread"])
@pytest.mark.parametrize("max_batch_size", [0, 8])
def test_results_match_onnxruntime_and_batches_merge(
    model: OnnxModel, digits: ModelFixture, execution: str, max_batch_size: int
) -> None:
    session = ort.InferenceSession(str(digits.model))
    inputs = [rows(1 + i % 3, seed=i) for i in range(12)]

    async def run() -> tuple[list[Any], DataPlane]:
        dataplane = await started(
            model, max_batch_size=max_batch_size, execution=execution, max_queue_delay_s=0.01
        )
        responses = await asyncio.gather(*(dataplane.infer(request(x)) for x in inputs))
        await dataplane.close()
        return list(responses), dataplane

    responses, dataplane = asyncio.run(run())
    for x, response in zip(inputs, responses, strict=True):
        label, probabilities = session.run(None, {"input": x})
        got = dict((spec.name, array) for spec, array in response.outputs)
        np.testing.assert_array_equal(got["label"], label)
        np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=1e-7)
    executions = dataplane.metrics.batch_size._sum.get()  # rows run
    assert executions == sum(x.shape[0] for x in inputs)
    if max_batch_size:
        # 12 concurrent requests with a queue delay: fewer executions than requests.
        assert dataplane.batching
        count = sum(b.get() for b in dataplane.metrics.batch_size._buckets)
        assert count < len(inputs)
        assert max(1, count) >= -(-executions // max_batch_size)


@pytest.mark.parametrize(
    ("overrides", "kind", "message"),
    [
        ({"model_name": "other"}, ErrorKind.NOT_FOUND, "unknown model 'other'"),
        ({"model_version": "2"}, ErrorKind.NOT_FOUND, "unknown version '2'"),
        ({"inputs": []}, ErrorKind.INVALID_ARGUMENT, "missing input 'input'"),
        (
            {"inputs": [InputTensor("x", "FP32", (1, 64), raw=b"\0" * 256)]},
            ErrorKind.INVALID_ARGUMENT,
            "unknown input 'x'",
        ),
        (
            {"inputs": [InputTensor("input", "FP16", (1, 64), raw=b"\0" * 128)]},
            ErrorKind.INVALID_ARGUMENT,
            "datatype FP16 does not match the model's FP32",
        ),
        (
            {"inputs": [InputTensor("input", "BYTES", (1, 64), values=["a"] * 64)]},
            ErrorKind.INVALID_ARGUMENT,
            "BYTES (string) data is not accepted",
        ),
        (
            {"inputs": [InputTensor("input", "FP32", (64,), raw=b"\0" * 256)]},
            ErrorKind.INVALID_ARGUMENT,
            "shape [64] does not match the model's [-1, 64]",
        ),
        (
            {"inputs": [InputTensor("input", "FP32", (1, 64), raw=b"\0" * 255)]},
            ErrorKind.INVALID_ARGUMENT,
            "got 255 bytes",
        ),
        (
            {
                "inputs": [
                    InputTensor("input", "FP32", (1, 64), raw=b"\0" * 256),
                    InputTensor("input", "FP32", (1, 64), raw=b"\0" * 256),
                ]
            },
            ErrorKind.INVALID_ARGUMENT,
            "given more than once",
        ),
        ({"output_names": ["logits"]}, ErrorKind.INVALID_ARGUMENT, "unknown output 'logits'"),
    ],
)
def test_validation_errors(
    model: OnnxModel, overrides: dict[str, Any], kind: ErrorKind, message: str
) -> None:
    async def run() -> None:
        dataplane = await started(model)
        try:
            with pytest.raises(ServeError) as error:
                await dataplane.infer(request(rows(1), **overrides))
            assert error.value.kind is kind
            assert message in error.value.message
        finally:
            await dataplane.close()

    asyncio.run(run())


def test_requested_outputs_in_request_order(model: OnnxModel) -> None:
    async def run() -> list[str]:
        dataplane = await started(model)
        response = await dataplane.infer(request(rows(2), output_names=["probabilities", "label"]))
        await dataplane.close()
        return [spec.name for spec, _ in response.outputs]

    assert asyncio.run(run()) == ["probabilities", "label"]


def test_ready_only_after_start_and_not_while_draining(model: OnnxModel) -> None:
    async def run() -> None:
        metrics = ServeMetrics(model="digits", revision="", target="")
        dataplane = DataPlane(DataPlaneConfig(name="digits"), metrics)
        assert not dataplane.ready
        with pytest.raises(ServeError) as error:
            dataplane.model_metadata("digits")
        assert error.value.kind is ErrorKind.UNAVAILABLE
        await dataplane.start(model)
        assert dataplane.ready and dataplane.model_ready("digits", "1")
        assert not dataplane.model_ready("other")
        with dataplane.track():
            dataplane.stop_accepting()
            assert not dataplane.ready
            with pytest.raises(ServeError) as error:
                await dataplane.infer(request(rows(1)))
            assert error.value.kind is ErrorKind.UNAVAILABLE
            assert not await dataplane.drain(0.05)  # one request still in flight
        assert await dataplane.drain(0.05)
        await dataplane.close()

    asyncio.run(run())


def test_model_config_hides_batch_dim_only_when_batching(model: OnnxModel) -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        batching = await started(model, max_batch_size=16)
        plain = await started(model, max_batch_size=0)
        configs = batching.model_config("digits"), plain.model_config("digits", "1")
        await batching.close()
        await plain.close()
        return configs

    batching, plain = asyncio.run(run())
    assert batching["max_batch_size"] == 16 and batching["input"][0]["dims"] == [64]
    assert "dynamic_batching" in batching
    assert plain["max_batch_size"] == 0 and plain["input"][0]["dims"] == [-1, 64]
    assert batching["input"][0]["data_type"] == "TYPE_FP32"
