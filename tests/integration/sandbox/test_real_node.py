"""`edgemodel sandbox up --real-node`: edge-real-amd64-0 is a real kubelet over containerd and
runc, joined with its own certificate, labelled like the K3s fleet; pods on it pull the runtime
image from the sandbox's authenticated registry with a pull secret (and only with one), reach
each other and the API server through Services (kube-proxy) and cluster DNS; one real node per
machine; `down` leaves nothing of it on the machine.

The tests bring up a sandbox of their own (its own state folder, no Prometheus) with the real
node, taking down whichever sandbox held this machine's real node before.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.cluster import Sandbox, SandboxError, state_dir
from edgemodel_sandbox.realnode import node as realnode
from edgemodel_sandbox.realnode import plan, runtime, sweep
from tests.conftest import processes_mentioning

pytestmark = [pytest.mark.sandbox, pytest.mark.slow, pytest.mark.own_sandbox]

NAMESPACE = "real-node-test"
SERVE_PORT = 8080


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("a real kubelet needs root (containerd, runc, iptables, network namespaces)")


@pytest.fixture(scope="module")
def real() -> Iterator[Sandbox]:
    _root_or_skip()
    directory = state_dir().with_name("sandbox-real-node-tests")
    holder = realnode.holder()
    if holder is not None and holder != directory:
        realnode.take_down_holder()
    sandbox = Sandbox(directory)
    started = time.monotonic()
    state = sandbox.up(prometheus=False, real_node=True)
    print(
        f"sandbox + real node up in {time.monotonic() - started:.1f} s; "
        f"real node timings: {(state.real_node or {}).get('timings')}"
    )
    from edgemodel_sandbox.realnode.node import apply_pull_secret

    core = sandbox.core_api()
    from kubernetes.client.exceptions import ApiException

    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    apply_pull_secret(sandbox, NAMESPACE)
    yield sandbox
    if sandbox.state() is not None:
        sandbox.down()


def _image(sandbox: Sandbox) -> str:
    state = sandbox.state()
    assert state is not None and state.real_node is not None
    return str(state.real_node["runtime_image"])


def _pod(
    name: str,
    image: str,
    command: list[str],
    *,
    pull_secret: bool = True,
    labels: dict[str, str] | None = None,
    restart: str = "Always",
    init: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeSelector": {plan.REAL_NODE_LABEL: "true"},
        "tolerations": [plan.TOLERATION],
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": "Always",
                "command": command,
                "ports": [{"name": "http", "containerPort": SERVE_PORT}],
            }
        ],
    }
    if init:
        spec["initContainers"] = [
            {"name": "help", "image": image, "imagePullPolicy": "Always", "command": init}
        ]
    if pull_secret:
        spec["imagePullSecrets"] = [{"name": plan.PULL_SECRET}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels or {}},
        "spec": spec,
    }


def _wait_pod(sandbox: Sandbox, name: str, done: Any, timeout: float = 240) -> Any:
    core = sandbox.core_api()
    deadline = time.monotonic() + timeout
    pod = None
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, NAMESPACE)
        if done(pod):
            return pod
        time.sleep(0.5)
    events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}")
    raise AssertionError(
        f"pod {name} not there after {timeout} s: {pod.status if pod else None}\n"
        + "\n".join(f"{e.reason}: {e.message}" for e in events.items)
    )


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@pytest.fixture(scope="module")
def web(real: Sandbox) -> Any:
    """A pod serving HTTP from the runtime image (after `edgemodel --help` as its init step)."""
    core = real.core_api()
    command = ["python3", "-m", "http.server", str(SERVE_PORT), "--directory", "/etc"]
    manifest = _pod(
        "web", _image(real), command, labels={"app": "web"}, init=["edgemodel", "--help"]
    )
    started = time.monotonic()
    core.create_namespaced_pod(NAMESPACE, manifest)
    pod = _wait_pod(real, "web", _ready)
    print(f"runtime-image pod Ready in {time.monotonic() - started:.1f} s (pull included)")
    core.create_namespaced_service(
        NAMESPACE,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )
    return pod


def test_the_real_node_registers_ready_with_its_certificate_and_the_k3s_labels(
    real: Sandbox,
) -> None:
    node = real.core_api().read_node(plan.NODE_NAME)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    labels = node.metadata.labels
    assert labels["kubernetes.io/arch"] == "amd64"
    assert labels["kubernetes.io/hostname"] == plan.NODE_NAME
    assert labels["node.kubernetes.io/instance-type"] == "k3s"
    assert labels["topology.kubernetes.io/zone"] == "site-0"
    assert labels["edgemodel.dev/site"] == "site-0"
    assert labels[plan.REAL_NODE_LABEL] == "true"
    info = node.status.node_info
    assert info.kubelet_version == "v1.36.3"
    assert info.container_runtime_version.startswith("containerd://")
    # Not kwok's: no fake-node annotation, so neither kwok nor the pod runner touch it.
    assert "kwok.x-k8s.io/node" not in (node.metadata.annotations or {})
    assert [(t.key, t.effect) for t in node.spec.taints or []] == [
        (plan.TAINT["key"], plan.TAINT["effect"])
    ]


def test_sandbox_status_shows_the_real_node_and_its_registry(real: Sandbox, web: Any) -> None:
    report = real.status_report()["realNode"]
    assert report["name"] == plan.NODE_NAME and report["ready"] is True
    assert report["kubeletVersion"] == "v1.36.3"
    assert report["containerRuntime"].startswith("containerd://")
    assert report["pods"] >= 1 and report["podsRunning"] >= 1
    assert report["registry"] == plan.REGISTRY
    assert Path(report["credentials"]).stat().st_mode & 0o077 == 0  # the password, 0600


def test_node_restriction_keeps_the_kubelet_to_its_own_node(real: Sandbox) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    layout = plan.Layout(real.directory / "real-node")
    configuration = client.Configuration()
    state = real.state()
    assert state is not None
    configuration.host = real.api_url(state)
    configuration.ssl_ca_cert = str(real.directory / "pki" / "ca.crt")
    configuration.cert_file = str(real.directory / "pki" / "kubelet-client.crt")
    configuration.key_file = str(real.directory / "pki" / "kubelet-client.key")
    as_kubelet = client.CoreV1Api(client.ApiClient(configuration))
    assert layout.kubelet_kubeconfig.exists()
    with pytest.raises(ApiException) as refused:
        as_kubelet.patch_node("edge-amd64-0", {"metadata": {"labels": {"x": "y"}}})
    assert refused.value.status == 403
    with pytest.raises(ApiException) as refused:
        as_kubelet.patch_node(
            plan.NODE_NAME, {"metadata": {"labels": {"node-role.kubernetes.io/x": ""}}}
        )
    assert refused.value.status == 403


def test_a_pod_pulls_the_runtime_image_from_the_registry_with_the_pull_secret(
    real: Sandbox, web: Any
) -> None:
    assert web.spec.node_name == plan.NODE_NAME
    status = web.status.container_statuses[0]
    assert status.container_id.startswith("containerd://")  # not the pod runner's sandbox://
    assert status.image_id.startswith(f"{plan.REGISTRY}/{plan.RUNTIME_REPOSITORY}@sha256:")
    # The kubelet serves the init step's log to the API server (its client certificate).
    log = real.core_api().read_namespaced_pod_log("web", NAMESPACE, container="help")
    assert "usage" in log.lower()


def test_an_anonymous_pull_is_refused(real: Sandbox) -> None:
    import subprocess

    layout = plan.Layout(real.directory / "real-node")
    image = _image(real)
    inspect = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--no-creds",
            f"--cert-dir={layout.certs}",
            f"docker://{image}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert inspect.returncode != 0 and "unauthorized" in inspect.stderr.lower(), inspect.stderr
    core = real.core_api()
    core.create_namespaced_pod(
        NAMESPACE, _pod("anonymous", image, ["sleep", "60"], pull_secret=False)
    )

    def failed(pod: Any) -> bool:
        waiting = [
            s.state.waiting
            for s in pod.status.container_statuses or []
            if s.state and s.state.waiting
        ]
        return any(w.reason in ("ErrImagePull", "ImagePullBackOff") for w in waiting)

    pod = _wait_pod(real, "anonymous", failed, timeout=120)
    message = pod.status.container_statuses[0].state.waiting.message or ""
    assert "401" in message or "unauthorized" in message.lower(), message
    core.delete_namespaced_pod("anonymous", NAMESPACE, grace_period_seconds=0)


def test_a_cluster_ip_service_reaches_the_pod_from_the_host_through_kube_proxy(
    real: Sandbox, web: Any
) -> None:
    service = real.core_api().read_namespaced_service("web", NAMESPACE)
    url = f"http://{service.spec.cluster_ip}/hostname"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                assert response.status == 200
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


PROBE = """
import json, socket, ssl, urllib.request
out = {}
for name in ("web.%(ns)s.svc", "web.%(ns)s.svc.cluster.local"):
    out[name] = socket.gethostbyname(name)
with urllib.request.urlopen("http://web.%(ns)s.svc/hostname", timeout=5) as r:
    out["web"] = r.status
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
context = ssl.create_default_context(cafile=sa + "ca.crt")
request = urllib.request.Request(
    "https://kubernetes.default.svc/api",
    headers={"Authorization": "Bearer " + open(sa + "token").read()},
)
with urllib.request.urlopen(request, context=context, timeout=5) as r:
    out["api"] = json.load(r)["kind"]
print(json.dumps(out))
"""


def test_another_pod_resolves_the_service_by_name_and_reaches_it_and_the_api_server(
    real: Sandbox, web: Any
) -> None:
    core = real.core_api()
    service = core.read_namespaced_service("web", NAMESPACE)
    script = PROBE % {"ns": NAMESPACE}
    core.create_namespaced_pod(
        NAMESPACE, _pod("probe", _image(real), ["python3", "-c", script], restart="Never")
    )
    pod = _wait_pod(real, "probe", lambda p: p.status.phase in ("Succeeded", "Failed"))
    log = core.read_namespaced_pod_log("probe", NAMESPACE)
    assert pod.status.phase == "Succeeded", log
    result = json.loads(log.strip().splitlines()[-1])
    assert result[f"web.{NAMESPACE}.svc"] == service.spec.cluster_ip
    assert result[f"web.{NAMESPACE}.svc.cluster.local"] == service.spec.cluster_ip
    assert result["web"] == 200
    assert result["api"] == "APIVersions"  # a ServiceAccount token, through 10.96.0.1:443


def test_a_second_sandbox_may_not_start_another_real_node(real: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match=str(real.directory)):
        Sandbox(tmp_path / "other").up(prometheus=False, real_node=True)
    assert realnode.holder() == real.directory


def test_down_leaves_no_container_mount_chain_bridge_cgroup_or_process(real: Sandbox) -> None:
    state = real.state()
    assert state is not None
    node = realnode.RealNode(real)
    footprint = node.footprint(node.record(state))
    before = sweep.leftovers(footprint)
    assert plan.BRIDGE in before["links"] and before["cgroups"] and before["iptables"]
    assert before["processes"] and before["mounts"]  # the web pod's: processes, rootfs, volumes
    shim_sockets = runtime.shim_sockets(node.layout)
    assert any(path.exists() for path in shim_sockets)
    real.down()
    after = sweep.leftovers(footprint)
    assert after == {kind: [] for kind in after}, after
    assert [path for path in shim_sockets if path.exists()] == []
    assert processes_mentioning(str(real.directory)) == []
    assert not real.directory.exists()
    assert realnode.holder() is None
