"""The runner's own life: when it stops, every container process stops with it; when it
comes back, it adopts the pods it ran, keeps their IPs and restarts them (restartCount + 1).

This test stops and restarts the session sandbox's runner in place (same command line as
`edgemodel sandbox up` uses, recorded in the sandbox's state so `down` still stops it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.cluster import port_open
from edgemodel_sandbox.models import digits_classifier
from tests.conftest import Cluster, processes_mentioning
from tests.integration.runner.conftest import apply, container, get, pod_manifest, wait_for

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def ready_status(cluster: Cluster, namespace: str, restarts: int) -> dict[str, Any] | None:
    pod = get(cluster, namespace, "pod", "server")
    status = (pod or {}).get("status") or {}
    for entry in status.get("containerStatuses") or []:
        if entry["ready"] and entry["restartCount"] == restarts:
            return dict(status)
    return None


def test_runner_restart_stops_then_adopts_its_pods(
    cluster: Cluster, namespace: str, runner: Path
) -> None:
    model = digits_classifier()
    server = container(
        "server",
        "serve",
        str(model.model),
        "--name=digits",
        "--host=$(POD_IP)",
        "--execution=inline",
        env=[{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        readinessProbe={"tcpSocket": {"port": 8000}, "periodSeconds": 1},
    )
    apply(cluster, namespace, pod_manifest("server", server, restartPolicy="Always"))
    before = wait_for(lambda: ready_status(cluster, namespace, 0), 90, "the server Ready")
    ip = before["podIP"]
    assert port_open(8000, ip)

    sandbox = cluster.sandbox
    state = sandbox.state()
    (process,) = [p for p in state.processes if p.name == "pod-runner"]
    os.killpg(process.pid, signal.SIGTERM)
    wait_for(lambda: not process.alive(), 20, "the runner to stop")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(process.pid, os.WNOHANG)
    # (Its address stopped being local with it, so look for the process, not the port.)
    deadline = time.monotonic() + 5
    while processes_mentioning(f"--host={ip} ") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_mentioning(f"--host={ip} "), "the runner's exit stops its containers"

    state.processes = [p for p in state.processes if p.name != "pod-runner"]
    sandbox.start_pod_runner(state)
    after = wait_for(lambda: ready_status(cluster, namespace, 1), 90, "the server restarted")
    assert after["podIP"] == ip
    (entry,) = after["containerStatuses"]
    assert entry["lastState"]["terminated"]["reason"] == "Unknown"
    assert port_open(8000, ip)
