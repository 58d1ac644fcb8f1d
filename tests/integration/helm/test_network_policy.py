"""The chart's NetworkPolicies, rendered by the real helm and evaluated as the cluster would.

On by default. The artifact store admits only pods the operator created (managed-by
edgemodel-operator, component compression or runtime) in the namespaces it watches, and the
operator itself: the label app.kubernetes.io/part-of=edgemodel, which anyone can put on a pod,
admits nothing. Runtime pods take inference from anywhere unless `networkPolicy.inference.from`
narrows it, and metrics only from the monitoring namespace. A NetworkPolicy is L3/L4 and labels
are forgeable by whoever can create pods in an admitted namespace, so which pod may *write* to
the store is the store's authentication (tests/integration/artifacts/test_store_auth.py), not
these policies. See docs/security.md.

`admitted` is a small, pure evaluator of the NetworkPolicy ingress semantics
(networking.k8s.io/v1): a pod no policy selects is open; a selected pod accepts a connection when
some rule of some selecting policy matches both the port and the peer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemodel_operator import builders
from tests.integration.helm.conftest import CHART, Render, run_helm, set_args

RELEASE_NS = "edgemodel-system"
STORE_PORT = 8080


@dataclass(frozen=True)
class Pod:
    """A pod as a NetworkPolicy sees it: its namespace (and that namespace's labels), its labels."""

    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every matchExpression holds."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: Mapping[str, Any], policy_ns: str, source: Pod) -> bool:
    """One NetworkPolicyPeer. ipBlock peers are for traffic from outside the pod network."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"] or {}, source.ns_labels()):
            return False
    elif source.namespace != policy_ns:
        return False
    return selects(peer.get("podSelector") or {}, source.labels)


def admitted(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and port not in {p["port"] for p in ports}:
                continue
            peers = rule.get("from")
            if not peers or any(
                peer_matches(peer, policy["metadata"]["namespace"], source) for peer in peers
            ):
                return True
    return False


def policies_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


def pod_labels(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, str]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    labels: dict[str, str] = found["spec"]["template"]["metadata"]["labels"]
    return labels


def store(objects: list[dict[str, Any]]) -> Pod:
    return Pod(RELEASE_NS, pod_labels(objects, "Deployment", "edgemodel-artifacts"))


def operator(objects: list[dict[str, Any]]) -> Pod:
    return Pod(RELEASE_NS, pod_labels(objects, "Deployment", "-operator"))


def compression_job(namespace: str) -> Pod:
    return Pod(namespace, builders.labels("digits", "compression", revision="r1", variant="v"))


def runtime_pod(namespace: str) -> Pod:
    return Pod(
        namespace, builders.labels("digits", "runtime", revision="r1", target="t", variant="v")
    )


NAMESPACED = {"rbac.scope": "namespaced", "watchNamespaces": "{team-a,team-b}"}


def test_network_policies_are_on_by_default(render: Render) -> None:
    names = {p["metadata"]["name"] for p in policies_of(render())}
    assert names == {"em-edgemodel-artifacts", "em-edgemodel-operator"}
    assert not policies_of(render({"networkPolicy.enabled": "false"}))


@pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["cluster", "namespaced"])
def test_a_forged_part_of_label_does_not_reach_the_artifact_store(
    render: Render, values: dict[str, str]
) -> None:
    objects = render(values)
    policies = policies_of(objects)
    for namespace in ("team-a", RELEASE_NS, "default"):
        forged = Pod(namespace, {"app.kubernetes.io/part-of": "edgemodel"})
        assert not admitted(policies, forged, store(objects), STORE_PORT)
        # Not a single rule of any policy names it as a peer, on any port.
        for policy in policies:
            for rule in policy["spec"]["ingress"]:
                for peer in rule.get("from") or []:
                    assert not peer_matches(peer, policy["metadata"]["namespace"], forged)
    # Nor does a pod of the chart's own labels that is not the operator.
    chart_labelled = Pod(RELEASE_NS, {**operator(objects).labels, "app.kubernetes.io/name": "x"})
    assert not admitted(policies, chart_labelled, store(objects), STORE_PORT)


def test_compression_jobs_runtime_pods_and_the_operator_reach_the_store(render: Render) -> None:
    objects = render()
    policies = policies_of(objects)
    for namespace in ("team-a", "anything"):
        assert admitted(policies, compression_job(namespace), store(objects), STORE_PORT)
        assert admitted(policies, runtime_pod(namespace), store(objects), STORE_PORT)
    assert admitted(policies, operator(objects), store(objects), STORE_PORT)
    assert not admitted(policies, compression_job("team-a"), store(objects), STORE_PORT + 1)


def test_operator_pods_outside_the_watched_namespaces_do_not_reach_the_store(
    render: Render,
) -> None:
    objects = render(NAMESPACED)
    policies = policies_of(objects)
    assert admitted(policies, compression_job("team-a"), store(objects), STORE_PORT)
    assert admitted(policies, runtime_pod("team-b"), store(objects), STORE_PORT)
    for namespace in ("team-c", "default"):
        assert not admitted(policies, compression_job(namespace), store(objects), STORE_PORT)
        assert not admitted(policies, runtime_pod(namespace), store(objects), STORE_PORT)


def test_an_unlabelled_pod_does_not_reach_the_store_or_the_operator_metrics(
    render: Render,
) -> None:
    objects = render()
    policies = policies_of(objects)
    curl = Pod(RELEASE_NS, {"app": "curl"})
    assert not admitted(policies, curl, store(objects), STORE_PORT)
    assert not admitted(policies, curl, operator(objects), 9090)
    assert admitted(policies, curl, operator(objects), 8080)  # liveness
    prometheus = Pod("monitoring", {"app": "prometheus"})
    assert admitted(policies, prometheus, operator(objects), 9090)


def test_runtime_pods_take_inference_from_anywhere_and_metrics_from_monitoring(
    render: Render,
) -> None:
    objects = render(NAMESPACED)
    policies = policies_of(objects)
    assert {p["metadata"]["namespace"] for p in policies} == {RELEASE_NS, "team-a", "team-b"}
    anyone = Pod("default", {"app": "client"})
    prometheus = Pod("monitoring", {"app": "prometheus"})
    for namespace in ("team-a", "team-b"):
        target = runtime_pod(namespace)
        assert admitted(policies, anyone, target, 8000)
        assert admitted(policies, anyone, target, 8001)
        assert not admitted(policies, anyone, target, 8002)
        assert admitted(policies, prometheus, target, 8002)
        assert not admitted(policies, prometheus, target, 9999)


def test_inference_from_narrows_who_may_call_the_runtime_pods(
    render: Render, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "networkPolicy": {
                    "runtimeNamespaces": ["team-a"],
                    "inference": {
                        "from": [{"namespaceSelector": {"matchLabels": {"edge-gateway": "yes"}}}]
                    },
                }
            }
        )
    )
    objects = render(extra=("-f", str(values)))
    policies = policies_of(objects)
    target = runtime_pod("team-a")
    gateway = Pod("ingress", {"app": "gw"}, namespace_labels={"edge-gateway": "yes"})
    stranger = Pod("default", {"app": "client"})
    assert admitted(policies, gateway, target, 8000)
    assert admitted(policies, gateway, target, 8001)
    assert not admitted(policies, stranger, target, 8000)
    assert not admitted(policies, stranger, target, 8001)


def test_the_schema_refuses_an_inference_peer_it_does_not_know(helm: Path) -> None:
    result = run_helm(
        helm,
        "template",
        "em",
        str(CHART),
        *set_args({"networkPolicy.inference.from[0].anywhere": "true"}),
        check=False,
    )
    assert result.returncode != 0
    assert "anywhere" in result.stderr


def test_the_evaluator_follows_the_networkpolicy_semantics() -> None:
    """The evaluator itself: the cases every assertion above leans on."""
    policy = {
        "metadata": {"namespace": "a"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "app"}}}],
                    "ports": [{"port": 5432}],
                }
            ],
        },
    }
    db = Pod("a", {"role": "db"})
    assert admitted([policy], Pod("a", {"role": "app"}), db, 5432)
    assert not admitted([policy], Pod("b", {"role": "app"}), db, 5432)  # other namespace
    assert not admitted([policy], Pod("a", {"role": "app"}), db, 80)  # other port
    assert admitted([policy], Pod("b", {}), Pod("a", {"role": "web"}), 80)  # not selected
    assert selects({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["x"]}]}, {})
    assert not selects({"matchExpressions": [{"key": "k", "operator": "Exists"}]}, {})
