"""Shared pytest fixtures: the sandbox control plane (one per test session) and its clients.

The sandbox is reused when one is already running (`edgemodel sandbox up` beforehand, or the
session-wide fixture of an earlier test); otherwise the session brings up its own in a
separate state folder and tears it down at the end (set EDGEMODEL_KEEP_SANDBOX=1 to keep it).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "crds" / "edgemodel.yaml"


@dataclass
class Cluster:
    """A running sandbox, as the tests see it."""

    kubeconfig: Path
    kubectl_path: Path
    prometheus_url: str | None
    sandbox: Any

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def processes_mentioning(text: str) -> list[str]:
    """Command lines of this machine's processes that contain `text` (to prove none is left)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    from edgemodel_sandbox.cluster import Sandbox, state_dir
    from edgemodel_sandbox.tools import Tools, tools_dir

    default = Sandbox.default()
    owned = False
    if default.healthy():
        sandbox = default
    else:
        sandbox = Sandbox(state_dir().with_name("sandbox-tests"))
        owned = True
    sandbox.up()
    yield Cluster(
        sandbox.kubeconfig, Tools.at(tools_dir()).kubectl, sandbox.prometheus_url(), sandbox
    )
    if owned and os.environ.get("EDGEMODEL_KEEP_SANDBOX") != "1":
        sandbox.down()


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> dict[str, Any]:
    """The EdgeModel CRD from crds/, installed and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/edgemodels.edgemodel.dev", "--timeout=60s"
    )
    # Discovery can lag Established by a moment; kubectl get proves the resource is served.
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "edgemodels", "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, (
            "edgemodels not served 30 s after the CRD was Established"
        )
        time.sleep(0.5)
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
