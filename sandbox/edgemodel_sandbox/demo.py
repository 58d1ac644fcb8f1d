"""Owns `edgemodel sandbox demo`, the project's main job: the sandbox up, the EdgeModel CRD
installed from crds/, the example EdgeModel applied, and what the cluster then shows."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from edgemodel_sandbox.cluster import Sandbox, SandboxError
from edgemodel_sandbox.tools import Tools, tools_dir

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "edgemodel.yaml"
EXAMPLE = REPO / "examples" / "digits-edgemodel.yaml"


def _kubectl(sandbox: Sandbox, *args: str, check: bool = True) -> str:
    kubectl = Tools.at(tools_dir()).kubectl
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={sandbox.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise SandboxError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def run_demo(sandbox: Sandbox, nodes: int) -> int:
    if not CRD.exists() or not EXAMPLE.exists():
        print(f"edgemodel sandbox demo needs a source checkout (looked for {CRD})", file=sys.stderr)
        return 2
    started = time.monotonic()
    _step("sandbox: control plane + simulated K3s edge nodes")
    sandbox.up(nodes=nodes)
    print(
        _kubectl(
            sandbox, "get", "nodes", "-L", "kubernetes.io/arch", "-L", "nvidia.com/gpu.product"
        )
    )
    _step("EdgeModel CRD from crds/")
    print(_kubectl(sandbox, "apply", "--server-side", "--force-conflicts", "-f", str(CRD)).strip())
    _kubectl(sandbox, "wait", "--for=condition=Established", "crd/edgemodels.edgemodel.dev")
    _step(f"the example: {EXAMPLE.relative_to(REPO)}")
    deadline = time.monotonic() + 30
    while True:  # discovery of a new CRD can lag its Established condition by a moment
        result = subprocess.run(
            [
                str(Tools.at(tools_dir()).kubectl),
                f"--kubeconfig={sandbox.kubeconfig}",
                "apply",
                "-f",
                str(EXAMPLE),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if result.returncode != 0:
        raise SandboxError(f"kubectl apply -f {EXAMPLE}: {result.stderr.strip()}")
    print(result.stdout.strip())
    print(_kubectl(sandbox, "get", "edgemodels", "-o", "wide"))
    print(f"done in {time.monotonic() - started:.1f} s; the sandbox keeps running:")
    print(f"  export KUBECONFIG={sandbox.kubeconfig}")
    print(f"  export PATH={Tools.at(tools_dir()).kubectl.parent}:$PATH")
    print("  edgemodel sandbox down   # stops everything")
    return 0
