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

from edgemodel_runtime.artifacts.client import ClientError, upload_artifact
from edgemodel_sandbox.cluster import Sandbox, SandboxError, State
from edgemodel_sandbox.decoder import TOKENIZER_FILE, ensure_decoder
from edgemodel_sandbox.files import sha256_file
from edgemodel_sandbox.models import digits_classifier
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


CHART_RBAC = REPO / "charts" / "edgemodel" / "templates" / "rbac.yaml"
STORE_ROLE = "edgemodel-artifact-store"


def chart_store_rules(rbac: Path = CHART_RBAC) -> list[dict[str, Any]]:
    """The artifact store's ClusterRole rules as the chart grants them: read from the chart's
    template (its rules are plain YAML), so the chart stays their one source."""
    for document in rbac.read_text().split("\n---\n"):
        if "kind: ClusterRole\n" in document and "-artifact-store\n" in document:
            rules: list[dict[str, Any]] = yaml.safe_load(document[document.index("rules:") :])[
                "rules"
            ]
            return rules
    raise SandboxError(f"{rbac}: no artifact-store ClusterRole")


def store_rbac(namespace: str, account: str, name: str = STORE_ROLE) -> list[dict[str, Any]]:
    """What the chart grants the store's account (TokenReview for authenticated writes, the
    writer pod's Job, EdgeModels): the sandbox and the e2e tests run the operator without the
    chart, and its own store has no other grant (pure but for reading the chart)."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": chart_store_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]


def _store_token(sandbox: Sandbox) -> str:
    """A token for the store's audience, bound to no pod: it may upload blobs, not records."""
    return _kubectl(
        sandbox, "create", "token", STORE[1], "-n", STORE[0], "--audience", "edgemodel-artifacts"
    ).strip()


def _upload(address: str, path: Path, token: str) -> str:
    digest = sha256_file(path)
    try:
        upload_artifact(f"http://{address}", digest, path, token=token, timeout_s=30)
    except ClientError as exc:
        raise SandboxError(f"uploading {path.name} to the artifact store: {exc}") from None
    return digest


REAL_TARGET = "amd64-cpu"


def place_on_real_node(manifest: dict[str, Any], target: str = REAL_TARGET) -> dict[str, Any]:
    """The example with `target` selecting (and tolerating) the real node; other targets stay
    on the kwok fleet (pure)."""
    from edgemodel_sandbox.realnode import plan

    for item in manifest["spec"]["targets"]:
        if item["name"] == target:
            item["nodeSelector"] = {**item.get("nodeSelector", {}), plan.REAL_NODE_LABEL: "true"}
            tolerations = list(item.get("tolerations", []))
            if plan.TOLERATION not in tolerations:
                tolerations.append(dict(plan.TOLERATION))
            item["tolerations"] = tolerations
            return manifest
    raise SandboxError(f"the example has no target {target!r} to put on the real node")


def _serve_check(sandbox: Sandbox, name: str, target: str) -> None:
    """An inference through the target's Service (kube-proxy) served by the real containers."""
    service = json.loads(_kubectl(sandbox, "get", "svc", f"{name}-{target}", "-o", "json"))
    base = f"http://{service['spec']['clusterIP']}:8000/v2/models/{name}"
    with urllib.request.urlopen(base, timeout=10) as response:
        metadata = json.loads(response.read())
    inputs = []
    for tensor in metadata["inputs"]:
        shape = [1 if d in (-1, None) else int(d) for d in tensor["shape"]]
        count = 1
        for d in shape:
            count *= d
        inputs.append(
            {"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"],
             "data": [0] * count}
        )  # fmt: skip
    request = urllib.request.Request(
        f"{base}/infer",
        data=json.dumps({"inputs": inputs}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        outputs = json.loads(response.read())["outputs"]
    print(
        f"inference via {base} (Service -> kube-proxy -> real container): "
        + ", ".join(f"{o['name']} {o['shape']}" for o in outputs)
    )


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


def _start_operator(sandbox: Sandbox, state: State, real_node: bool) -> bool:
    """Start the operator (standalone, on the sandbox); False if it was already running."""
    args = [
        "-m",
        "edgemodel_cli.main",
        "operator",
        "--standalone",
        "--resolve-services-via-endpoints",
        # The GPU nodes are kwok's: their servers fall back to the CPU instead of exiting.
        "--allow-gpu-provider-fallback",
    ]
    prometheus = sandbox.prometheus_url(state)
    if prometheus:
        args += ["--prometheus-url", prometheus]
    if real_node and state.real_node is not None:
        from edgemodel_sandbox.realnode import node as realnode
        from edgemodel_sandbox.realnode import plan

        # Pods on the real node pull the runtime image from the sandbox's registry with the
        # pull secret the operator copies into each namespace it deploys into.
        namespace = STORE[0]
        _kubectl(sandbox, "create", "namespace", namespace, check=False)
        realnode.apply_pull_secret(sandbox, namespace)
        args += [
            "--runtime-image",
            state.real_node["runtime_image"],
            "--image-pull-secret",
            plan.PULL_SECRET,
        ]
    return sandbox.ensure_process(
        "operator", Path(sys.executable), args, {"KUBECONFIG": str(sandbox.kubeconfig)}
    )


def _upload_fixture(sandbox: Sandbox) -> tuple[str, str]:
    """Upload the digits model and its evaluation set to the store: their sha256 digests."""
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
    token = _store_token(sandbox)
    model_sha = _upload(address, fixture.model, token)
    eval_sha = _upload(address, fixture.evaluation, token)
    print(f"model {model_sha[:12]}  evaluation {eval_sha[:12]}  (store at {address})")
    # examples/generative-edgemodel.yaml names the sandbox decoder, its evaluation sequences and
    # its tokenizer.json by digest: uploaded too, so `kubectl apply -f examples/` finds them all.
    decoder = ensure_decoder()
    for name in ("model.onnx", "evaluation.npz", TOKENIZER_FILE):
        _upload(address, decoder / name, token)
    return model_sha, eval_sha


def _show(sandbox: Sandbox, em: dict[str, Any], real_node: bool) -> None:
    """Print the EdgeModel, its artifacts and pods (and check serving on the real node)."""
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
    if real_node:
        print(
            _kubectl(
                sandbox,
                "get",
                "pods",
                "-l",
                f"edgemodel.dev/name=digits,edgemodel.dev/target={REAL_TARGET}",
                "-o",
                "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,"
                "IMAGE:.spec.containers[0].image,CONTAINER:.status.containerStatuses[0].containerID",
            )
        )
        _serve_check(sandbox, "digits", REAL_TARGET)


def run_demo(sandbox: Sandbox, nodes: int, real_node: bool = False) -> int:
    if not CRD.exists() or not EXAMPLE.exists():
        print(f"edgemodel sandbox demo needs a source checkout (looked for {CRD})", file=sys.stderr)
        return 2
    started = time.monotonic()
    _step("sandbox: control plane + simulated K3s edge nodes + pod runner + Prometheus")
    if real_node:
        print("and edge-real-amd64-0: kubelet + containerd + runc, kube-proxy, registry, DNS")
    state = sandbox.up(nodes=nodes, real_node=real_node)
    print(
        _kubectl(
            sandbox, "get", "nodes", "-L", "kubernetes.io/arch", "-L", "nvidia.com/gpu.product"
        )
    )
    _step("the EdgeModel CRD from crds/")
    print(_kubectl(sandbox, "apply", "--server-side", "--force-conflicts", "-f", str(CRD)).strip())
    _kubectl(sandbox, "wait", "--for=condition=Established", "crd/edgemodels.edgemodel.dev")

    _kubectl(sandbox, "apply", "-f", "-", stdin=yaml.safe_dump_all(store_rbac(*STORE)))

    _step("the operator")
    fresh = _start_operator(sandbox, state, real_node)
    print(f"operator {'started' if fresh else 'already running'}; log: {sandbox.logs}/operator.log")

    _step("the digits model and its held-out data, into the in-cluster artifact store")
    model_sha, eval_sha = _upload_fixture(sandbox)

    _step(f"the example: {EXAMPLE.relative_to(REPO)}")
    manifest = _manifest(model_sha, eval_sha)
    if real_node:
        manifest = place_on_real_node(manifest)
        print(f"target {REAL_TARGET}: on the real node (nodeSelector + toleration)")
    print(_kubectl(sandbox, "apply", "-f", "-", stdin=yaml.safe_dump(manifest)).strip())
    em = _wait_ready(sandbox, "digits")

    _step("what the cluster shows")
    _show(sandbox, em, real_node)
    print(f"done in {time.monotonic() - started:.1f} s; the sandbox keeps running:")
    print(f"  export KUBECONFIG={sandbox.kubeconfig}")
    print(f"  export PATH={Tools.at(tools_dir()).kubectl.parent}:$PATH")
    print("  .venv/bin/edgemodel status digits   # per-target table")
    print("  .venv/bin/edgemodel sandbox down    # stops everything")
    return 0
