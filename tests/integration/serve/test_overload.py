"""Overload is shed, not absorbed: the in-flight cap, the model-derived size limit, the flood.

`edgemodel serve` admits a request before reading its body or refuses it at once: past the
in-flight cap with 503 + Retry-After (HTTP) / RESOURCE_EXHAUSTED (gRPC), past the model's
largest valid request with 413. The flood test is the issue's: 32 clients posting ~16 MB JSON
bodies at a server confined to a real 1 GiB cgroup memory limit; every answer is 2xx/4xx/503,
the server survives (no OOM kill), and its health endpoint answers within a kubelet probe's
1 s timeout throughout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from serve_support import Server, free_port, running, wait_ready
from tritonclient.grpc import service_pb2, service_pb2_grpc

MiB = 1 << 20


def post(server: Server, body: bytes, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout)
    try:
        connection.request("POST", f"/v2/models/{server.name}/infer", body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def sample(server: Server, family: str, sample_name: str, **labels: str) -> float:
    return sum(
        value
        for name, got, value in server.scrape()[family]
        if name == sample_name and all(got.get(k) == v for k, v in labels.items())
    )


def slow_body(iterations: int) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "n", "datatype": "INT64", "shape": [], "data": [iterations]},
                {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64},
            ]
        }
    ).encode()


# --- the in-flight cap ------------------------------------------------------------------


def test_past_the_inflight_cap_requests_are_shed(
    slow_model_path: Path, slow_iterations: int, log_dir: Path
) -> None:
    with running(
        slow_model_path, "slow", log_dir, "--execution", "thread", "--max-inflight", "2"
    ) as server:
        results: list[int] = []
        busy = [
            threading.Thread(
                target=lambda: results.append(post(server, slow_body(2 * slow_iterations))[0])
            )
            for _ in range(2)
        ]
        for thread in busy:
            thread.start()
        deadline = time.monotonic() + 20
        while sample(server, "edgemodel_inflight_requests", "edgemodel_inflight_requests") < 2:
            assert time.monotonic() < deadline, "the two slow requests never got in flight"
            time.sleep(0.02)

        status, headers, payload = post(server, slow_body(1))
        assert status == 503, payload
        assert headers.get("Retry-After") == "1"
        assert "at capacity (2 requests in flight)" in json.loads(payload)["error"]
        request = service_pb2.ModelInferRequest(model_name="slow")
        for name, datatype, shape, array in (
            ("n", "INT64", [], np.array(1, np.int64)),
            ("x", "FP32", [1, 64], np.zeros((1, 64), np.float32)),
        ):
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = name, datatype
            tensor.shape.extend(shape)
            request.raw_input_contents.append(array.tobytes())
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(request, timeout=30)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at capacity" in (error.value.details() or "")
            # Health and metadata are not inference: they answer while inference is shed.
            assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5).live
        url = f"http://{server.http_url}/v2/health/ready"
        with urllib.request.urlopen(url, timeout=1) as response:
            assert response.status == 200

        for thread in busy:
            thread.join()
        assert results == [200, 200]
        status, _headers, payload = post(server, slow_body(1))  # capacity is back
        assert status == 200, payload
        # Both protocols count a shed request under the one code SHED (not 503 or
        # RESOURCE_EXHAUSTED), which the SLO's error rate leaves out (serve/errors.py).
        assert sample(server, "edgemodel_requests", "edgemodel_requests_total", code="SHED") == 2
        for code in ("503", "RESOURCE_EXHAUSTED"):
            assert sample(server, "edgemodel_requests", "edgemodel_requests_total", code=code) == 0
        # Shed requests are counted but never timed: only the three that ran are.
        count = "edgemodel_request_duration_seconds_count"
        assert sample(server, "edgemodel_request_duration_seconds", count) == 3


# --- the request size limit follows the model -------------------------------------------


def test_default_request_limit_follows_the_model(digits_eval: np.ndarray, log_dir: Path) -> None:
    from edgemodel_sandbox.models import digits_classifier

    # digits: input [-1, 64] FP32, batches of up to 32 rows: the largest valid request is
    # 32 x 64 numbers, JSON-encoded (24 bytes each at most) plus the envelope: 112 KiB.
    limit = 32 * 64 * 24 + 64 * 1024
    with running(digits_classifier().model, "digits", log_dir) as server:
        rows = digits_eval[:32]
        largest = json.dumps(
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [32, 64], "data": rows.tolist()}
                ]
            }
        ).encode()
        status, _headers, payload = post(server, largest)
        assert status == 200, payload
        too_big = (
            json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [64, 64], "data": []}]}
            ).encode()
            + b" " * limit
        )
        status, _headers, payload = post(server, too_big)
        assert status == 413, payload
        assert f"exceeds the limit of {limit} bytes" in json.loads(payload)["error"]
        assert f"max_request_bytes={limit}" in server.output()


# --- the flood --------------------------------------------------------------------------


@dataclass
class MemoryCgroup:
    """A cgroup (v1 or v2) with a memory limit, created for one test and removed after."""

    path: Path
    v2: bool

    def wrap(self, command: list[str]) -> list[str]:
        """`command`, run inside this cgroup (the shell joins it, then execs the command)."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *command]

    def peak_bytes(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text())

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[MemoryCgroup]:
    if os.geteuid() != 0:
        pytest.skip("creating a memory cgroup needs root")
    name = f"edgemodel-overload-{os.getpid()}"
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").is_file():
        cgroup = MemoryCgroup(v1 / name, v2=False)
        cgroup.path.mkdir()
        (cgroup.path / "memory.limit_in_bytes").write_text(str(limit))
    elif "memory" in Path("/sys/fs/cgroup/cgroup.subtree_control").read_text().split():
        cgroup = MemoryCgroup(Path("/sys/fs/cgroup") / name, v2=True)
        cgroup.path.mkdir()
        (cgroup.path / "memory.max").write_text(str(limit))
        (cgroup.path / "memory.swap.max").write_text("0")
    else:
        pytest.skip("no cgroup memory controller on this machine")
    try:
        yield cgroup
    finally:
        # Everything the server started (its decoder process too) goes with the cgroup.
        for pid in (cgroup.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            try:
                cgroup.path.rmdir()
                break
            except OSError:  # still has a (dying) process
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def image_model(path: Path) -> Path:
    """`y = sum(x)` per row, x [N, 3, 224, 224] FP32: an image-sized input, trivial compute."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0, noop_with_empty_axes=0)],
        "image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    graph.node[0].input.append("axes")
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def start_in_cgroup(model: Path, cgroup: MemoryCgroup, log_dir: Path) -> Server:
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    log = log_dir / f"serve-flood-{http}.log"
    command = [
        sys.executable, "-m", "edgemodel_cli.main", "serve", str(model), "--name", "image",
        "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc_port),
        "--metrics-port", str(metrics), "--intra-op-threads", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(cgroup.wrap(command), stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, "image", http, grpc_port, metrics, log)
    try:
        wait_ready(server)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return server


@pytest.mark.slow
def test_json_flood_is_shed_within_the_memory_limit(tmp_path: Path, log_dir: Path) -> None:
    clients, posts_each, limit = 32, 2, 1 << 30
    rows = np.random.default_rng(0).random((5, 3, 224, 224), dtype=np.float32)
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(rows.shape),
                     "data": rows.tolist()}]}
    ).encode()  # fmt: skip
    assert 14 * MiB < len(body) < 18 * MiB  # "~16 MB"
    expected = rows.astype(np.float64).sum(axis=(1, 2, 3))

    with memory_cgroup(limit) as cgroup:
        server = start_in_cgroup(image_model(tmp_path / "image.onnx"), cgroup, log_dir)
        try:
            statuses: list[int] = []
            failures: list[str] = []
            probes: list[bool] = []
            flooding = threading.Event()
            flooding.set()
            lock = threading.Lock()

            def client() -> None:
                for _ in range(posts_each):
                    try:
                        status, _headers, payload = post(server, body, timeout=120)
                    except OSError as exc:
                        with lock:
                            failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if status == 200:
                        got = json.loads(payload)["outputs"][0]["data"]
                        np.testing.assert_allclose(got, expected, rtol=1e-3)
                    with lock:
                        statuses.append(status)

            def prober() -> None:
                url = f"http://{server.http_url}/v2/health/live"
                while flooding.is_set():
                    try:  # a kubelet probe's default timeoutSeconds is 1
                        with urllib.request.urlopen(url, timeout=1) as response:
                            probes.append(response.status == 200)
                    except OSError:
                        probes.append(False)
                    time.sleep(0.1)

            probe = threading.Thread(target=prober)
            probe.start()
            threads = [threading.Thread(target=client) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            flooding.clear()
            probe.join()

            alive = server.process.poll() is None
            peak = cgroup.peak_bytes()
            print(
                f"flood: statuses={ {s: statuses.count(s) for s in set(statuses)} } "
                f"failures={len(failures)} probes={len(probes)} ok={sum(probes)} "
                f"peak={peak / MiB:.0f} MiB oom_kills={cgroup.oom_kills()}"
            )
            assert alive, server.output()[-3000:]
            assert cgroup.oom_kills() == 0
            assert not failures, failures[:5]
            assert len(statuses) == clients * posts_each
            assert all(s < 300 or 400 <= s < 500 or s == 503 for s in statuses), statuses
            assert 200 in statuses, "some of the flood must be served"
            assert 503 in statuses, "32 x 16 MB must not all be admitted at once"
            assert probes and all(probes), f"{probes.count(False)} of {len(probes)} probes failed"
            status, _headers, payload = post(server, body)  # still serving after the flood
            assert status == 200, payload
        finally:
            server.process.kill()
            server.process.wait()
