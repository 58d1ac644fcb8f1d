"""The chart on a real node, end to end: every pod is a real container pulled with a pull secret.

One sandbox with edge-real-amd64-0 (a real kubelet over containerd and runc, tainted so only
pods that ask land on it) and its authenticated registry; then, in order:

1. `helm install` of charts/edgemodel with `image.repository` at the sandbox registry and an
   imagePullSecret: two operator replicas (non-root, read-only root filesystem, no
   capabilities, RuntimeDefault seccomp, checked on the running processes) become available
   and join the kopf peering with distinct priorities, so one leads; the artifact store runs
   on a PVC of the `local-path` class.
2. Artifacts go into the store through its Service's ClusterIP (kube-proxy, from the host).
3. An EdgeModel with a target on the real node: its compression Job and runtime pod are real
   containers there, pulled with the pull secret the operator copied into the namespace;
   tritonclient infers through the target Service's ClusterIP.
4. The node cache is a hostPath handed to uid 10001 under the real kubelet and holds the
   artifact.
5. With the artifact store scaled to 0: the runtime container killed with `ctr` is restarted by
   the kubelet and serves again; a replacement pod serves from the node cache.
6. `helm upgrade` to a new image tag rolls the operator onto it, and the new leader rolls the
   runtime pod onto the new image.
7. Deleting the EdgeModel and `helm uninstall` leave no pod.

The steps share the module's sandbox and run in file order; each needs the ones before it.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgemodel_sandbox.cluster import Sandbox, state_dir
from edgemodel_sandbox.models import ModelFixture, digits_classifier, sha256_file
from edgemodel_sandbox.realnode import node as realnode
from edgemodel_sandbox.realnode import plan
from edgemodel_sandbox.realnode.runtime import CRI_NAMESPACE

pytestmark = [pytest.mark.sandbox, pytest.mark.slow, pytest.mark.own_sandbox]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "edgemodel"
RELEASE = "em"
SYSTEM = "edgemodel-system"
APPS = "e2e-real"
STORE = "edgemodel-artifacts"
MODEL = "digits"
TARGET = "edge"
POD_UID = 10001
OPERATORS = 2  # kopf peering: the replicas elect one active
ON_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {plan.REAL_NODE_LABEL: "true"},
    "tolerations": [dict(plan.TOLERATION)],
}


@dataclass
class Stack:
    """The sandbox with its real node, the clients the steps use, and what earlier steps
    found (for the later ones)."""

    sandbox: Sandbox
    kubectl_path: Path
    helm_path: Path
    repository: str
    tag: str
    node_cache: Path
    workdir: Path
    fixture: ModelFixture | None = None
    found: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> plan.Layout:
        return plan.Layout(self.sandbox.directory / "real-node")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> str:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.sandbox.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-n", namespace, "-l", selector)["items"]
        return items

    def helm(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(self.helm_path), f"--kubeconfig={self.sandbox.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {result.stderr}\n{self.describe()}")
        return result.stdout

    def ctr(self, *args: str) -> str:
        socket = self.layout.containerd / "containerd.sock"
        result = subprocess.run(
            ["ctr", "-a", str(socket), "-n", CRI_NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {result.stderr}")
        return result.stdout

    def describe(self) -> str:
        """What a failed step prints: pods, workloads and events of both namespaces."""
        out = []
        for namespace in (SYSTEM, APPS):
            out.append(
                self.kubectl(
                    "get", "pods,jobs,deploy,pvc", "-n", namespace, "-o", "wide", check=False
                )
            )
            out.append(
                self.kubectl(
                    "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
                )[-4000:]
            )
        for deployment in ("em-edgemodel-operator", STORE):
            out.append(
                self.kubectl("logs", "-n", SYSTEM, f"deploy/{deployment}", "--tail=30", check=False)
            )
        return "\n".join(out)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(1)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}\n{self.describe()}"
        )


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _container_id(pod: dict[str, Any], name: str) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    (status,) = [s for s in statuses if s["name"] == name]
    container_id = str(status.get("containerID") or "")
    assert container_id.startswith("containerd://"), status  # not the pod runner's sandbox://
    return container_id.removeprefix("containerd://")


def _restarts(pod: dict[str, Any], name: str) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses if s["name"] == name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("a real kubelet needs root (containerd, runc, iptables, network namespaces)")
    from edgemodel_sandbox.tools import Tools, ensure_helm, tools_dir

    directory = state_dir().with_name("sandbox-real-cluster-tests")
    holder = realnode.holder()
    if holder is not None and holder != directory:
        realnode.take_down_holder()
    sandbox = Sandbox(directory)
    started = time.monotonic()
    try:
        state = sandbox.up(prometheus=False, real_node=True)
        print(f"sandbox + real node up in {time.monotonic() - started:.1f} s")
        assert state.real_node is not None
        repository, tag = str(state.real_node["runtime_image"]).rsplit(":", 1)
        yield Stack(
            sandbox,
            Tools.at(tools_dir()).kubectl,
            ensure_helm(),
            repository,
            tag,
            directory / "node-cache",
            tmp_path_factory.mktemp("real-cluster"),
        )
    finally:
        if sandbox.state() is not None or directory.exists():
            sandbox.down()


def _values(stack: Stack, tag: str) -> Path:
    """The values a user of a K3s cluster with a private registry and a dedicated node sets."""
    values = {
        "image": {"repository": stack.repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "imagePullSecrets": [{"name": plan.PULL_SECRET}],
        "runtime": {"nodeCachePath": str(stack.node_cache)},
        "operator": {
            "replicas": OPERATORS,
            "nodeSelector": {"kubernetes.io/os": "linux", **ON_REAL_NODE["nodeSelector"]},
            "tolerations": ON_REAL_NODE["tolerations"],
        },
        "artifactStore": {
            "nodeSelector": {"kubernetes.io/os": "linux", **ON_REAL_NODE["nodeSelector"]},
            "tolerations": ON_REAL_NODE["tolerations"],
        },
    }
    path = stack.workdir / f"values-{tag}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _process_status(stack: Stack, container_id: str) -> dict[str, str]:
    """/proc/<pid>/status of a running container's main process, as key -> value."""
    listing = stack.ctr("tasks", "ls")
    (line,) = [row for row in listing.splitlines() if row.startswith(container_id)]
    pid = line.split()[1]
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(row.split(":", 1) for row in status.splitlines() if ":" in row)
    fields = {key: value.strip() for key, value in fields.items()}
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    (root,) = [row for row in mounts if row.split()[4] == "/"]
    fields["root-mount-options"] = root.split()[5]
    return fields


def test_helm_install_runs_the_operator_and_store_as_real_restricted_containers(
    stack: Stack,
) -> None:
    stack.kubectl("create", "namespace", SYSTEM)
    realnode.apply_pull_secret(stack.sandbox, SYSTEM)
    started = time.monotonic()
    stack.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        SYSTEM,
        "--values",
        str(_values(stack, stack.tag)),
        "--wait",
        "--timeout",
        "8m",
    )
    stack.found["install_s"] = time.monotonic() - started
    print(f"helm install --wait: {stack.found['install_s']:.1f} s (image pull included)")

    operators = stack.pods(SYSTEM, "app.kubernetes.io/component=operator")
    assert len(operators) == OPERATORS
    for operator in operators:
        assert _ready(operator) and operator["spec"]["nodeName"] == plan.NODE_NAME
        assert operator["spec"]["imagePullSecrets"] == [{"name": plan.PULL_SECRET}]
        (status,) = operator["status"]["containerStatuses"]
        assert status["imageID"].startswith(f"{stack.repository}@sha256:")
        process = _process_status(stack, _container_id(operator, "operator"))
        assert process["Uid"].split()[:2] == [str(POD_UID)] * 2  # real and effective: non-root
        assert process["CapEff"] == "0000000000000000"  # no capabilities
        assert process["NoNewPrivs"] == "1"
        assert process["Seccomp"] == "2"  # a filter: RuntimeDefault
        assert process["root-mount-options"].split(",")[0] == "ro"  # read-only root filesystem
    deployment = stack.get("deploy", f"{RELEASE}-edgemodel-operator", "-n", SYSTEM)
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert available["Available"] == "True"
    assert deployment["status"]["availableReplicas"] == OPERATORS
    names = [p["metadata"]["name"] for p in operators]
    peers = stack.wait("both replicas in the peering object", lambda: _peers(stack, names), 90)
    # Distinct priorities: the highest replica leads, the other stands by (a shared one would
    # pause both); that one leads is shown by the EdgeModel reconciled below.
    assert len(set(peers.values())) == OPERATORS, peers
    stack.found["operator_pods"] = names

    (store,) = stack.pods(SYSTEM, "app.kubernetes.io/component=artifact-store")
    assert _ready(store) and store["spec"]["nodeName"] == plan.NODE_NAME
    store_process = _process_status(stack, _container_id(store, "server"))
    assert store_process["Uid"].split()[:2] == [str(POD_UID)] * 2
    assert store_process["CapEff"] == "0" * 16 and store_process["Seccomp"] == "2"
    claim = stack.get("pvc", STORE, "-n", SYSTEM)
    assert claim["status"]["phase"] == "Bound"
    volume = stack.get("pv", claim["spec"]["volumeName"])
    assert volume["spec"]["storageClassName"] == "local-path"
    stack.found["store_path"] = Path(volume["spec"]["hostPath"]["path"])


def _peers(stack: Stack, pods: list[str]) -> dict[str, int] | None:
    """Pod name -> peering priority of each of `pods` in the ClusterKopfPeering, once all are."""
    peering = stack.get("clusterkopfpeering", "edgemodel")
    found = {
        pod: int(peer["priority"])
        for identity, peer in (peering.get("status") or {}).items()
        for pod in pods
        if pod in identity and isinstance(peer, dict)
    }
    return found if len(found) == len(pods) else None


def _service_url(stack: Stack, namespace: str, name: str, port_name: str) -> str:
    service = stack.get("svc", name, "-n", namespace)
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == port_name]
    return f"http://{service['spec']['clusterIP']}:{port}"


def test_the_store_keeps_artifacts_on_its_volume_and_answers_on_its_cluster_ip(
    stack: Stack,
) -> None:
    store = _service_url(stack, SYSTEM, STORE, "http")
    # Writes carry a ServiceAccount token minted for the store's audience (TokenReview).
    stack.kubectl("create", "serviceaccount", "uploader", "-n", SYSTEM)
    token = stack.kubectl(
        "create", "token", "uploader", "-n", SYSTEM, f"--audience={STORE}", "--duration=10m"
    ).strip()
    fixture = digits_classifier()
    for path in (fixture.model, fixture.evaluation):
        digest = sha256_file(path)
        stack.wait(
            f"PUT {path.name} through {store}",
            functools.partial(_put, f"{store}/v1/artifacts/{digest}", path.read_bytes(), token),
            60,
        )
    stack.fixture = fixture
    stored = [p for p in stack.found["store_path"].rglob("*") if p.is_file()]
    assert stored and all(p.stat().st_uid == POD_UID for p in stored), stored
    digest = sha256_file(fixture.model)
    assert any(p.read_bytes() == fixture.model.read_bytes() for p in stored), digest


def _put(url: str, data: bytes, token: str) -> bool:
    try:
        request = urllib.request.Request(
            url, data=data, method="PUT", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status in (200, 201)
    except OSError:
        return False


def _edgemodel(stack: Stack) -> dict[str, Any]:
    assert stack.fixture is not None
    digest = stack.fixture.sha256
    url = f"http://{STORE}.{SYSTEM}.svc:8080/v1/artifacts"
    return {
        "apiVersion": "edgemodel.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": MODEL, "namespace": APPS},
        "spec": {
            "model": {"uri": f"{url}/{digest}", "sha256": digest},
            "targets": [{"name": TARGET, "arch": "amd64", **ON_REAL_NODE}],
        },
    }


def _phase(stack: Stack, phase: str) -> Callable[[], Any]:
    def check() -> Any:
        em = stack.get("em", MODEL, "-n", APPS)
        status = em.get("status") or {}
        done = status.get("phase") == phase
        return (
            em
            if done and status.get("observedGeneration") == em["metadata"]["generation"]
            else None
        )

    return check


def _infer(stack: Stack) -> float:
    """Accuracy of 64 digits inferred with tritonclient through the target's ClusterIP."""
    import tritonclient.http as httpclient

    assert stack.fixture is not None
    service = stack.get("svc", f"{MODEL}-{TARGET}", "-n", APPS)
    client = httpclient.InferenceServerClient(f"{service['spec']['clusterIP']}:8000")
    data = np.load(stack.fixture.evaluation)
    batch = data["input"][:64].astype(np.float32)
    request = httpclient.InferInput("input", list(batch.shape), "FP32")
    request.set_data_from_numpy(batch, binary_data=True)
    labels = client.infer(MODEL, [request]).as_numpy("label")
    assert labels is not None
    return float((labels == data["labels"][:64]).mean())


def _serves(stack: Stack) -> float | None:
    """`_infer`, or None while the Service has no ready endpoint yet (kube-proxy catching up)."""
    from tritonclient.utils import InferenceServerException

    try:
        return _infer(stack)
    except (OSError, InferenceServerException):
        return None


def test_an_edgemodel_on_the_real_node_compresses_and_serves_in_real_containers(
    stack: Stack,
) -> None:
    stack.kubectl("create", "namespace", APPS)
    started = time.monotonic()
    stack.kubectl("apply", "-f", "-", input=yaml.safe_dump(_edgemodel(stack)))
    stack.wait("the EdgeModel Ready", _phase(stack, "Ready"), 480)
    print(f"EdgeModel Ready in {time.monotonic() - started:.1f} s (compression + pull + serve)")

    # The operator copied its pull secret here; both pods used it to pull from the registry.
    secret = stack.get("secret", plan.PULL_SECRET, "-n", APPS)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    (job_pod,) = stack.pods(APPS, "app.kubernetes.io/component=compression")
    assert job_pod["status"]["phase"] == "Succeeded"
    assert job_pod["spec"]["nodeName"] == plan.NODE_NAME
    assert job_pod["spec"]["imagePullSecrets"] == [{"name": plan.PULL_SECRET}]
    (runtime,) = stack.pods(APPS, "app.kubernetes.io/component=runtime")
    assert _ready(runtime) and runtime["spec"]["nodeName"] == plan.NODE_NAME
    assert runtime["spec"]["imagePullSecrets"] == [{"name": plan.PULL_SECRET}]
    server = runtime["spec"]["containers"][0]["name"]
    process = _process_status(stack, _container_id(runtime, server))
    assert process["Uid"].split()[:2] == [str(POD_UID)] * 2 and process["CapEff"] == "0" * 16

    accuracy = stack.wait("an inference through the Service", lambda: _serves(stack), 60)
    assert accuracy >= 0.9
    stack.found["runtime_pod"] = runtime["metadata"]["name"]
    stack.found["server"] = server


def test_the_node_cache_is_handed_to_the_pods_user_and_holds_the_artifact(stack: Stack) -> None:
    em = stack.get("em", MODEL, "-n", APPS)
    (record,) = [r for r in em["status"]["revisions"] if r.get("variant") == "amd64"]
    digest = record["artifactDigest"]
    cache = stack.node_cache
    assert cache.stat().st_uid == POD_UID and cache.stat().st_gid == POD_UID
    assert oct(cache.stat().st_mode & 0o777) == "0o750"
    model = cache / digest / "model.onnx"
    assert model.is_file() and model.stat().st_uid == POD_UID
    assert sha256_file(model) == digest
    stack.found["digest"] = digest


def test_with_the_store_down_a_killed_server_restarts_and_a_new_pod_serves_from_the_cache(
    stack: Stack,
) -> None:
    stack.kubectl("scale", "deploy", STORE, "-n", SYSTEM, "--replicas=0")
    stack.wait(
        "no artifact store pod",
        lambda: not stack.pods(SYSTEM, "app.kubernetes.io/component=artifact-store"),
        120,
    )
    name, server = stack.found["runtime_pod"], stack.found["server"]
    pod = stack.get("pod", name, "-n", APPS)
    before = _restarts(pod, server)
    killed = time.monotonic()
    stack.ctr("tasks", "kill", "--signal", "SIGKILL", _container_id(pod, server))

    def restarted() -> Any:
        now = stack.get("pod", name, "-n", APPS)
        return now if _restarts(now, server) > before and _ready(now) else None

    again = stack.wait("the kubelet to restart the server container", restarted, 180)
    print(f"killed server container Ready again in {time.monotonic() - killed:.1f} s")
    assert _container_id(again, server) != _container_id(pod, server)
    assert stack.wait("an inference after the restart", lambda: _serves(stack), 60) >= 0.9

    # A new pod (new emptyDirs, init steps again) finds its model in the node cache only.
    deleted = time.monotonic()
    stack.kubectl("delete", "pod", name, "-n", APPS, "--wait=true")

    def replacement() -> Any:
        pods = [p for p in stack.pods(APPS, "app.kubernetes.io/component=runtime") if _ready(p)]
        return pods[0] if pods and pods[0]["metadata"]["name"] != name else None

    new = stack.wait("a replacement runtime pod Ready", replacement, 180)
    print(f"replacement pod Ready from the node cache in {time.monotonic() - deleted:.1f} s")
    fetched = stack.kubectl("logs", "-n", APPS, new["metadata"]["name"], "-c", "fetch")
    result = json.loads(fetched.strip().splitlines()[-1])
    assert result["cacheHit"] is True and result["sha256"] == stack.found["digest"]
    assert stack.wait("an inference from the cached model", lambda: _serves(stack), 60) >= 0.9

    stack.kubectl("scale", "deploy", STORE, "-n", SYSTEM, "--replicas=1")
    stack.kubectl(
        "rollout", "status", f"deploy/{STORE}", "-n", SYSTEM, "--timeout=180s", timeout=200
    )


def test_a_chart_upgrade_to_a_new_image_tag_rolls_the_operator(stack: Stack) -> None:
    new_tag = f"{stack.tag}-upgrade"
    layout = stack.layout
    copy = subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--quiet",
            f"--authfile={layout.registry_credentials}",
            f"--src-cert-dir={layout.certs}",
            f"--dest-cert-dir={layout.certs}",
            f"docker://{stack.repository}:{stack.tag}",
            f"docker://{stack.repository}:{new_tag}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert copy.returncode == 0, copy.stderr
    old = set(stack.found["operator_pods"])
    started = time.monotonic()
    stack.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        SYSTEM,
        "--values",
        str(_values(stack, new_tag)),
        "--wait",
        "--timeout",
        "5m",
    )

    def rolled() -> Any:
        pods = stack.pods(SYSTEM, "app.kubernetes.io/component=operator")
        fresh = {p["metadata"]["name"] for p in pods}.isdisjoint(old)
        done = len(pods) == OPERATORS and fresh and all(_ready(p) for p in pods)
        return pods if done else None

    new = stack.wait("the operator rolled onto the new tag", rolled, 180)
    print(f"helm upgrade --wait + operator rolled: {time.monotonic() - started:.1f} s")
    image = f"{stack.repository}:{new_tag}"
    for pod in new:
        assert pod["spec"]["containers"][0]["image"] == image
        assert f"--runtime-image={image}" in pod["spec"]["containers"][0]["args"]
        _container_id(pod, "operator")
    names = [p["metadata"]["name"] for p in new]
    peers = stack.wait("the new replicas in the peering object", lambda: _peers(stack, names), 90)
    assert len(set(peers.values())) == OPERATORS, peers

    # One of the new replicas leads: it rolls the EdgeModel's runtime pod onto the new image.
    def runtime_rolled() -> Any:
        pods = stack.pods(APPS, "app.kubernetes.io/component=runtime")
        on_new = [p for p in pods if p["spec"]["containers"][0]["image"] == image]
        return on_new if len(pods) == 1 and on_new and _ready(on_new[0]) else None

    stack.wait("the runtime pod rolled by the new operator", runtime_rolled, 240)
    assert stack.wait("an inference after the upgrade", lambda: _serves(stack), 60) >= 0.9


def test_deleting_the_edgemodel_and_uninstalling_leaves_no_pod(stack: Stack) -> None:
    stack.kubectl("delete", "em", MODEL, "-n", APPS, "--wait=true", timeout=180)
    stack.wait("no pod of the EdgeModel", lambda: not stack.get("pods", "-n", APPS)["items"], 180)
    stack.helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait", "--timeout", "3m")
    stack.wait(
        "no pod of the release",
        lambda: not stack.pods(SYSTEM, f"app.kubernetes.io/instance={RELEASE}"),
        120,
    )
    assert stack.get("pods", "-n", SYSTEM)["items"] == []
    assert stack.kubectl("get", "pvc", STORE, "-n", SYSTEM, check=False).strip() == ""
