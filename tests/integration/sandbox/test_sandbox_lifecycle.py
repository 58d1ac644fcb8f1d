"""The sandbox's lifecycle: up builds a real control plane with a 1000-node fleet, up again
reuses it, status reports it, and down leaves no process, port or file behind.

Runs its own sandbox in a temporary state folder (beside the session's shared one), so the
teardown it checks is the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgemodel_sandbox.cluster import Sandbox, port_open
from edgemodel_sandbox.tools import Tools, tools_dir
from tests.conftest import processes_mentioning

# Like every sandbox test, never beside the demo's sandbox (see tests/conftest.py).
pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.slow,
    pytest.mark.own_sandbox,
    pytest.mark.usefixtures("no_demo_sandbox"),
]


def _edgemodel(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGEMODEL_SANDBOX_DIR=str(state))
    return subprocess.run(
        [sys.executable, "-m", "edgemodel_cli.main", "sandbox", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_up_status_up_again_and_down_with_1000_nodes(tmp_path: Path) -> None:
    state = tmp_path / "sandbox"
    up = _edgemodel(state, "up", "--nodes", "1000")
    assert up.returncode == 0, up.stderr
    kubeconfig = state / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout

    kubectl = Tools.at(tools_dir()).kubectl
    nodes = json.loads(
        subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    )["items"]
    assert len(nodes) == 1000
    ready = [
        n
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert len(ready) == 1000
    table = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "get", "nodes", "-L", "kubernetes.io/arch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "edge-gpu-arm64-0" in table and "arm64" in table and "amd64" in table

    # The real scheduler honours the simulated hardware: a GPU pod lands on a GPU node.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-probe"},
        "spec": {
            "nodeSelector": {"kubernetes.io/arch": "arm64"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ],
        },
    }
    subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
        input=json.dumps(pod),
        text=True,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "wait",
            "pod/gpu-probe",
            "--for=condition=Ready",
            "--timeout=60s",
        ],
        check=True,
        capture_output=True,
    )
    node_name = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "get",
            "pod",
            "gpu-probe",
            "-o",
            "jsonpath={.spec.nodeName}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert node_name.startswith("edge-gpu-arm64-")

    status = _edgemodel(state, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["running"] is True
    assert sum(row["nodes"] for row in report["nodes"]) == 1000
    assert {(row["arch"], row["accelerator"]) for row in report["nodes"]} == {
        ("amd64", "none"),
        ("arm64", "none"),
        ("amd64", "nvidia-gpu"),
        ("arm64", "nvidia-gpu"),
    }

    before = Sandbox(state).state()
    assert before is not None
    again = _edgemodel(state, "up", "--nodes", "1000")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    after = Sandbox(state).state()
    assert after is not None and [p.pid for p in after.processes] == [
        p.pid for p in before.processes
    ]

    down = _edgemodel(state, "down")
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert processes_mentioning(str(state)) == []
    assert [port for port in after.ports.values() if port_open(port)] == []
    assert _edgemodel(state, "status").returncode == 3
