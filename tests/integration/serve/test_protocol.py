"""The v2 protocol with unchanged tritonclient clients: health, metadata, config, inference.

Outputs are compared with onnxruntime run in the test process on the same rows, for HTTP
(binary and JSON tensors) and gRPC (sync, asyncio, streaming, typed contents), and every
supported datatype travels through an identity model.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from serve_support import DTYPES, Server
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgemodel_sandbox.models import ModelFixture


@pytest.fixture(scope="module")
def reference(
    digits: ModelFixture, digits_eval: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = digits_eval[:7]
    session = ort.InferenceSession(str(digits.model), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": rows})
    return rows, label, probabilities


def check(result: Any, reference: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, label, probabilities = reference
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), probabilities, rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("client_module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_health_metadata_and_config(digits_server: Server, client_module: Any) -> None:
    url = digits_server.http_url if client_module is httpclient else digits_server.grpc_url
    client = client_module.InferenceServerClient(url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("nope")
    as_json = {"as_json": True} if client_module is grpcclient else {}
    metadata = client.get_model_metadata("digits", **as_json)
    assert metadata["name"] == "digits"
    assert metadata["versions"] == ["1"]
    assert [
        (i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in metadata["inputs"]
    ] == [("input", "FP32", [-1, 64])]
    assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}
    assert client.get_model_metadata("digits", "1", **as_json)["name"] == "digits"
    config = client.get_model_config("digits", **as_json)
    config = config.get("config", config)
    assert config["name"] == "digits"
    assert int(config["max_batch_size"]) == 32
    assert [int(d) for d in config["input"][0]["dims"]] == [64]
    server_metadata = client.get_server_metadata(**as_json)
    assert "binary_tensor_data" in server_metadata["extensions"]
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_matches_onnxruntime(
    digits_server: Server, reference: Any, binary: bool
) -> None:
    rows = reference[0]
    client = httpclient.InferenceServerClient(digits_server.http_url)
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer("digits", [tensor], outputs=outputs, request_id="r-1")
    check(result, reference)
    assert result.get_response()["id"] == "r-1"
    # No outputs listed: all of them, in binary (what tritonclient asks by default).
    check(client.infer("digits", [tensor], model_version="1"), reference)
    client.close()


def test_grpc_infer_matches_onnxruntime(digits_server: Server, reference: Any) -> None:
    rows = reference[0]
    client = grpcclient.InferenceServerClient(digits_server.grpc_url)
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("digits", [tensor], request_id="g-1")
    check(result, reference)
    assert result.get_response().id == "g-1"
    client.close()


def test_async_clients(digits_server: Server, reference: Any) -> None:
    rows = reference[0]

    async def run() -> None:
        http = httpclient_aio.InferenceServerClient(digits_server.http_url)
        grpc_client = grpcclient_aio.InferenceServerClient(digits_server.grpc_url)
        try:
            assert await http.is_model_ready("digits")
            assert await grpc_client.is_model_ready("digits")
            h_in = httpclient_aio.InferInput("input", list(rows.shape), "FP32")
            h_in.set_data_from_numpy(rows)
            g_in = grpcclient_aio.InferInput("input", list(rows.shape), "FP32")
            g_in.set_data_from_numpy(rows)
            results = await asyncio.gather(
                *(http.infer("digits", [h_in]) for _ in range(4)),
                *(grpc_client.infer("digits", [g_in]) for _ in range(4)),
            )
            for result in results:
                check(result, reference)
        finally:
            await http.close()
            await grpc_client.close()

    asyncio.run(run())


def test_requested_output_subset(digits_server: Server, reference: Any) -> None:
    rows = reference[0]
    client = grpcclient.InferenceServerClient(digits_server.grpc_url)
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("digits", [tensor], outputs=[grpcclient.InferRequestedOutput("label")])
    assert [o.name for o in result.get_response().outputs] == ["label"]
    np.testing.assert_array_equal(result.as_numpy("label"), reference[1])
    client.close()


def test_grpc_stream(digits_server: Server, reference: Any) -> None:
    rows = reference[0]
    client = grpcclient.InferenceServerClient(digits_server.grpc_url)
    results: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    client.async_stream_infer("digits", [tensor])
    bad = grpcclient.InferInput("nope", list(rows.shape), "FP32")
    bad.set_data_from_numpy(rows)
    client.async_stream_infer("digits", [bad])
    client.async_stream_infer("digits", [tensor])
    got = [results.get(timeout=10) for _ in range(3)]
    client.stop_stream()
    check(got[0][0], reference)
    assert got[1][0] is None and "unknown input 'nope'" in str(got[1][1])
    check(got[2][0], reference)  # one bad request does not end the stream
    client.close()


def test_grpc_typed_contents(digits_server: Server, reference: Any) -> None:
    """Typed `contents` (not raw_input_contents), as non-tritonclient KServe clients send."""
    rows = reference[0]
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend(rows.shape)
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    with grpc.insecure_channel(digits_server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    result = grpcclient.InferResult(response)
    check(result, reference)


def _identity_inputs(module: Any, binary: bool) -> tuple[list[Any], dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    inputs, expected = [], {}
    for dtype, (_elem, np_type) in DTYPES.items():
        if np_type is np.bool_:
            value = rng.integers(0, 2, (2, 3)).astype(np.bool_)
        elif np.issubdtype(np_type, np.integer):
            info = np.iinfo(np.dtype(np_type))
            value = rng.integers(info.min, info.max, (2, 3), dtype=np_type, endpoint=True)
        else:
            value = rng.standard_normal((2, 3)).astype(np_type)
        tensor = module.InferInput(f"x_{dtype.lower()}", [2, 3], dtype)
        if module is httpclient:
            tensor.set_data_from_numpy(value, binary_data=binary)
        else:
            tensor.set_data_from_numpy(value)
        inputs.append(tensor)
        expected[f"y_{dtype.lower()}"] = value
    strings = np.array([[b"a", "\u00e9t\u00e9".encode()], [b"", b"x" * 300]], dtype=object)
    tensor = module.InferInput("s", [2, 2], "BYTES")
    if module is httpclient:
        tensor.set_data_from_numpy(strings, binary_data=binary)
    else:
        tensor.set_data_from_numpy(strings)
    inputs.append(tensor)
    expected["s_out"] = strings
    return inputs, expected


@pytest.mark.parametrize(
    ("protocol", "binary"),
    [("http", True), ("http", False), ("grpc", True)],
    ids=["http-binary", "http-json", "grpc"],
)
def test_every_datatype_round_trips(identity_server: Server, protocol: str, binary: bool) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    url = identity_server.http_url if protocol == "http" else identity_server.grpc_url
    client = module.InferenceServerClient(url)
    inputs, expected = _identity_inputs(module, binary)
    if module is httpclient:
        outputs = [module.InferRequestedOutput(name, binary_data=binary) for name in expected]
    else:
        outputs = [module.InferRequestedOutput(name) for name in expected]
    result = client.infer("identity", inputs, outputs=outputs)
    for name, value in expected.items():
        got = result.as_numpy(name)
        if value.dtype == object:
            # JSON carries strings, binary carries bytes: compare as bytes.
            as_bytes = [v.encode() if isinstance(v, str) else bytes(v) for v in got.reshape(-1)]
            assert as_bytes == [bytes(v) for v in value.reshape(-1)]
        else:
            assert got.dtype == value.dtype, name
            np.testing.assert_array_equal(got, value, err_msg=name)
    client.close()
