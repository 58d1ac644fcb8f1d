"""Process lifecycle: load from a URL with sha256, ready only after load, timeouts, drain.

The slow model (a Loop whose trip count is an input, calibrated to about a second) stands in
for a long inference, so SIGTERM really arrives while requests are in flight.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_support import start_server, wait_ready
from tritonclient.utils import InferenceServerException

from edgemodel_sandbox.models import ModelFixture


def slow_inputs(module: Any, iterations: int) -> list[Any]:
    n = module.InferInput("n", [], "INT64")
    n.set_data_from_numpy(np.array(iterations, dtype=np.int64))
    x = module.InferInput("x", [1, 64], "FP32")
    x.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32))
    return [n, x]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None  # connection refused: the listener is closed


def test_sigterm_drains_in_flight_requests(
    slow_model_path: Path, slow_iterations: int, log_dir: Path
) -> None:
    server = start_server(slow_model_path, "slow", log_dir, "--execution", "thread")
    results: dict[str, Any] = {}

    def call(protocol: str) -> None:
        try:
            if protocol == "http":
                client: Any = httpclient.InferenceServerClient(
                    server.http_url, network_timeout=60, connection_timeout=60
                )
                module: Any = httpclient
            else:
                client, module = grpcclient.InferenceServerClient(server.grpc_url), grpcclient
            results[protocol] = client.infer("slow", slow_inputs(module, slow_iterations))
        except Exception as exc:
            results[protocol] = exc

    threads = [threading.Thread(target=call, args=(p,)) for p in ("http", "grpc")]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            inflight = server.scrape()["edgemodel_inflight_requests"][0][2]
            if inflight == 2:
                break
            time.sleep(0.02)
        assert inflight == 2, "both slow requests should be in flight"
        server.process.send_signal(15)  # SIGTERM
        time.sleep(0.2)
        # Not ready any more (the listener is closed, or it answers 503), still finishing work.
        assert http_status(f"http://{server.http_url}/v2/health/ready") in (None, 503)
        assert server.process.poll() is None
        code = server.process.wait(60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        for thread in threads:
            thread.join(60)
    assert code == 0, server.output()
    for protocol in ("http", "grpc"):
        result = results[protocol]
        assert not isinstance(result, Exception), f"{protocol}: {result!r}"
        y = result.as_numpy("y")
        assert y.shape == (1, 64) and np.isfinite(y).all()
    assert "drained=True" in server.output()


def test_request_timeout(slow_model_path: Path, slow_iterations: int, log_dir: Path) -> None:
    server = start_server(
        slow_model_path, "slow", log_dir, "--execution", "thread", "--request-timeout-s", "0.2"
    )
    try:
        http_client = httpclient.InferenceServerClient(server.http_url)
        with pytest.raises(InferenceServerException) as error:
            http_client.infer("slow", slow_inputs(httpclient, slow_iterations))
        assert error.value.status() == "504"
        assert "did not finish within 0.2 s" in error.value.message()
        grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as error:
            grpc_client.infer("slow", slow_inputs(grpcclient, slow_iterations))
        assert error.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        # A fast request on the same server still works once the abandoned runs (which
        # onnxruntime cannot interrupt) have left the worker threads.
        deadline = time.monotonic() + 30
        while True:
            try:
                result = grpc_client.infer("slow", slow_inputs(grpcclient, 1))
                break
            except InferenceServerException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert result.as_numpy("y").shape == (1, 64)
    finally:
        assert server.stop() == 0


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files after a pause, so the server's loading window is long enough to observe."""

    delay = 2.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def model_url(digits: ModelFixture) -> Iterator[str]:
    handler = partial(_SlowHandler, directory=str(digits.model.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{digits.model.name}"
    finally:
        httpd.shutdown()


def test_loads_from_url_verified_and_ready_only_after_load(
    model_url: str, digits: ModelFixture, log_dir: Path, tmp_path: Path
) -> None:
    server = start_server(
        model_url,
        "digits",
        log_dir,
        "--sha256",
        digits.sha256,
        "--model-cache",
        str(tmp_path),
        ready=False,
    )
    try:
        base = f"http://{server.http_url}"
        deadline = time.monotonic() + 30
        while http_status(f"{base}/v2/health/live") != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Live while the model downloads, but not ready, and inference says so.
        assert http_status(f"{base}/v2/health/live") == 200
        assert http_status(f"{base}/v2/health/ready") == 503
        assert http_status(f"{base}/v2/models/digits/ready") == 503
        wait_ready(server)
        assert (tmp_path / digits.sha256 / "model.onnx").is_file()
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("input", [1, 64], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 64), np.float32))
        assert client.infer("digits", [tensor]).as_numpy("label").shape == (1,)
    finally:
        assert server.stop() == 0


def test_sha256_mismatch_exits_2(model_url: str, log_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        model_url, "digits", log_dir, "--sha256", "0" * 64, "--model-cache", str(tmp_path),
        ready=False,
    )  # fmt: skip
    assert server.process.wait(60) == 2
    assert "sha256 mismatch" in server.output()


def test_missing_model_exits_2(log_dir: Path, tmp_path: Path) -> None:
    server = start_server(tmp_path / "absent.onnx", "digits", log_dir, ready=False)
    assert server.process.wait(60) == 2
    assert "no such file" in server.output()


@pytest.mark.parametrize("taken", ["--http-port", "--grpc-port"])
def test_port_in_use_exits_1(digits: ModelFixture, taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = {"--http-port": "0", "--grpc-port": "0", "--metrics-port": "0"}
        ports[taken] = str(holder.getsockname()[1])
        command = [
            sys.executable, "-m", "edgemodel_cli.main", "serve", str(digits.model),
            "--name", "digits", "--host", "127.0.0.1",
            *(item for pair in ports.items() for item in pair),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "cannot listen" in done.stderr
