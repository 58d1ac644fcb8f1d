"""bench/slo: how fast the SLO loop reacts, measured end to end in the sandbox.

Two timings, with a 10 s analysis / scaling interval, printed beside Flagger's default
detection time (interval 60 s x threshold 5):

- breach -> rollback complete: a canary whose model is genuinely slower (a 4096-wide fp32 MLP
  instead of the int8 digits MLP) takes traffic; "breach" is the first moment Prometheus shows
  the canary's p95 over the SLO; "complete" is lastRollback set and the canary's Deployment
  gone, with the client's failed requests counted throughout.
- load surge -> extra replicas Ready: real tritonclient load jumps from 1 to 16 workers.

Usage: .venv/bin/python bench/slo/run.py   (brings up its own sandbox; ~4 minutes)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgemodel_sandbox.cluster import Sandbox
from edgemodel_sandbox.load import Load
from edgemodel_sandbox.models import digits_classifier, sha256_file, wide_classifier
from edgemodel_sandbox.tools import Tools, tools_dir

REPO = Path(__file__).resolve().parents[2]
INTERVAL = 10
THRESHOLD = 2
STORE = "http://edgemodel-artifacts.edgemodel-system.svc:8080"


class Bench:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.kubectl_bin = str(Tools.at(tools_dir()).kubectl)

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.sandbox.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def em(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("get", "em", name, "-o", "json").stdout)
        return result

    def wait(self, what: str, check: Any, timeout: float, every: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(every)
        raise SystemExit(f"bench/slo: timed out waiting for {what}")

    def store_address(self) -> str | None:
        out = self.kubectl(
            "get",
            "endpointslices",
            "-n",
            "edgemodel-system",
            "-l",
            "kubernetes.io/service-name=edgemodel-artifacts",
            "-o",
            "json",
        ).stdout
        for item in json.loads(out or '{"items": []}')["items"]:
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready"):
                    return f"{endpoint['addresses'][0]}:8080"
        return None

    def upload(self, path: Path) -> str:
        digest = sha256_file(path)
        address = self.wait("the artifact store", self.store_address, 120)
        request = urllib.request.Request(
            f"http://{address}/v1/artifacts/{digest}", data=path.read_bytes(), method="PUT"
        )
        urllib.request.urlopen(request, timeout=120).close()
        return digest

    def ready(self, name: str, not_revision: str = "") -> Any:
        body = self.em(name)
        status = body.get("status") or {}
        if (
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == body["metadata"]["generation"]
            and status.get("stableRevision") != not_revision
        ):
            return body
        return None

    def p95_ms(self, name: str, revision: str) -> float | None:
        url = self.sandbox.prometheus_url()
        query = (
            "histogram_quantile(0.95, sum by (le) (rate(edgemodel_request_duration_seconds_bucket"
            f'{{model="{name}",revision="{revision}"}}[{INTERVAL}s])))'
        )
        with urllib.request.urlopen(
            f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout=5
        ) as response:
            result = json.load(response)["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value * 1000  # NaN: no traffic yet


def em_manifest(name: str, model_sha: str, slo_ms: float, **spec: Any) -> str:
    body = {
        "model": {"uri": f"{STORE}/v1/artifacts/{model_sha}", "sha256": model_sha},
        "targets": [{"name": "cpu", "arch": "amd64", "replicas": {"min": 2, "max": 4}}],
        "slo": {"latencyP95Ms": slo_ms},
        "rollout": {
            "steps": [50, 100],
            "analysisIntervalSeconds": INTERVAL,
            "failureThreshold": THRESHOLD,
            "postPromotionGuardSeconds": 0,
        },
    }
    body.update(spec)
    return yaml.safe_dump(
        {
            "apiVersion": "edgemodel.dev/v1alpha1",
            "kind": "EdgeModel",
            "metadata": {"name": name},
            "spec": body,
        }
    )


def rollback_timing(
    bench: Bench, digits_sha: str, wide_sha: str, batch: np.ndarray
) -> dict[str, Any]:
    name, slo = "canary-bench", 15.0
    bench.kubectl("apply", "-f", "-", stdin=em_manifest(name, digits_sha, slo))
    stable = bench.wait("Ready", lambda: bench.ready(name), 300)["status"]["stableRevision"]
    load = Load(bench.kubectl, "default", f"{name}-cpu", name, batch, workers=4, pause_s=0.01)
    load.start()
    try:
        patch = {
            "spec": {
                "model": {"uri": f"{STORE}/v1/artifacts/{wide_sha}", "sha256": wide_sha},
                "compression": {"quantization": "none"},
            }
        }
        bench.kubectl("patch", "em", name, "--type=merge", "-p", json.dumps(patch))
        canary = bench.wait(
            "the canary", lambda: (bench.em(name).get("status") or {}).get("canaryRevision"), 300
        )
        breach = bench.wait(
            "the canary's p95 over the SLO",
            lambda: time.monotonic() if (bench.p95_ms(name, canary) or 0) > slo else None,
            120,
        )
        done = bench.wait(
            "the rollback",
            lambda: (
                time.monotonic()
                if (
                    ((bench.em(name).get("status") or {}).get("lastRollback") or {}).get("from")
                    == canary
                    and not json.loads(
                        bench.kubectl(
                            "get", "deploy", "-l", f"edgemodel.dev/revision={canary}", "-o", "json"
                        ).stdout
                    )["items"]
                )
                else None
            ),
            180,
        )
        time.sleep(3)
    finally:
        load.stop()
    return {"seconds": done - breach, "stable": stable, "failed": load.failed, "ok": load.ok}


def scale_timing(bench: Bench, model_sha: str, batch: np.ndarray) -> dict[str, Any]:
    name = "scale-bench"
    bench.kubectl(
        "apply",
        "-f",
        "-",
        stdin=em_manifest(
            name,
            model_sha,
            20.0,
            compression={"quantization": "none"},
            targets=[{"name": "cpu", "arch": "amd64", "replicas": {"min": 1, "max": 4}}],
            autoscaling={"enabled": True, "intervalSeconds": INTERVAL, "stabilizationSeconds": 60},
        ),
    )
    bench.wait("Ready", lambda: bench.ready(name), 300)
    rows = np.repeat(batch, 32, axis=0)  # 16 clients sending 32-row batches
    load = Load(bench.kubectl, "default", f"{name}-cpu", name, rows, workers=16)
    surge = time.monotonic()
    load.start()
    try:
        decided = bench.wait(
            "a scale-up",
            lambda: (
                time.monotonic()
                if (bench.em(name)["status"]["targets"][0]["replicas"] > 1)
                else None
            ),
            180,
        )

        def all_ready() -> float | None:
            target = bench.em(name)["status"]["targets"][0]
            return time.monotonic() if target["readyReplicas"] == target["replicas"] > 1 else None

        ready = bench.wait("the extra replicas Ready", all_ready, 120)
    finally:
        load.stop()
    return {"decided": decided - surge, "ready": ready - surge, "failed": load.failed}


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="edgemodel-bench-slo-"))
    sandbox = Sandbox(state / "sandbox")
    operator: subprocess.Popen[bytes] | None = None
    try:
        sandbox.up()
        bench = Bench(sandbox)
        bench.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "edgemodel.yaml"))
        bench.kubectl("wait", "--for=condition=Established", "crd/edgemodels.edgemodel.dev")
        log = (state / "operator.log").open("ab")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgemodel_cli.main",
                "operator",
                "--standalone",
                "--resolve-services-via-endpoints",
                "--prometheus-url",
                str(sandbox.prometheus_url()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)},
        )
        digits = digits_classifier()
        digits_sha = bench.upload(digits.model)
        wide_sha = bench.upload(wide_classifier(4096, 3).model)
        batch = np.load(digits.evaluation)["input"][:1].astype(np.float32)
        rollback = rollback_timing(bench, digits_sha, wide_sha, batch)
        # A model a few ms a request: 16 clients queue well past the SLO on any machine.
        scale = scale_timing(bench, bench.upload(wide_classifier(2048, 3).model), batch)
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        sandbox.down()
    flagger = 60 * 5
    print(
        f"\n## bench/slo (analysis/scaling interval {INTERVAL} s, failureThreshold {THRESHOLD})\n"
    )
    print("| measure | edgemodel | Flagger default detection | target |")
    print("|---|---|---|---|")
    print(
        f"| SLO breach -> rollback complete | {rollback['seconds']:.1f} s "
        f"| {flagger} s (60 s x 5) | <= 30 s |"
    )
    print(f"| load surge -> scale-up decided | {scale['decided']:.1f} s | - | - |")
    print(f"| load surge -> extra replicas Ready | {scale['ready']:.1f} s | - | <= 30 s |")
    print(
        f"\nclient requests during the rollback: {rollback['ok']} ok, {rollback['failed']} failed; "
        f"during the surge: {scale['failed']} failed"
    )
    ok = rollback["seconds"] <= 30 and scale["ready"] <= 30
    print(f"targets {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
