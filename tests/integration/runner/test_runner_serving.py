"""Runtime servers run for real: `edgemodel serve` binds the pod IP the runner hands out,
turns Ready through its readiness probe, appears in the Service's EndpointSlice, answers
inference, is scraped by Prometheus, is restarted by a failing liveness probe, and stops
when its pod is deleted. Service hosts in a container's args reach a ready endpoint.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.cluster import port_open
from edgemodel_sandbox.models import ModelFixture, digits_classifier
from tests.conftest import Cluster, processes_mentioning
from tests.integration.runner.conftest import (
    PART_OF,
    apply,
    container,
    get,
    job_condition,
    job_manifest,
    pod_manifest,
    pods,
    wait_for,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture(scope="module")
def digits() -> ModelFixture:
    return digits_classifier()


def serve_container(model: ModelFixture, **extra: Any) -> dict[str, Any]:
    return container(
        "server",
        "serve",
        str(model.model),
        "--name=digits",
        "--host=$(POD_IP)",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
        "--execution=inline",
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        ports=[
            {"name": "http", "containerPort": 8000},
            {"name": "grpc", "containerPort": 8001},
            {"name": "metrics", "containerPort": 8002},
        ],
        **extra,
    )


def deployment(model: ModelFixture) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 1}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "digits"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "digits"}},
            "template": {
                "metadata": {
                    "labels": {**PART_OF, "app": "digits"},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "8002",
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [
                        serve_container(
                            model,
                            readinessProbe=probe,
                            livenessProbe={
                                "tcpSocket": {"port": 8000},
                                "periodSeconds": 2,
                                "initialDelaySeconds": 1,
                            },
                        )
                    ],
                },
            },
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "digits"},
    "spec": {
        "selector": {"app": "digits"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    },
}


def ready_pod(cluster: Cluster, namespace: str) -> dict[str, Any] | None:
    for pod in pods(cluster, namespace, "app=digits"):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        if conditions.get("Ready") == "True":
            return pod
    return None


def http_json(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        loaded: dict[str, Any] = json.loads(response.read())
        return loaded


def test_deployment_serves_on_its_pod_ip_and_stops_on_delete(
    cluster: Cluster,
    namespace: str,
    runner: Path,
    digits: ModelFixture,
    pod_network: ipaddress.IPv4Network,
) -> None:
    apply(cluster, namespace, deployment(digits), SERVICE)
    pod = wait_for(lambda: ready_pod(cluster, namespace), 90, "a Ready digits pod")
    ip = pod["status"]["podIP"]
    assert ipaddress.IPv4Address(ip) in pod_network
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["started"] and "running" in status["state"]

    def endpoint_ready() -> bool:
        slices = get(
            cluster, namespace, "endpointslices", "-l", "kubernetes.io/service-name=digits"
        )
        for item in (slices or {}).get("items") or []:
            for endpoint in item.get("endpoints") or []:
                if ip in endpoint["addresses"] and endpoint["conditions"].get("ready"):
                    return any(p["port"] == 8000 for p in item.get("ports") or [])
        return False

    # The API server refuses loopback endpoints: only a routed pod range can be published.
    if not pod_network.is_loopback:
        wait_for(endpoint_ready, 30, f"the EndpointSlice to list {ip} ready")

    metadata = http_json(f"http://{ip}:8000/v2/models/digits")
    assert metadata["name"] == "digits"
    answer = http_json(
        f"http://{ip}:8000/v2/models/digits/infer",
        {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]},
    )
    assert {o["name"] for o in answer["outputs"]} >= {"label", "probabilities"}

    # Prometheus discovers the pod through the API server and scrapes its metrics port.
    if cluster.prometheus_url:
        query = urllib.request.quote(f'up{{namespace="{namespace}"}}')

        def scraped() -> bool:
            result = http_json(f"{cluster.prometheus_url}/api/v1/query?query={query}")
            return any(r["value"][1] == "1" for r in result["data"]["result"])

        wait_for(scraped, 45, "Prometheus to scrape the pod", every=1.0)

    # Deleting the pod stops its process (SIGTERM: serve drains and exits) and removes it.
    uid = pod["metadata"]["uid"]
    name = pod["metadata"]["name"]
    cluster.kubectl("delete", "pod", "-n", namespace, name, "--wait=false")

    def gone() -> bool:
        found = get(cluster, namespace, "pod", name)
        return found is None or found["metadata"]["uid"] != uid

    wait_for(gone, 30, "the pod to be deleted")
    assert not port_open(8000, ip)
    assert not processes_mentioning(f"--host={ip} ")
    # The ReplicaSet's replacement runs again, on an address of its own.
    replacement = wait_for(lambda: ready_pod(cluster, namespace), 90, "the replacement")
    assert replacement["metadata"]["uid"] != uid
    assert port_open(8000, replacement["status"]["podIP"])


def test_failing_liveness_probe_restarts_the_container(
    cluster: Cluster, namespace: str, runner: Path, digits: ModelFixture
) -> None:
    server = serve_container(
        digits,
        livenessProbe={
            "httpGet": {"path": "/no-such-path", "port": "http"},
            "initialDelaySeconds": 2,
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    apply(cluster, namespace, pod_manifest("live", server, restartPolicy="Always"))

    def restarted() -> dict[str, Any] | None:
        found = get(cluster, namespace, "pod", "live")
        for status in ((found or {}).get("status") or {}).get("containerStatuses") or []:
            if status["restartCount"] >= 1:
                return dict(status)
        return None

    status = wait_for(restarted, 60, "a liveness restart")
    last = status["lastState"]["terminated"]
    assert last["exitCode"] in (0, 137, 143)
    found = get(cluster, namespace, "pod", "live")
    assert found is not None and found["status"]["phase"] == "Running"
    assert found["status"]["podIP"]


class _Files(BaseHTTPRequestHandler):
    model: bytes = b""
    seen: list[str] = []

    def do_GET(self) -> None:
        _Files.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.model)))
        self.end_headers()
        self.wfile.write(self.model)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def file_server(
    digits: ModelFixture, pod_network: ipaddress.IPv4Network
) -> Iterator[tuple[str, int]]:
    """A plain HTTP server outside the cluster: on this host's end of the pod network's veth,
    which pods reach through their namespace's default route (network.Plumbing.host_ip)."""
    if pod_network.is_loopback:
        pytest.skip("loopback pod range: EndpointSlices refuse loopback addresses")
    _Files.model = digits.model.read_bytes()
    _Files.seen = []
    address = str(pod_network.network_address + 128 * 256 + 1)
    server = ThreadingHTTPServer((address, 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield address, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_service_hosts_are_rewritten_to_a_ready_endpoint(
    cluster: Cluster,
    namespace: str,
    runner: Path,
    digits: ModelFixture,
    file_server: tuple[str, int],
) -> None:
    address, port = file_server
    # A Service without selector and a hand-made EndpointSlice: kube-proxy's view of an
    # external file server. Service port 80 maps to the server's real port by name.
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "files"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]},
    }
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "files-1", "labels": {"kubernetes.io/service-name": "files"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
    }
    apply(cluster, namespace, service, endpoint_slice)
    url = f"http://files.{namespace}.svc.cluster.local/models/digits.onnx"
    job = job_manifest(
        "fetch",
        container(
            "c",
            "compress",
            url,
            f"--sha256={digits.sha256}",
            "--mode=none",
            "--output=/out",
            terminationMessagePolicy="FallbackToLogsOnError",
            volumeMounts=[{"name": "out", "mountPath": "/out"}],
        ),
        volumes=[{"name": "out", "emptyDir": {}}],
    )
    apply(cluster, namespace, job)
    result = wait_for(lambda: job_condition(cluster, namespace, "fetch"), 90, "Job fetch")
    if result != "Complete":
        (pod,) = pods(cluster, namespace, "job-name=fetch")
        raise AssertionError(f"fetch failed: {pod['status']['containerStatuses']}")
    assert "/models/digits.onnx" in _Files.seen


def test_triton_runs_from_the_pytriton_wheel(
    cluster: Cluster, namespace: str, runner: Path
) -> None:
    from edgemodel_sandbox.runner.main import find_triton

    if find_triton() is None:
        pytest.skip("nvidia-pytriton is not installed: Triton pods wait as not runnable")
    triton = {
        "name": "triton",
        "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
        "command": ["tritonserver"],
        "args": [
            "--model-repository=/models",
            "--http-address=$(POD_IP)",
            "--grpc-address=$(POD_IP)",
            "--metrics-address=$(POD_IP)",
            "--strict-readiness=false",
        ],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8000}],
        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 1,
        },
    }
    pod = pod_manifest(
        "triton",
        triton,
        restartPolicy="Always",
        volumes=[{"name": "models", "emptyDir": {}}],
    )
    apply(cluster, namespace, pod)

    def ready() -> dict[str, Any] | None:
        found = get(cluster, namespace, "pod", "triton")
        conditions = ((found or {}).get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return found
        return None

    found = wait_for(ready, 60, "Triton Ready")
    ip = found["status"]["podIP"]
    assert http_json(f"http://{ip}:8000/v2")["name"] == "triton"
