"""The runtime image runs in a real container runtime: containerd + runc from Debian.

The image's OCI archive (both platforms) is imported into a containerd of the test's own and
run as the Helm chart runs it: uid 10001, read-only root filesystem, no capabilities, no new
privileges, the model mounted read-only at /models and a writable /tmp. On amd64 it serves the
digits model to tritonclient over HTTP and gRPC from the host, answering as onnxruntime does
here; the arm64 image runs under qemu-user (binfmt registered for the test and restored after)
and answers too, from a process that is arm64 code. Every entry point of the image starts
under the chart's constraints even without /tmp. Stopping the containerd leaves no container,
task, shim, mount or cgroup behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from edgemodel_sandbox.cluster import free_port
from edgemodel_sandbox.containerd import Containerd, Mount, shim_socket
from edgemodel_sandbox.image.build import BuiltImage
from edgemodel_sandbox.models import ModelFixture, digits_classifier

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd and runc need root"),
]

MODEL_NAME = "digits"
TIMINGS: dict[str, float] = {}


@dataclass
class Served:
    """A container running `edgemodel serve` on host ports."""

    name: str
    http_port: int
    grpc_port: int
    metrics_port: int
    ready_s: float

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    containerd = Containerd(tmp_path_factory.mktemp("containerd"))
    containerd.start()
    try:
        yield containerd
    finally:
        containerd.stop()


@pytest.fixture(scope="module")
def image(daemon: Containerd, runtime_image: BuiltImage) -> str:
    """The runtime image (conftest: built or re-assembled by the image build API), imported."""
    start = time.monotonic()
    refs = daemon.import_image(runtime_image.path, all_platforms=True)
    TIMINGS["import_s"] = time.monotonic() - start
    assert runtime_image.ref in refs
    return runtime_image.ref


@pytest.fixture(scope="module")
def digits() -> ModelFixture:
    return digits_classifier()


@pytest.fixture(scope="module")
def models(digits: ModelFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A /models folder uid 10001 can read (pytest's temp folders are root's, mode 0700)."""
    folder = tmp_path_factory.mktemp("models")
    shutil.copyfile(digits.model, folder / "model.onnx")
    folder.chmod(0o755)
    (folder / "model.onnx").chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def reference(digits: ModelFixture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.load(digits.evaluation)["input"][:5].astype(np.float32)
    session = ort.InferenceSession(str(digits.model), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": rows})
    return rows, label, probabilities


def wait_ready(daemon: Containerd, served: Served, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{served.http_url}/v2/health/ready"
    while time.monotonic() < deadline:
        if daemon.status(served.name) != "RUNNING":
            raise AssertionError(f"{served.name} stopped:\n{daemon.logs(served.name)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{served.name} not ready after {timeout}s:\n{daemon.logs(served.name)}")


def serve_command(http: int, grpc: int, metrics: int) -> list[str]:
    """The chart's server command line, on host ports of 127.0.0.1 (host network)."""
    return [
        "edgemodel", "serve", "/models/model.onnx", "--name", MODEL_NAME,
        "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
        "--metrics-port", str(metrics),
    ]  # fmt: skip


def serve(
    daemon: Containerd, image: str, models: Path, name: str, platform: str, timeout: float
) -> Served:
    http, grpc, metrics = free_port(), free_port(), free_port()
    start = time.monotonic()
    daemon.run(
        name,
        image,
        serve_command(http, grpc, metrics),
        env={"EDGEMODEL_REVISION": "r1", "EDGEMODEL_TARGET": platform.split("/")[1]},
        platform=platform,
        mounts=[Mount(models, "/models")],
        tmpfs=["/tmp"],
    )
    served = Served(name, http, grpc, metrics, 0.0)
    wait_ready(daemon, served, timeout)
    served.ready_s = time.monotonic() - start
    return served


@pytest.fixture(scope="module")
def amd64(daemon: Containerd, image: str, models: Path) -> Iterator[Served]:
    served = serve(daemon, image, models, "serve-amd64", "linux/amd64", timeout=120)
    TIMINGS["amd64_ready_s"] = served.ready_s
    yield served
    daemon.delete(served.name)


@pytest.fixture(scope="module")
def arm64(daemon: Containerd, image: str, models: Path) -> Iterator[Served]:
    from edgemodel_sandbox.image.binfmt import qemu_aarch64

    with qemu_aarch64():
        served = serve(daemon, image, models, "serve-arm64", "linux/arm64", timeout=600)
        TIMINGS["arm64_ready_s"] = served.ready_s
        yield served
        daemon.delete(served.name)


def infer_http(url: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    client = httpclient.InferenceServerClient(url, network_timeout=300, connection_timeout=300)
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(MODEL_NAME, [tensor])
    client.close()
    return result.as_numpy("label"), result.as_numpy("probabilities")


def check(
    got: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    np.testing.assert_array_equal(got[0], reference[1])
    np.testing.assert_allclose(got[1], reference[2], rtol=1e-4, atol=1e-6)


# --- amd64, natively -------------------------------------------------------------------------


def test_amd64_runs_as_the_chart_would(daemon: Containerd, amd64: Served) -> None:
    probe = daemon.exec(
        amd64.name,
        "python3",
        "-c",
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "status = pathlib.Path('/proc/self/status').read_text().splitlines()\n"
        "print([l.split()[1] for l in status if l.startswith(('CapEff', 'NoNewPrivs'))])\n"
        "for path in ('/probe', '/tmp/probe', '/models/probe'):\n"
        "    try:\n"
        "        open(path, 'w').close(); print(path, 'writable')\n"
        "    except OSError as error:\n"
        "        print(path, error.strerror)\n",
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[0] == "10001 10001"
    assert lines[1] == "['0000000000000000', '1']"
    assert lines[2:] == [
        "/probe Read-only file system",
        "/tmp/probe writable",
        "/models/probe Read-only file system",
    ]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_amd64_answers_tritonclient_from_the_host(
    amd64: Served, reference: tuple[np.ndarray, np.ndarray, np.ndarray], protocol: str
) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(amd64.http_url if protocol == "http" else amd64.grpc_url)
    as_json = {"as_json": True} if protocol == "grpc" else {}
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL_NAME)
        metadata = client.get_model_metadata(MODEL_NAME, **as_json)
        assert metadata["name"] == MODEL_NAME
        assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [("input", "FP32")]
        assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}
        rows = reference[0]
        tensor = module.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = client.infer(MODEL_NAME, [tensor])
        check((result.as_numpy("label"), result.as_numpy("probabilities")), reference)
    finally:
        client.close()


@pytest.mark.parametrize(
    "command",
    [
        ["edgemodel", "--help"],
        ["edgemodel", "serve", "--help"],
        ["edgemodel", "compress", "--help"],
        ["edgemodel", "artifact-server", "--help"],
        ["edgemodel", "operator", "--help"],
    ],
    ids=lambda c: " ".join(c[1:]),
)
def test_entry_points_start_without_tmp(daemon: Containerd, image: str, command: list[str]) -> None:
    """No /tmp, read-only root, HOME not writable: every entry point still starts."""
    name = "-".join(["entry", *(word.strip("-") for word in command[1:])])
    result = daemon.call(name, image, command, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage:" in result.stdout


def test_serve_starts_without_tmp(daemon: Containerd, image: str, models: Path) -> None:
    """`edgemodel serve` itself needs no writable path: it serves with no /tmp at all."""
    http = free_port()
    name = "serve-no-tmp"
    daemon.run(
        name,
        image,
        serve_command(http, free_port(), free_port()),
        mounts=[Mount(models, "/models")],
    )
    try:
        wait_ready(daemon, Served(name, http, 0, 0, 0.0), timeout=120)
    finally:
        daemon.delete(name)


# --- arm64, under qemu-user ------------------------------------------------------------------


def test_arm64_serves_an_inference_under_qemu(
    daemon: Containerd,
    arm64: Served,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    start = time.monotonic()
    got = infer_http(arm64.http_url, reference[0])
    TIMINGS["arm64_first_inference_s"] = time.monotonic() - start
    check(got, reference)


def test_arm64_container_runs_arm64_code(daemon: Containerd, arm64: Served) -> None:
    machine = daemon.exec(arm64.name, "python3", "-c", "import platform; print(platform.machine())")
    assert machine.stdout.strip() == "aarch64", machine.stderr
    uname = daemon.exec(arm64.name, "uname", "-m")
    assert uname.stdout.strip() == "aarch64", uname.stderr
    # Seen from the host, the server (the init's child) is executed by qemu-user.
    init = daemon.pid(arm64.name)
    children = [
        entry
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and parent_of(entry) == init
    ]
    assert [os.readlink(child / "exe") for child in children] == ["/usr/bin/qemu-aarch64-static"]


def parent_of(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


# --- tidy ------------------------------------------------------------------------------------


def test_stopping_leaves_nothing_behind(daemon: Containerd, amd64: Served, arm64: Served) -> None:
    """Last: containers still run; stop must remove them, their shims, mounts and cgroups."""
    names = [amd64.name, arm64.name]
    sockets = [shim_socket(daemon.address, daemon.namespace, name) for name in names]
    assert daemon.shim_pids()
    assert all(socket.exists() for socket in sockets)
    assert daemon.mounts()
    daemon.stop()
    assert daemon.process is None
    assert daemon.shim_pids() == []
    assert daemon.mounts() == []
    assert not any(socket.exists() for socket in sockets)
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{daemon.namespace}/{names[0]}"))
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{daemon.namespace}/{names[1]}"))
    assert not (daemon.directory / "state").exists()
    assert not (daemon.directory / "root").exists()
    print("\ntimings:", {key: round(value, 2) for key, value in TIMINGS.items()})
