"""The chart against the sandbox's real API server: dry-runs, RBAC, install, upgrade, uninstall.

Every documented values combination is rendered and sent through
`kubectl apply --dry-run=server` (admission, schema validation, RBAC escalation checks of the
real kube-apiserver). Then the chart is installed for real: the operator Deployment's pods are
created and scheduled, the operator's ServiceAccount can do exactly what the operator needs
(`kubectl auth can-i` against the real RBAC authorizer) and nothing more, `helm upgrade`
changes the operator's flags, and `helm uninstall` leaves no object labelled with the release,
namespaced or cluster-scoped; the CRDs stay (Helm never deletes what crds/ installed).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster
from tests.integration.helm.conftest import (
    CHART,
    COMBINATIONS,
    Render,
    run_helm,
    set_args,
    with_namespaces,
)

pytestmark = pytest.mark.sandbox

MONITORING_KINDS = {"PodMonitor", "ServiceMonitor"}


def _ns(cluster: Cluster, prefix: str) -> str:
    """A fresh namespace enforcing Pod Security "restricted" (the real admission plugin)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    return name


@pytest.fixture(scope="session")
def chart_crds(cluster: Cluster, crd: dict[str, Any]) -> None:
    """The chart's crds/ applied as `helm install` would (EdgeModel via the crd fixture)."""
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(CHART / "crds" / "kopf-peering.yaml"),
    )
    for name in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture
def namespaces(cluster: Cluster) -> Iterator[dict[str, str]]:
    """A release namespace and two watched namespaces, fresh for each test."""
    names = {"release": _ns(cluster, "rel"), "ns1": _ns(cluster, "w1"), "ns2": _ns(cluster, "w2")}
    yield names
    for name in names.values():
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    for name in names.values():
        _drain_pods(cluster, name)


def served_monitoring(cluster: Cluster) -> bool:
    out = cluster.kubectl("api-resources", "--api-group=monitoring.coreos.com", "-o", "name").stdout
    return bool(out.strip())


@pytest.mark.parametrize(("case", "values"), COMBINATIONS, ids=[c for c, _ in COMBINATIONS])
def test_server_side_dry_run(
    cluster: Cluster,
    chart_crds: None,
    render: Render,
    namespaces: dict[str, str],
    case: str,
    values: dict[str, str],
) -> None:
    objects = render(with_namespaces(values, namespaces), namespace=namespaces["release"])
    # The sandbox has no prometheus-operator CRDs, so the API server cannot validate a
    # PodMonitor/ServiceMonitor: those are checked structurally in test_chart_render.py, and
    # everything else in the same rendering is dry-run here.
    if not served_monitoring(cluster):
        objects = [o for o in objects if o["kind"] not in MONITORING_KINDS]
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-o", "name", "-f", "-", input=yaml.safe_dump_all(objects)
    )
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(applied) == len(objects), result.stdout
    # The release namespace enforces and warns on "restricted": workloads that would create
    # non-compliant pods draw a warning from the PodSecurity admission plugin.
    assert "PodSecurity" not in result.stderr, result.stderr


# ------------------------------------------------------------------ install / upgrade / uninstall


def _get(cluster: Cluster, *args: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return loaded


def _wait(what: str, predicate: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def _operator_pods(cluster: Cluster, ns: str, release: str) -> list[dict[str, Any]]:
    pods = _get(
        cluster,
        "pods",
        "-n",
        ns,
        "-l",
        f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator",
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _scheduled(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions", [])}
    return bool(pod["spec"].get("nodeName")) and conditions.get("PodScheduled") == "True"


def _can_i(cluster: Cluster, sa: str, verb: str, resource: str, ns: str | None) -> bool:
    where = ["-n", ns] if ns else []
    result = cluster.kubectl("auth", "can-i", verb, resource, f"--as={sa}", *where, check=False)
    return result.stdout.strip() == "yes"


def _leftovers(cluster: Cluster, release: str) -> list[str]:
    """Every object of every listable kind labelled with the release, in any namespace."""
    kinds = cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    out = cluster.kubectl(
        "get",
        ",".join(kinds),
        "-A",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
        "--ignore-not-found",
        timeout=120,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def _drain_pods(cluster: Cluster, namespace: str, grace: float = 20.0) -> None:
    """Let a namespace's pods finish terminating; force what no kubelet finishes (see above)."""
    deadline = time.monotonic() + grace
    while _get(cluster, "pods", "-n", namespace)["items"] and time.monotonic() < deadline:
        time.sleep(1.0)
    cluster.kubectl(
        "delete", "pods", "--all", "-n", namespace, "--grace-period=0", "--force", check=False
    )


def _release_pods(cluster: Cluster, release: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _get(
        cluster, "pods", "-A", "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    return items


INSTALLS = [
    ("cluster-rbac", {}),
    (
        "namespaced-rbac-2-replicas",
        {"rbac.scope": "namespaced", "watchNamespaces": "{ns1,ns2}", "operator.replicas": "2"},
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "values"), INSTALLS, ids=[c for c, _ in INSTALLS])
def test_install_upgrade_uninstall(
    cluster: Cluster,
    chart_crds: None,
    helm: Path,
    namespaces: dict[str, str],
    case: str,
    values: dict[str, str],
) -> None:
    ns = namespaces["release"]
    release = f"em-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-edgemodel"
    sa = f"system:serviceaccount:{ns}:{fullname}"
    kube = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", ns]
    values = with_namespaces(values, namespaces)
    replicas = int(values.get("operator.replicas", "1"))
    watched = [n for n in values.get("watchNamespaces", "{}").strip("{}").split(",") if n]

    installed = run_helm(helm, "install", release, str(CHART), *kube, *set_args(values))
    assert "kubectl apply --server-side -f charts/edgemodel/crds/" in installed.stdout  # NOTES
    try:
        # The operator's pods are created by the real controllers and placed by the scheduler.
        pods = _wait(
            "operator pods scheduled",
            lambda: (
                p
                if len(p := _operator_pods(cluster, ns, release)) == replicas
                and all(_scheduled(x) for x in p)
                else None
            ),
        )
        for pod in pods:
            assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "edgemodel"
            assert pod["spec"]["serviceAccountName"] == fullname
        # Available: the pod runner runs `edgemodel operator` for these pods, signed in with
        # the pod's ServiceAccount token; Ready follows the live /healthz.
        _wait(
            "the operator Deployment available",
            lambda: (
                (
                    _get(cluster, "deployment", f"{fullname}-operator", "-n", ns).get("status")
                    or {}
                ).get("availableReplicas")
                == replicas
            ),
            timeout=120,
        )

        if replicas > 1:
            peerings = (
                [_get(cluster, "kopfpeering", "edgemodel", "-n", w) for w in watched]
                if watched
                else [_get(cluster, "clusterkopfpeering", "edgemodel")]
            )
            assert all(
                p["metadata"]["labels"]["app.kubernetes.io/instance"] == release for p in peerings
            )

        # RBAC, asked of the real authorizer: what the operator needs, and nothing beyond it.
        for where in watched or [None, "default"]:
            for verb, resource in [
                ("watch", "edgemodels.edgemodel.dev"),
                ("patch", "edgemodels.edgemodel.dev/status"),
                ("create", "jobs.batch"),
                ("delete", "deployments.apps"),
                ("patch", "services"),
                ("watch", "pods"),
                ("create", "events"),
            ]:
                assert _can_i(cluster, sa, verb, resource, where), (verb, resource, where)
            for verb, resource in [
                ("get", "secrets"),
                ("delete", "edgemodels.edgemodel.dev"),
                ("create", "pods"),
                ("update", "edgemodels.edgemodel.dev"),
            ]:
                assert not _can_i(cluster, sa, verb, resource, where), (verb, resource, where)
        assert _can_i(cluster, sa, "watch", "nodes", None)
        assert not _can_i(cluster, sa, "patch", "nodes", None)
        assert _can_i(cluster, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
        if watched:
            # Namespaced RBAC grants nothing in a namespace it does not watch.
            assert not _can_i(cluster, sa, "list", "jobs.batch", "default")
            assert not _can_i(cluster, sa, "get", "edgemodels.edgemodel.dev", "default")

        # Upgrade: a changed value reaches the operator's flags and rolls its pods.
        run_helm(
            helm,
            "upgrade",
            release,
            str(CHART),
            *kube,
            *set_args(values),
            "--set",
            "operator.workers=3",
            "--set",
            "operator.replicas=1",
        )
        deployment = _get(cluster, "deployment", f"{fullname}-operator", "-n", ns)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--workers=3" in args and "--standalone" in args
        assert deployment["spec"]["replicas"] == 1
        _wait(
            "upgraded operator pod scheduled",
            lambda: any(
                "--workers=3" in p["spec"]["containers"][0]["args"] and _scheduled(p)
                for p in _operator_pods(cluster, ns, release)
            ),
        )
        if replicas > 1:  # back to one replica: the peering objects went with the upgrade
            assert not cluster.kubectl(
                "get",
                "kopfpeerings,clusterkopfpeerings",
                "-A",
                "-l",
                f"app.kubernetes.io/instance={release}",
                "-o",
                "name",
            ).stdout.strip()
        history = run_helm(helm, "history", release, *kube, "-o", "json").stdout
        assert [r["revision"] for r in json.loads(history)] == [1, 2]
    finally:
        run_helm(helm, "uninstall", release, *kube, "--wait", "--timeout", "120s", check=False)

    # Nothing labelled with the release is left, namespaced or cluster-scoped; the CRDs stay.
    # Pods end with their graceful deletion, which a kubelet completes. In the sandbox the
    # kubelet of EdgeModel-labelled pods is the pod runner; where it does not act on these
    # pods, they are force-deleted as a node controller would for a gone kubelet, after
    # checking that uninstall did mark every one of them for deletion.
    def only_terminating_pods() -> bool:
        left = _leftovers(cluster, release)
        return all(name.startswith("pod/") for name in left)

    _wait("release objects other than pods gone", only_terminating_pods, timeout=120)
    deadline = time.monotonic() + 30
    while (pods := _release_pods(cluster, release)) and time.monotonic() < deadline:
        assert all(p["metadata"].get("deletionTimestamp") for p in pods)
        time.sleep(1.0)
    for pod in pods:
        meta = pod["metadata"]
        cluster.kubectl(
            "delete",
            "pod",
            meta["name"],
            "-n",
            meta["namespace"],
            "--grace-period=0",
            "--force",
            "--ignore-not-found",
        )
    _wait("release objects gone", lambda: not _leftovers(cluster, release), timeout=60)
    for crd in (
        "edgemodels.edgemodel.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        cluster.kubectl("get", "crd", crd)
    assert run_helm(helm, "status", release, *kube, check=False).returncode != 0


# ------------------------------------------------------------ the operator under the chart's RBAC


# Runs the operator with a logging handler that also prints the structured fields
# (`extra=`), so a refused request shows its 403 and the resource it was refused.
@pytest.mark.slow
def test_operator_reconciles_with_only_the_charts_namespaced_rbac(
    cluster: Cluster, chart_crds: None, helm: Path, namespaces: dict[str, str]
) -> None:
    """The operator as Helm installs it — its pod run by the sandbox's pod runner, signed in
    with its own ServiceAccount's token through the `kubernetes` Service — becomes available
    and reconciles an example EdgeModel with nothing but the chart's namespaced RBAC.
    Namespaced mode only: a cluster-wide operator would also act on other tests' EdgeModels.
    """
    from tests.conftest import ROOT

    ns, watched = namespaces["release"], namespaces["ns1"]
    release = f"em-{uuid.uuid4().hex[:6]}"
    kube = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", ns]
    # An image pull secret the chart is given: the operator copies it into the watched
    # namespace with nothing but the chart's by-name Secret rules.
    docker_config = '{"auths": {"registry.example:5000": {"auth": "dXNlcjpwYXNz"}}}'
    cluster.kubectl(
        "create", "secret", "generic", "regcred", "-n", ns, "--type=kubernetes.io/dockerconfigjson",
        f"--from-literal=.dockerconfigjson={docker_config}",
    )  # fmt: skip
    run_helm(
        helm,
        "install",
        release,
        str(CHART),
        *kube,
        "--set",
        "rbac.scope=namespaced",
        "--set",
        f"watchNamespaces={{{watched}}}",
        "--set",
        "imagePullSecrets[0].name=regcred",
    )
    try:
        # Available: the real Deployment controller counts the pod Ready, which the runner
        # reports only once the operator answers its liveness endpoint.
        _wait(
            "the operator Deployment available",
            lambda: (
                (
                    _get(cluster, "deployment", f"{release}-edgemodel-operator", "-n", ns).get(
                        "status"
                    )
                    or {}
                ).get("availableReplicas")
                == 1
            ),
            timeout=120,
        )
        cluster.kubectl(
            "apply", "-n", watched, "-f", str(ROOT / "examples" / "digits-edgemodel.yaml")
        )
        # Observed, decided, applied: status patched, Jobs and Services created by server-side
        # apply, an Event posted, all as the ServiceAccount, by the operator in its pod.
        _wait(
            "the operator to report a phase",
            lambda: (
                (_get(cluster, "edgemodel", "digits", "-n", watched).get("status") or {}).get(
                    "observedGeneration"
                )
                == 1
            ),
            timeout=120,
        )
        _wait(
            "compression Jobs and target Services",
            lambda: (
                len(_get(cluster, "jobs", "-n", watched)["items"]) == 3
                and len(_get(cluster, "services", "-n", watched)["items"]) == 3
            ),
        )
        # The pull secret, copied by the operator under the chart's RBAC, and on the pods.
        copy = _wait(
            "the pull secret copied into the watched namespace",
            lambda: json.loads(
                cluster.kubectl(
                    "get", "secret", "regcred", "-n", watched, "-o", "json", check=False
                ).stdout
                or "null"
            ),
        )
        source = _get(cluster, "secret", "regcred", "-n", ns)
        assert copy["data"] == source["data"] and copy["type"] == source["type"]
        assert copy["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "edgemodel-operator"
        for job in _get(cluster, "jobs", "-n", watched)["items"]:
            pod_spec = job["spec"]["template"]["spec"]
            assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]
            assert {c["imagePullPolicy"] for c in pod_spec["containers"]} == {"IfNotPresent"}
        sa = f"system:serviceaccount:{ns}:{release}-edgemodel"
        assert _can_i(cluster, sa, "get", "secrets/regcred", ns)
        assert not _can_i(cluster, sa, "get", "secrets/other", ns)
        assert not _can_i(cluster, sa, "list", "secrets", watched)
        assert not _can_i(cluster, sa, "create", "secrets/regcred", ns)
        _wait(
            "a PhaseChanged Event",
            lambda: any(
                e["reason"] == "PhaseChanged"
                for e in _get(cluster, "events", "-n", watched)["items"]
            ),
        )
    finally:
        cluster.kubectl("delete", "edgemodel", "digits", "-n", watched, "--wait=false", check=False)
        cluster.kubectl("delete", "jobs", "--all", "-n", watched, "--wait=false", check=False)
        run_helm(helm, "uninstall", release, *kube, check=False)
        _drain_pods(cluster, watched)
