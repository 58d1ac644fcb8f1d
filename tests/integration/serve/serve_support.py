"""Helpers for `edgemodel serve` end-to-end tests: real server processes and real models.

Each server is the real command line (`python -m edgemodel_cli.main serve ...`) on 127.0.0.1
free ports, reached with the real clients (tritonclient HTTP and gRPC, raw HTTP for malformed
bodies). Models are the digits MLP fixture plus small onnx.helper graphs built here: an
identity model covering every datatype (and a string input), and a deliberately slow model
(a Loop whose trip count is an input) for drain and timeout tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from edgemodel_sandbox.cluster import free_port

# Every datatype the server must carry, with its ONNX element type and numpy dtype.
DTYPES: dict[str, tuple[int, type[np.generic]]] = {
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "INT8": (TensorProto.INT8, np.int8),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "BOOL": (TensorProto.BOOL, np.bool_),
}


@dataclass
class Server:
    """A running `edgemodel serve` process and its addresses."""

    process: subprocess.Popen[bytes]
    name: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def scrape(self) -> dict[str, list[tuple[str, dict[str, str], float]]]:
        """Parsed /metrics: family name -> [(sample name, labels, value)]."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
            text = response.read().decode()
        return {
            family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
            for family in text_string_to_metric_families(text)
        }

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{server.http_url}/v2/health/ready"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}:\n{server.output()}"
            )
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.output()}")


def start_server(
    model: Path | str,
    name: str,
    log_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready: bool = True,
) -> Server:
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = log_dir / f"serve-{name}-{http}.log"
    command = [
        sys.executable, "-m", "edgemodel_cli.main", "serve", str(model), "--name", name,
        "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
        "--metrics-port", str(metrics), "--intra-op-threads", "1", *args,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = Server(process, name, http, grpc, metrics, log)
    if ready:
        try:
            wait_ready(server)
        except BaseException:
            server.process.kill()
            server.process.wait()
            raise
    return server


@contextlib.contextmanager
def running(
    model: Path | str, name: str, log_dir: Path, *args: str, **kw: object
) -> Iterator[Server]:
    server = start_server(model, name, log_dir, *args, **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


# --- models ------------------------------------------------------------------------------


def identity_model(path: Path) -> Path:
    """One model, one identity per datatype (`x_<dtype>` -> `y_<dtype>`, shape [-1, 3]),
    plus a string identity `s` -> `s_out` so BYTES has a model that takes it."""
    nodes, inputs, outputs = [], [], []
    for dtype, (elem, _np) in DTYPES.items():
        name = dtype.lower()
        inputs.append(helper.make_tensor_value_info(f"x_{name}", elem, ["N", 3]))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", elem, ["N", 3]))
        nodes.append(helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]))
    inputs.append(helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 2]))
    outputs.append(helper.make_tensor_value_info("s_out", TensorProto.STRING, ["N", 2]))
    nodes.append(helper.make_node("Identity", ["s"], ["s_out"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def slow_model(path: Path) -> Path:
    """`y = loop n times: x = tanh(x @ W)`, with `n` an input: a request as slow as we ask."""
    width = 64
    weights = numpy_helper.from_array(
        (np.random.default_rng(0).standard_normal((width, width)) / width).astype(np.float32), "W"
    )
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["v_in", "W"], ["mm"]),
            helper.make_node("Tanh", ["mm"], ["v_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, width]),
        ],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "cond", "x"], ["y"], body=body)],
        "slow",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        initializer=[weights, cond],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
