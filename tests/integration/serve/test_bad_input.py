"""Bad requests get a 4xx (or the gRPC equivalent) naming the problem; the server never dies.

Each kind of bad input is sent raw over HTTP (so the body can be malformed on purpose) and as
a gRPC request; then a hypothesis fuzz test throws arbitrary bodies and headers at the HTTP
infer endpoint of the live server and checks it answers every one and still serves afterwards.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_support import Server
from tritonclient.grpc import service_pb2, service_pb2_grpc

ROW = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)


def post(
    server: Server, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        header_length = response.getheader("Inference-Header-Content-Length")
        if header_length is not None:
            payload = payload[: int(header_length)]
        return response.status, json.loads(payload)
    finally:
        connection.close()


def binary_request(
    inputs: list[dict[str, Any]], data: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": inputs}).encode()
    length = len(header) if header_length is None else header_length
    return header + data, {"Inference-Header-Content-Length": str(length)}


def good_input(**overrides: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": "input",
        "datatype": "FP32",
        "shape": [1, 64],
        "parameters": {"binary_data_size": ROW.nbytes},
    }
    tensor.update(overrides)
    return tensor


INFER = "/v2/models/digits/infer"

# (case id, path, body, headers, expected status, text the message must contain)
HTTP_CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("wrong-input-name", INFER, *binary_request([good_input(name="pixels")], ROW.tobytes()), 400,
     "unknown input 'pixels'"),
    ("wrong-dtype", INFER, *binary_request([good_input(datatype="FP64")], ROW.tobytes()), 400,
     "datatype FP64"),
    ("bytes-refused", INFER, *binary_request([good_input(datatype="BYTES")], ROW.tobytes()), 400,
     "BYTES"),
    ("wrong-shape", INFER, *binary_request(
        [good_input(shape=[1, 63], parameters={"binary_data_size": 63 * 4})],
        ROW.tobytes()[: 63 * 4]), 400, "shape [1, 63]"),
    ("missing-input", INFER, json.dumps({"inputs": []}).encode(), {}, 400, "missing input 'input'"),
    ("malformed-json", INFER, b'{"inputs": [', {}, 400, "malformed JSON"),
    ("truncated-binary", INFER, *binary_request([good_input()], ROW.tobytes()[:100]), 400,
     "binary_data_size 256 runs past the end"),
    ("header-length-too-big", INFER, *binary_request([good_input()], ROW.tobytes(), 10**6), 400,
     "Inference-Header-Content-Length"),
    ("json-count-mismatch", INFER, json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 3}]}
    ).encode(), {}, 400, "needs 64"),
    ("json-not-numbers", INFER, json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ["a"] * 64}]}
    ).encode(), {}, 400, "not a list of FP32"),
    ("unknown-output", INFER, json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}],
         "outputs": [{"name": "logits"}]}
    ).encode(), {}, 400, "unknown output 'logits'"),
    ("empty-batch-refused-by-kernel", INFER, *binary_request(
        [good_input(shape=[0, 64], parameters={"binary_data_size": 0})], b""), 400,
     "onnxruntime rejected the input"),
    ("oversized-body", INFER, b"{" + b" " * (2 << 20) + b"}", {}, 413, "exceeds the limit"),
    ("unknown-model", "/v2/models/nope/infer", *binary_request([good_input()], ROW.tobytes()),
     404, "unknown model 'nope'"),
    ("unknown-version", "/v2/models/digits/versions/7/infer",
     *binary_request([good_input()], ROW.tobytes()), 404, "unknown version '7'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [case[1:] for case in HTTP_CASES],
    ids=[case[0] for case in HTTP_CASES],
)
def test_http_bad_input(
    digits_server: Server,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    got_status, document = post(digits_server, path, body, headers)
    assert got_status == status, document
    assert message in document["error"]


def grpc_request(
    name: str = "input",
    datatype: str = "FP32",
    shape: tuple[int, ...] = (1, 64),
    raw: bytes | None = None,
    model: str = "digits",
    version: str = "",
    outputs: tuple[str, ...] = (),
) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = name, datatype
    tensor.shape.extend(shape)
    request.raw_input_contents.append(ROW.tobytes() if raw is None else raw)
    for output in outputs:
        request.outputs.add().name = output
    return request


GRPC_CASES: list[tuple[str, Any, grpc.StatusCode, str]] = [
    ("wrong-input-name", grpc_request(name="pixels"), grpc.StatusCode.INVALID_ARGUMENT,
     "unknown input 'pixels'"),
    ("wrong-dtype", grpc_request(datatype="INT32"), grpc.StatusCode.INVALID_ARGUMENT,
     "datatype INT32"),
    ("wrong-shape", grpc_request(shape=(2, 32)), grpc.StatusCode.INVALID_ARGUMENT,
     "shape [2, 32]"),
    ("truncated-raw", grpc_request(raw=ROW.tobytes()[:10]), grpc.StatusCode.INVALID_ARGUMENT,
     "got 10 bytes"),
    ("missing-input", service_pb2.ModelInferRequest(model_name="digits"),
     grpc.StatusCode.INVALID_ARGUMENT, "missing input 'input'"),
    ("unknown-output", grpc_request(outputs=("logits",)), grpc.StatusCode.INVALID_ARGUMENT,
     "unknown output 'logits'"),
    ("unknown-model", grpc_request(model="nope"), grpc.StatusCode.NOT_FOUND,
     "unknown model 'nope'"),
    ("unknown-version", grpc_request(version="3"), grpc.StatusCode.NOT_FOUND,
     "unknown version '3'"),
    ("oversized", grpc_request(shape=(1, 600_000), raw=b"\0" * 2_400_000),
     grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    [case[1:] for case in GRPC_CASES],
    ids=[case[0] for case in GRPC_CASES],
)
def test_grpc_bad_input(
    digits_server: Server, request_message: Any, code: grpc.StatusCode, message: str
) -> None:
    with grpc.insecure_channel(digits_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request_message, timeout=30)
    assert error.value.code() == code, error.value.details()
    assert message in (error.value.details() or "")


def test_grpc_metadata_unknown_model(digits_server: Server) -> None:
    with grpc.insecure_channel(digits_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"), timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


# --- fuzz --------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
# Documents shaped like an infer request, with every field possibly wrong: these get past the
# JSON parser and exercise validation, which random bytes alone rarely reach.
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x", ""]) | json_values,
        "datatype": st.sampled_from(["FP32", "FP16", "INT64", "BOOL", "BYTES", "XX"]) | json_values,
        "shape": st.lists(st.integers(-2, 70), max_size=3) | json_values,
        "data": st.lists(st.floats(width=32) | st.integers(-(2**40), 2**40), max_size=70)
        | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-5, 400) | json_values}
        )
        | json_values,
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=5) | json_values,
        "inputs": st.lists(tensors, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=2)
        | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_output", "timeout", "classification"]), json_values
        )
        | json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=600),
    documents.map(lambda d: json.dumps(d).encode()),
    st.tuples(documents, st.binary(max_size=300)).map(lambda t: json.dumps(t[0]).encode() + t[1]),
)
header_lengths = st.one_of(
    st.none(),
    st.integers(-10, 2000).map(str),
    # Visible ASCII only: http.client cannot put anything else in a header.
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=6),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, header_length=header_lengths)
def test_fuzz_http_infer(digits_server: Server, body: bytes, header_length: str | None) -> None:
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    status, document = post(digits_server, INFER, body, headers)
    if status == 200:  # the fuzzer happened to build a valid request: it must be a real answer
        assert {o["name"] for o in document["outputs"]} <= {"label", "probabilities"}
        return
    assert 400 <= status < 500, (status, document)
    assert isinstance(document.get("error"), str) and document["error"]


def test_server_still_serves_after_fuzz(digits_server: Server) -> None:
    body, headers = binary_request([good_input()], ROW.tobytes())
    status, document = post(digits_server, INFER, body, headers)
    assert status == 200, document
    assert digits_server.process.poll() is None
