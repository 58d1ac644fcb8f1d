"""Owns `edgemodel sandbox demo`, the project's main job: the sandbox up, the EdgeModel CRD
from crds/, the operator running, the digits model seeded into the in-cluster artifact store,
the example EdgeModel applied and followed phase by phase until it is Ready everywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from edgemodel_sandbox.cluster import Sandbox, SandboxError
from edgemodel_sandbox.models import digits_classifier, sha256_file
from edgemodel_sandbox.tools import Tools, tools_dir

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "edgemodel.yaml"
EXAMPLE = REPO / "examples" / "digits-edgemodel.yaml"
STORE = ("edgemodel-system", "edgemodel-artifacts")
READY_TIMEOUT_S = 900


def _kubectl(sandbox: Sandbox, *args: str, check: bool = True, stdin: str | None = None) -> str:
    kubectl = Tools.at(tools_dir()).kubectl
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={sandbox.kubeconfig}", *args],
        input=stdin,
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


def _store_address(sandbox: Sandbox) -> str | None:
    """host:port of a ready artifact-store endpoint (the Service, as kube-proxy would pick)."""
    out = _kubectl(
        sandbox,
        "get",
        "endpointslices",
        "-n",
        STORE[0],
        "-l",
        f"kubernetes.io/service-name={STORE[1]}",
        "-o",
        "json",
        check=False,
    )
    for item in json.loads(out or '{"items": []}')["items"]:
        port = next((p["port"] for p in item.get("ports") or [] if p.get("name") == "http"), None)
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") and port:
                return f"{endpoint['addresses'][0]}:{port}"
    return None


def _upload(address: str, path: Path) -> str:
    digest = sha256_file(path)
    request = urllib.request.Request(
        f"http://{address}/v1/artifacts/{digest}", data=path.read_bytes(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status not in (200, 201):
            raise SandboxError(
                f"uploading {path.name} to the artifact store: HTTP {response.status}"
            )
    return digest


def _manifest(model_sha: str, eval_sha: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]
    if spec["model"]["sha256"] != model_sha:
        # sklearn trained a (slightly) different model on this machine: same recipe, new digest.
        print(f"note: this machine's digits model has sha256 {model_sha}; using it")
        spec["model"]["sha256"] = model_sha
        spec["model"]["uri"] = spec["model"]["uri"].rsplit("/", 1)[0] + f"/{model_sha}"
    evaluation = spec["compression"]["accuracyGate"]["evaluation"]
    if evaluation["sha256"] != eval_sha:
        evaluation["sha256"] = eval_sha
        evaluation["uri"] = evaluation["uri"].rsplit("/", 1)[0] + f"/{eval_sha}"
    return manifest


def _wait_ready(sandbox: Sandbox, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen = ""
    while time.monotonic() < deadline:
        em = json.loads(_kubectl(sandbox, "get", "em", name, "-o", "json"))
        status = em.get("status") or {}
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c["type"] == "Ready"), {}
        )
        phase = status.get("phase", "Pending")
        line = f"{phase:<12} {ready.get('reason', '')}: {ready.get('message', '')}"
        if line != seen:
            print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)
            seen = line
        if (
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == em["metadata"]["generation"]
        ):
            return dict(em)
        time.sleep(1.0)
    raise SandboxError(
        f"{name} not Ready after {READY_TIMEOUT_S} s; see {sandbox.logs}/operator.log"
    )


def run_demo(sandbox: Sandbox, nodes: int) -> int:
    if not CRD.exists() or not EXAMPLE.exists():
        print(f"edgemodel sandbox demo needs a source checkout (looked for {CRD})", file=sys.stderr)
        return 2
    started = time.monotonic()
    _step("sandbox: control plane + simulated K3s edge nodes + pod runner + Prometheus")
    state = sandbox.up(nodes=nodes)
    print(
        _kubectl(
            sandbox, "get", "nodes", "-L", "kubernetes.io/arch", "-L", "nvidia.com/gpu.product"
        )
    )
    _step("the EdgeModel CRD from crds/")
    print(_kubectl(sandbox, "apply", "--server-side", "--force-conflicts", "-f", str(CRD)).strip())
    _kubectl(sandbox, "wait", "--for=condition=Established", "crd/edgemodels.edgemodel.dev")

    _step("the operator")
    args = [
        "-m",
        "edgemodel_cli.main",
        "operator",
        "--standalone",
        "--resolve-services-via-endpoints",
    ]
    prometheus = sandbox.prometheus_url(state)
    if prometheus:
        args += ["--prometheus-url", prometheus]
    fresh = sandbox.ensure_process(
        "operator", Path(sys.executable), args, {"KUBECONFIG": str(sandbox.kubeconfig)}
    )
    print(f"operator {'started' if fresh else 'already running'}; log: {sandbox.logs}/operator.log")

    _step("the digits model and its held-out data, into the in-cluster artifact store")
    deadline = time.monotonic() + 180
    address = _store_address(sandbox)
    while address is None and time.monotonic() < deadline:
        time.sleep(1.0)
        address = _store_address(sandbox)
    if address is None:
        raise SandboxError(
            f"the artifact store did not become ready; see {sandbox.logs}/pod-runner.log"
        )
    fixture = digits_classifier()
    model_sha = _upload(address, fixture.model)
    eval_sha = _upload(address, fixture.evaluation)
    print(f"model {model_sha[:12]}  evaluation {eval_sha[:12]}  (store at {address})")

    _step(f"the example: {EXAMPLE.relative_to(REPO)}")
    print(
        _kubectl(
            sandbox, "apply", "-f", "-", stdin=yaml.safe_dump(_manifest(model_sha, eval_sha))
        ).strip()
    )
    em = _wait_ready(sandbox, "digits")

    _step("what the cluster shows")
    print(_kubectl(sandbox, "get", "edgemodels"))
    for record in em["status"].get("revisions") or []:
        accuracy = record.get("accuracy") or {}
        print(
            f"  artifact {record['variant']:<6} {record.get('mode', ''):<13} "
            f"ratio {record.get('ratio')}"
            f"  agreement {accuracy.get('agreement')}  accuracy drop {accuracy.get('accuracyDrop')}"
        )
    print()
    print(_kubectl(sandbox, "get", "pods", "-l", "edgemodel.dev/name=digits", "-o", "wide"))
    print(f"done in {time.monotonic() - started:.1f} s; the sandbox keeps running:")
    print(f"  export KUBECONFIG={sandbox.kubeconfig}")
    print(f"  export PATH={Tools.at(tools_dir()).kubectl.parent}:$PATH")
    print("  .venv/bin/edgemodel status digits   # per-target table")
    print("  .venv/bin/edgemodel sandbox down    # stops everything")
    return 0
