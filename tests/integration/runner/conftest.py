"""Helpers for the pod runner's tests: manifests, waiting on objects, the runner's presence.

Every test talks to the real sandbox (kube-apiserver, controllers, scheduler, kwok) and the
real pod runner, which runs the pods' real `edgemodel` command lines as local processes.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import Cluster

RUNTIME_IMAGE = "ghcr.io/edgemodel/runtime:0.1.0"
PART_OF = {"app.kubernetes.io/part-of": "edgemodel"}
T = TypeVar("T")


@pytest.fixture(scope="session")
def runner(cluster: Cluster) -> Path:
    """The runner's state folder; skips when the sandbox was started without a runner."""
    state = cluster.sandbox.state()
    names = {p.name: p for p in state.processes} if state else {}
    if "pod-runner" not in names:
        pytest.skip("this sandbox predates the pod runner: `edgemodel sandbox down` and up again")
    assert names["pod-runner"].alive(), "the pod runner is not running; see logs/pod-runner.log"
    folder: Path = cluster.sandbox.directory / "runner"
    return folder


@pytest.fixture(scope="session")
def pod_network(runner: Path) -> ipaddress.IPv4Network:
    """The range the runner gives pod IPs from (it writes it to its state folder)."""
    text = wait_for(lambda: _read(runner / "pod-cidr"), 30, "the runner's pod range")
    return ipaddress.IPv4Network(text)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def apply(cluster: Cluster, namespace: str, *manifests: dict[str, Any]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=body)


def get(cluster: Cluster, namespace: str, *what: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = get(cluster, namespace, "pods", "-l", selector)
    return list((found or {}).get("items") or [])


def container(name: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": RUNTIME_IMAGE, "command": ["edgemodel", *args], **extra}


def pod_manifest(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {**PART_OF, "test-pod": name}},
        "spec": {"restartPolicy": "Never", "containers": list(containers), **spec},
    }


def job_manifest(
    name: str, *containers: dict[str, Any], backoff_limit: int = 0, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": dict(PART_OF)},
                "spec": {"restartPolicy": "Never", "containers": list(containers), **spec},
            },
        },
    }


def job_condition(cluster: Cluster, namespace: str, name: str) -> str | None:
    job = get(cluster, namespace, "job", name)
    for condition in ((job or {}).get("status") or {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return str(condition["type"])
    return None


def pod_phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    pod = get(cluster, namespace, "pod", name)
    phase = ((pod or {}).get("status") or {}).get("phase")
    return str(phase) if phase in ("Succeeded", "Failed") else None


def terminated(pod: dict[str, Any], container_name: str | None = None) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if container_name in (None, status["name"]):
            found: dict[str, Any] = (status.get("state") or {}).get("terminated") or {}
            return found
    return {}
