"""Clients cannot fake server errors or skew the SLO: every abuse is a client outcome.

An attacker's toolbox against `edgemodel serve`, each tried on a real server process: a
`parameters.timeout` of 1 µs on a slow model, absurd timeouts (400 digits, negative, the wrong
type), hanging up mid-body, input shapes onnxruntime refuses, garbage bodies. Each must get a
4xx / client gRPC status, be counted under that code in `edgemodel_requests_total`, and leave
the latency histogram (what the SLO's p95 reads) untouched. The verdict uses the operator's own
rule for what the SLO's error rate counts (`edgemodel_operator.metrics.is_error_code`), so a
mismatch between the runtime's codes and the SLO queries fails here too.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from serve_support import Server, running
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgemodel_operator.metrics import is_error_code

Scrape = dict[str, list[tuple[str, dict[str, str], float]]]


def codes(metrics: Scrape) -> dict[str, float]:
    return {
        labels["code"]: value
        for name, labels, value in metrics["edgemodel_requests"]
        if name == "edgemodel_requests_total"
    }


def timed_count(metrics: Scrape) -> float:
    return next(
        value
        for name, _labels, value in metrics["edgemodel_request_duration_seconds"]
        if name == "edgemodel_request_duration_seconds_count"
    )


def delta(before: Scrape, after: Scrape) -> dict[str, float]:
    old = codes(before)
    return {code: n - old.get(code, 0.0) for code, n in codes(after).items() if n != old.get(code)}


def assert_no_server_errors(server: Server) -> None:
    """No code the server ever recorded is one the SLO's error-rate query counts."""
    recorded = codes(server.scrape())
    assert not [code for code in recorded if is_error_code(code)], recorded


def post(server: Server, body: bytes, model: str = "") -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request("POST", f"/v2/models/{model or server.name}/infer", body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def grpc_infer(server: Server, request: Any) -> grpc.RpcError:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request, timeout=30)
    return error.value


def digits_body(**parameters: Any) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}
    return json.dumps({"inputs": [tensor], "parameters": parameters}).encode()


def digits_grpc(timeout: service_pb2.InferParameter | None = None) -> Any:
    request = service_pb2.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend([1, 64])
    request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    if timeout is not None:
        request.parameters["timeout"].CopyFrom(timeout)
    return request


def broadcast_model(path: Path) -> Path:
    """`y = x + B` with x [N, K] (K dynamic, B has 4 elements): the Add kernel takes K = 1 or 4
    and refuses any other K (onnxruntime FAIL, its "server error" class)."""
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
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def broadcast_server(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    path = broadcast_model(tmp_path_factory.mktemp("broadcast") / "broadcast.onnx")
    with running(path, "broadcast", log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server(slow_model_path: Path, log_dir: Path) -> Iterator[Server]:
    # Worker threads, so a timer can fire while onnxruntime computes.
    with running(slow_model_path, "slow", log_dir, "--execution", "thread") as server:
        yield server


# --- the client's own timeout -----------------------------------------------------------


def test_client_timeout_expiring_is_a_client_outcome(
    slow_server: Server, slow_iterations: int
) -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "n", "datatype": "INT64", "shape": [], "data": [slow_iterations]},
                {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64},
            ],
            "parameters": {"timeout": 1},  # 1 µs
        }
    ).encode()
    request = service_pb2.ModelInferRequest(model_name="slow")
    for name, datatype, shape, array in (
        ("n", "INT64", [], np.array(slow_iterations, np.int64)),
        ("x", "FP32", [1, 64], np.full((1, 64), 0.5, np.float32)),
    ):
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
        request.raw_input_contents.append(array.tobytes())
    request.parameters["timeout"].int64_param = 1
    before = slow_server.scrape()

    status, document = post(slow_server, body)
    error = grpc_infer(slow_server, request)

    assert status == 408, document
    assert "timeout parameter (1 us) expired" in document["error"]
    assert error.code() == grpc.StatusCode.CANCELLED, error.details()
    after = slow_server.scrape()
    assert delta(before, after) == {"408": 1.0, "CANCELLED": 1.0}
    assert timed_count(after) == timed_count(before), "client timeouts must not be timed"
    assert_no_server_errors(slow_server)


# --- absurd parameters ------------------------------------------------------------------

ABSURD_HTTP_TIMEOUTS = [
    pytest.param(int("9" * 400), id="400-digits"),
    pytest.param(-1, id="negative"),
    pytest.param(1.5, id="float"),
    pytest.param("soon", id="string"),
    pytest.param(True, id="bool"),
]


@pytest.mark.parametrize("timeout", ABSURD_HTTP_TIMEOUTS)
def test_absurd_http_timeout_is_400(digits_server: Server, timeout: Any) -> None:
    before = digits_server.scrape()
    status, document = post(digits_server, digits_body(timeout=timeout))
    assert status == 400, document
    assert "'timeout' must be an integer number of microseconds" in document["error"]
    assert delta(before, digits_server.scrape()) == {"400": 1.0}


ABSURD_GRPC_TIMEOUTS = [
    pytest.param(service_pb2.InferParameter(int64_param=-1), id="negative"),
    pytest.param(service_pb2.InferParameter(string_param="soon"), id="string"),
    pytest.param(service_pb2.InferParameter(bool_param=True), id="bool"),
    pytest.param(service_pb2.InferParameter(double_param=1e300), id="double"),
]


@pytest.mark.parametrize("timeout", ABSURD_GRPC_TIMEOUTS)
def test_absurd_grpc_timeout_is_invalid_argument(
    digits_server: Server, timeout: service_pb2.InferParameter
) -> None:
    before = digits_server.scrape()
    error = grpc_infer(digits_server, digits_grpc(timeout))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "'timeout'" in (error.details() or "")
    assert delta(before, digits_server.scrape()) == {"INVALID_ARGUMENT": 1.0}


# --- hanging up mid-body ----------------------------------------------------------------


def test_disconnect_mid_body_is_counted_as_client_closed(digits_server: Server) -> None:
    before = digits_server.scrape()
    clients = 5
    for _ in range(clients):
        with socket.create_connection(("127.0.0.1", digits_server.http_port)) as sock:
            sock.sendall(
                b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": ['
            )
    # The server learns of each hang-up asynchronously: wait for all of them to be counted.
    deadline = time.monotonic() + 20
    while True:
        after = digits_server.scrape()
        if delta(before, after).get("499", 0) >= clients or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert delta(before, after) == {"499": float(clients)}
    assert timed_count(after) == timed_count(before)
    assert_no_server_errors(digits_server)
    status, _document = post(digits_server, digits_body())
    assert status == 200


# --- shapes onnxruntime refuses ---------------------------------------------------------


def test_shapes_onnxruntime_rejects_are_the_clients(broadcast_server: Server) -> None:
    def body(k: int) -> bytes:
        tensor = {"name": "x", "datatype": "FP32", "shape": [1, k], "data": [1.0] * k}
        return json.dumps({"inputs": [tensor]}).encode()

    def grpc_request(k: int) -> Any:
        request = service_pb2.ModelInferRequest(model_name="broadcast")
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = "x", "FP32"
        tensor.shape.extend([1, k])
        request.raw_input_contents.append(np.ones((1, k), np.float32).tobytes())
        return request

    before = broadcast_server.scrape()
    status, document = post(broadcast_server, body(7))
    assert status == 400, document
    assert "onnxruntime rejected the input shapes (x [1, 7])" in document["error"]
    error = grpc_infer(broadcast_server, grpc_request(5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "onnxruntime rejected the input shapes" in (error.details() or "")
    status, document = post(broadcast_server, body(4))  # a K the kernel takes
    assert status == 200, document
    assert document["outputs"][0]["data"] == [2.0] * 4
    after = broadcast_server.scrape()
    assert delta(before, after) == {"400": 1.0, "INVALID_ARGUMENT": 1.0, "200": 1.0}
    assert timed_count(after) == timed_count(before) + 1, "only the accepted request is timed"
    assert_no_server_errors(broadcast_server)


# --- the mix: abuse next to real traffic ------------------------------------------------

GARBAGE = [
    b"",
    b"\xff\xfe garbage",
    b'{"inputs": [',
    b"[]",
    json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2**62, 2**62]}]}).encode(),
    json.dumps({"inputs": [{"name": "x", "datatype": "XX", "shape": [1], "data": [1]}]}).encode(),
]


def test_abuse_mix_leaves_the_slo_clean(broadcast_server: Server) -> None:
    """Real clients and attackers at once: every real request succeeds, only those are timed,
    and the error rate the SLO computes is exactly 0."""
    good = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [0.25] * 8}]}
    ).encode()
    before = broadcast_server.scrape()
    statuses: list[int] = []
    lock = threading.Lock()

    def client(bodies: list[bytes]) -> None:
        for body in bodies:
            status, _document = post(broadcast_server, body)
            with lock:
                statuses.append(status)

    def disconnecter() -> None:
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", broadcast_server.http_port)) as sock:
                sock.sendall(
                    b"POST /v2/models/broadcast/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 5000\r\n\r\n{"
                )

    abusive = [*GARBAGE * 5, digits_body(timeout=-5), digits_body(timeout=int("7" * 400))]
    threads = [threading.Thread(target=client, args=([good] * 40,)) for _ in range(2)]
    threads.append(threading.Thread(target=client, args=(abusive,)))
    threads.append(threading.Thread(target=disconnecter))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses.count(200) == 80
    assert all(status == 200 or 400 <= status < 500 for status in statuses), statuses
    deadline = time.monotonic() + 20
    while True:  # the hang-ups are counted once the server notices them
        after = broadcast_server.scrape()
        if delta(before, after).get("499", 0) >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    counted = delta(before, after)
    assert counted.pop("200") == 80
    assert counted.pop("499") == 10
    assert set(counted) <= {"400", "404"}, counted
    assert sum(counted.values()) == len(abusive)
    # What the SLO reads: the error-rate numerator stays 0, the histogram saw only real traffic.
    errors = sum(n for code, n in codes(after).items() if is_error_code(code))
    assert errors == 0
    assert timed_count(after) - timed_count(before) == 80
