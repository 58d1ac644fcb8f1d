"""The chart as rendered by `helm lint` / `helm template`, checked object by object.

Every documented values combination is rendered and checked for what the chart promises:
least-privilege RBAC with no wildcards, restricted pod security and requests/limits on every
container, operator flags that the operator's own argument parser accepts, peering objects
only with more than one replica, and selectors that match the labels the operator's
builders put on the pods it creates. No cluster is needed here (see test_chart_cluster.py).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemodel_operator import builders
from edgemodel_operator import cli as operator_cli
from edgemodel_operator.api import parse_spec
from tests.conftest import CRD_PATH
from tests.integration.helm.conftest import CHART, COMBINATIONS, Objects, Render, run_helm

NAMESPACED_KINDS = {
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
    "Service",
    "PersistentVolumeClaim",
    "ConfigMap",
    "NetworkPolicy",
    "PodMonitor",
    "ServiceMonitor",
    "KopfPeering",
}
# Everything the operator (and kopf) may do; anything else in a rule is a privilege too many.
ALLOWED_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
FORBIDDEN_RESOURCES = {"secrets", "configmaps", "pods/exec", "serviceaccounts/token"}
# The one exception: the image pull secrets the operator copies, by name, and no more verbs.
PULL_SECRET_VERBS = {"get", "create", "patch"}


def pull_secret_names(values: dict[str, str]) -> list[str]:
    return [v for k, v in sorted(values.items()) if k.startswith("imagePullSecrets[")]


def of_kind(objects: Objects, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Objects, kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def operator_deployment(objects: Objects) -> dict[str, Any]:
    return one(objects, "Deployment", "-operator")


def operator_args(objects: Objects) -> list[str]:
    container = operator_deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["edgemodel"]
    args: list[str] = container["args"]
    assert args[0] == "operator"
    return args


def parsed_operator_args(objects: Objects) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgemodel operator")
    operator_cli.add_arguments(parser)
    return parser.parse_args(operator_args(objects)[1:])


def pod_specs(objects: Objects) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ lint, schema, files


def test_helm_lint_strict(helm: Path) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(("case", "values"), COMBINATIONS, ids=[c for c, _ in COMBINATIONS])
def test_helm_lint_every_combination(helm: Path, case: str, values: dict[str, str]) -> None:
    from tests.integration.helm.conftest import set_args

    run_helm(helm, "lint", "--strict", str(CHART), *set_args(values))


def test_chart_crd_is_a_byte_identical_copy() -> None:
    assert (CHART / "crds" / "edgemodel.yaml").read_bytes() == CRD_PATH.read_bytes(), (
        "charts/edgemodel/crds/edgemodel.yaml drifted; run: "
        "cp crds/edgemodel.yaml charts/edgemodel/crds/"
    )


def test_kopf_peering_crds_follow_kopfs_schema() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(by_kind) == {"ClusterKopfPeering", "KopfPeering"}
    assert by_kind["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert by_kind["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for doc in docs:
        assert doc["spec"]["group"] == "kopf.dev"
        (version,) = doc["spec"]["versions"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_every_values_key_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    for index, line in enumerate(lines):
        if re.match(r"^\s*[\w./-]+:", line):
            previous = next((p.strip() for p in reversed(lines[:index]) if p.strip()), "")
            if not previous.startswith("#"):
                missing.append(line.strip())
    assert not missing, f"values.yaml keys without a comment: {missing}"


def test_schema_refuses_unknown_keys_and_bad_values(helm: Path) -> None:
    for bad in (
        ["--set", "operatro.replicas=2"],
        ["--set", "rbac.scope=everything"],
        ["--set", "rbac.scope=namespaced"],  # namespaced needs watchNamespaces
        ["--set", "operator.replicas=0"],
        ["--set", "prometheus.url=prometheus:9090"],
    ):
        result = run_helm(helm, "template", "em", str(CHART), *bad, check=False)
        assert result.returncode != 0, f"helm template accepted {bad}"


def test_dashboard_is_valid_json_over_the_metrics_contract() -> None:
    dashboard = json.loads((CHART / "dashboards" / "edgemodel.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    text = " ".join(exprs)
    for metric in (
        "edgemodel_request_duration_seconds_bucket",
        "edgemodel_requests_total",
        "edgemodel_inflight_requests",
        "edgemodel_batch_size",
        "edgemodel_queue_duration_seconds",
    ):
        assert metric in text, metric


# ------------------------------------------------------------------ every combination


@pytest.mark.parametrize(("case", "values"), COMBINATIONS, ids=[c for c, _ in COMBINATIONS])
def test_rendered_objects_keep_the_charts_promises(
    render: Render, case: str, values: dict[str, str]
) -> None:
    objects = render(values)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= kinds

    # Metadata: namespaced objects say where they go; every object is the release's.
    for obj in objects:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        assert labels.get("app.kubernetes.io/instance") == "em", (obj["kind"], meta["name"])
        assert labels.get("app.kubernetes.io/part-of") == "edgemodel", (obj["kind"], meta["name"])
        if obj["kind"] in NAMESPACED_KINDS:
            assert meta.get("namespace"), (obj["kind"], meta["name"])
        else:
            assert "namespace" not in meta, (obj["kind"], meta["name"])

    # RBAC: no wildcard anywhere, nothing beyond the operator's verbs, never secrets.
    for role in of_kind(objects, "Role") + of_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(field) or []), (role["metadata"]["name"], rule)
                assert not any("*" in str(v) for v in rule.get(field) or []), rule
            assert set(rule["verbs"]) <= ALLOWED_VERBS, rule
            assert "nonResourceURLs" not in rule
            if rule["resources"] == ["secrets"]:
                assert sorted(rule["resourceNames"]) == sorted(pull_secret_names(values)), rule
                assert set(rule["verbs"]) <= PULL_SECRET_VERBS, rule
                continue
            assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, rule

    # Pod security "restricted" and requests/limits, on every container of every pod.
    for name, spec in pod_specs(objects):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], name
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (where, bound)
    for dep in of_kind(objects, "Deployment"):
        template_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert matches(dep["spec"]["selector"]["matchLabels"], template_labels)
        # The sandbox's pod runner (and the store's NetworkPolicy) key on this label.
        assert template_labels["app.kubernetes.io/part-of"] == "edgemodel"

    # Services select the pods they front.
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(objects, "Deployment")]
    for svc in of_kind(objects, "Service"):
        assert any(matches(svc["spec"]["selector"], p) for p in pods), svc["metadata"]["name"]


@pytest.mark.parametrize(("case", "values"), COMBINATIONS, ids=[c for c, _ in COMBINATIONS])
def test_operator_flags_follow_the_values(
    render: Render, case: str, values: dict[str, str]
) -> None:
    objects = render(values)
    args = parsed_operator_args(objects)
    deployment = operator_deployment(objects)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    replicas = int(values.get("operator.replicas", "1"))
    watch = values.get("watchNamespaces", "{}").strip("{}")
    watched = [n for n in watch.split(",") if n]
    store = values.get("artifactStore.enabled", "true") == "true"

    assert deployment["spec"]["replicas"] == replicas
    assert container["image"] == "ghcr.io/edgemodel/runtime:0.1.0"
    assert args.runtime_image == "ghcr.io/edgemodel/runtime:0.1.0"
    assert args.operator_namespace == "edgemodel-system"
    assert args.liveness == "http://$(POD_IP):8080/healthz"  # kubelet expands POD_IP
    assert args.workers == 8
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert args.namespace == watched
    assert ("--all-namespaces" in operator_args(objects)) == (not watched)
    # What the chart pulls with, the operator's pods pull with (test_image_pull.py: every one).
    pod_spec = deployment["spec"]["template"]["spec"]
    secrets = pull_secret_names(values)
    assert args.image_pull_secret == [s["name"] for s in pod_spec.get("imagePullSecrets", [])]
    assert sorted(args.image_pull_secret) == sorted(secrets)
    assert args.image_pull_policy == container["imagePullPolicy"]
    assert args.image_pull_policy == values.get("image.pullPolicy", "IfNotPresent")
    assert args.artifact_port == 8080
    assert not args.allow_gpu_provider_fallback

    peerings = of_kind(objects, "ClusterKopfPeering") + of_kind(objects, "KopfPeering")
    peering_rules = [
        rule
        for role in of_kind(objects, "Role") + of_kind(objects, "ClusterRole")
        for rule in role["rules"]
        if rule["apiGroups"] == ["kopf.dev"]
    ]
    if replicas > 1:
        assert args.peering == "edgemodel" and not args.standalone
        if watched:
            assert sorted(p["metadata"]["namespace"] for p in of_kind(objects, "KopfPeering")) == (
                sorted(watched)
            )
            assert all(r["resources"] == ["kopfpeerings"] for r in peering_rules)
        else:
            assert [p["kind"] for p in peerings] == ["ClusterKopfPeering"]
            assert all(r["resources"] == ["clusterkopfpeerings"] for r in peering_rules)
        assert {p["metadata"]["name"] for p in peerings} == {"edgemodel"}
        assert peering_rules and all(
            set(r["verbs"]) == {"get", "list", "watch", "patch"} for r in peering_rules
        )
    else:
        assert args.standalone and args.peering is None
        assert not peerings and not peering_rules

    assert args.no_artifact_store == store
    if store:
        assert args.artifact_service == "edgemodel-artifacts"
        assert one(objects, "Service", "edgemodel-artifacts")["spec"]["ports"][0]["port"] == 8080
        assert one(objects, "PersistentVolumeClaim")["spec"]["resources"]["requests"] == {
            "storage": "10Gi"
        }
        store_args = one(objects, "Deployment", "edgemodel-artifacts")["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        assert store_args == [
            "artifact-server",
            "--root",
            "/store",
            "--host",
            "$(POD_IP)",
            "--port",
            "8080",
            "--token-review",
            "--audience",
            "edgemodel-artifacts",
            "--quota-bytes",
            "9663676416",
            "--gc-interval-s",
            "600",
            "--gc-grace-s",
            "3600",
        ]
    else:
        assert not of_kind(objects, "PersistentVolumeClaim")


@pytest.mark.parametrize(("case", "values"), COMBINATIONS, ids=[c for c, _ in COMBINATIONS])
def test_rbac_scope(render: Render, case: str, values: dict[str, str]) -> None:
    objects = render(values)
    scope = values.get("rbac.scope", "cluster")
    store = values.get("artifactStore.enabled", "true") == "true"
    cluster_role = one(objects, "ClusterRole", "-edgemodel-system")
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    # The artifact store's own account: TokenReview, pods/jobs get, edgemodels list; no more.
    store_cluster_role = one(objects, "ClusterRole", "-artifact-store")
    assert {r for rule in store_cluster_role["rules"] for r in rule["resources"]} == {
        "tokenreviews",
        "pods",
        "jobs",
        "edgemodels",
    }
    (store_binding,) = [
        b
        for b in of_kind(objects, "ClusterRoleBinding")
        if b["metadata"]["name"].endswith("-artifact-store")
    ]
    assert store_binding["subjects"][0]["name"] == (
        "em-edgemodel-artifacts" if store else "edgemodel-artifacts"
    )
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(objects, "Role")
    }
    bindings = of_kind(objects, "RoleBinding") + [
        b
        for b in of_kind(objects, "ClusterRoleBinding")
        if not b["metadata"]["name"].endswith("-artifact-store")
    ]
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "em-edgemodel",
            "namespace": "edgemodel-system",
        }
    assert len(of_kind(objects, "RoleBinding")) == len(roles)

    # What the operator does in a watched namespace: the rule set a Role (or the ClusterRole) has.
    workload = {"edgemodels", "edgemodels/status", "jobs", "deployments", "services", "pods"}
    if scope == "cluster":
        assert workload <= cluster_resources
        store_roles = {k: r for k, r in roles.items() if k[1].endswith("-artifact-store")}
        assert store_roles == roles
    else:
        watched = values["watchNamespaces"].strip("{}").split(",")
        # The cluster-scoped minimum: nodes list/watch (placement explanations), CRD and
        # namespace list/watch (kopf's observers; namespaces only when serving named ones).
        assert cluster_resources == {"nodes", "customresourcedefinitions", "namespaces"}
        for rule in cluster_role["rules"]:
            if "resourceNames" not in rule:
                assert rule["verbs"] == ["list", "watch"], rule
        for ns in watched:
            role = roles[(ns, "em-edgemodel-edgemodel-system")]
            assert workload <= {r for rule in role["rules"] for r in rule["resources"]}
    # By-name rules; the pull secrets' are checked in test_pods_the_operator_creates_pull_as...
    named = [
        r for r in cluster_role["rules"] if "resourceNames" in r and r["resources"] != ["secrets"]
    ]
    if store:
        assert not named
    else:
        # The operator applies its own (existing) namespace and the store's objects in it.
        (ns_rule,) = named
        assert ns_rule["resources"] == ["namespaces"]
        assert ns_rule["resourceNames"] == ["edgemodel-system"]
        assert set(ns_rule["verbs"]) == {"get", "patch"}
        store_role = roles[("edgemodel-system", "em-edgemodel-artifact-store")]
        assert {r for rule in store_role["rules"] for r in rule["resources"]} == {
            "persistentvolumeclaims",
            "services",
            "serviceaccounts",
            "deployments",
        }


@pytest.mark.parametrize("case", ["pull-secrets", "pull-secrets-namespaced"])
def test_pods_the_operator_creates_pull_as_the_chart_says(render: Render, case: str) -> None:
    values = dict(COMBINATIONS)[case]
    objects = render(values)
    settings = operator_cli.settings_from(parsed_operator_args(objects))
    chart_pods = {name: spec for name, spec in pod_specs(objects)}
    operator_pod = chart_pods[operator_deployment(objects)["metadata"]["name"]]
    policy = values.get("image.pullPolicy", "IfNotPresent")
    secrets = [{"name": n} for n in pull_secret_names(values)]
    assert sorted(operator_pod["imagePullSecrets"], key=str) == sorted(secrets, key=str)
    # The operator's own builders, fed the flags the chart rendered.
    spec = parse_spec(
        {
            "model": {"uri": "https://m.example/m.onnx", "sha256": "a" * 64},
            "targets": [
                {"name": "cpu", "arch": "arm64"},
                {"name": "trt", "arch": "amd64", "accelerator": "nvidia-gpu", "runtime": "triton"},
            ],
        }
    )
    made = [
        builders.runtime_deployment("m", "ns1", "u", spec, t, "r1", "a" * 64, 1, settings)
        for t in spec.targets
    ]
    made.append(builders.compression_job("m", "ns1", "u", spec, "r1", "arm64", settings))
    made += [m for m in builders.artifact_store(settings) if m["kind"] == "Deployment"]
    for manifest in made:
        pod = manifest["spec"]["template"]["spec"]
        assert sorted(pod["imagePullSecrets"], key=str) == sorted(secrets, key=str)
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["imagePullPolicy"] == policy, manifest["metadata"]["name"]
    # RBAC: the named Secrets only; read where they live, copied where pods run.
    names = sorted(s["name"] for s in secrets)
    rules = {
        (role["metadata"].get("namespace"), role["kind"]): rule
        for role in of_kind(objects, "Role") + of_kind(objects, "ClusterRole")
        for rule in role["rules"]
        if "secrets" in rule["resources"]
    }
    if values.get("rbac.scope") == "namespaced":
        assert set(rules) == {("ns1", "Role"), ("ns2", "Role"), ("edgemodel-system", "Role")}
        assert rules[("edgemodel-system", "Role")]["verbs"] == ["get"]
        assert sorted(rules[("ns1", "Role")]["verbs"]) == ["create", "get", "patch"]
    else:
        assert set(rules) == {(None, "ClusterRole")}
    for rule in rules.values():
        assert sorted(rule["resourceNames"]) == names


def test_no_secret_rule_without_pull_secrets(render: Render) -> None:
    for role in of_kind(render(), "Role") + of_kind(render(), "ClusterRole"):
        assert not [r for r in role["rules"] if "secrets" in r["resources"]]


def test_artifact_port_reaches_the_operator_and_its_pods(render: Render) -> None:
    objects = render({"artifactStore.port": "9000"})
    settings = operator_cli.settings_from(parsed_operator_args(objects))
    assert settings.artifact_port == 9000
    service = one(objects, "Service", "edgemodel-artifacts")
    assert service["spec"]["ports"][0]["port"] == 9000
    # The URL pods fetch from names the chart's store Service, on its port.
    assert settings.artifact_url == (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:9000"
    )


def test_monitors_select_what_the_operator_creates(render: Render) -> None:
    objects = render(dict(COMBINATIONS)["monitors"])
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["apiVersion"] == "monitoring.coreos.com/v1"
    runtime_pod = builders.labels("digits", "runtime", revision="r1", target="arm", variant="x")
    assert matches(pod_monitor["spec"]["selector"]["matchLabels"], runtime_pod)
    compression_pod = builders.labels("digits", "compression", revision="r1", variant="x")
    assert not matches(pod_monitor["spec"]["selector"]["matchLabels"], compression_pod)
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"

    service_monitor = one(objects, "ServiceMonitor")
    metrics_service = one(objects, "Service", "-operator-metrics")
    assert matches(
        service_monitor["spec"]["selector"]["matchLabels"], metrics_service["metadata"]["labels"]
    )
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert metrics_service["spec"]["ports"][0]["port"] == 9090

    dashboard = one(objects, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(dashboard["data"]["edgemodel.json"])


def test_monitors_are_off_by_default(render: Render) -> None:
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"PodMonitor", "ServiceMonitor", "ConfigMap"}


@pytest.mark.parametrize("case", ["network-policy", "network-policy-namespaced"])
def test_network_policies(render: Render, case: str) -> None:
    objects = render(dict(COMBINATIONS)[case])
    policies = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    runtime = policies["em-edgemodel-runtime"]
    assert runtime["metadata"]["namespace"] == "ns1"
    runtime_pod = builders.labels("digits", "runtime", revision="r1", target="arm", variant="x")
    assert matches(runtime["spec"]["podSelector"]["matchLabels"], runtime_pod)
    open_rule, metrics_rule = runtime["spec"]["ingress"]
    assert "from" not in open_rule  # inference from anywhere
    assert {p["port"] for p in open_rule["ports"]} == {8000, 8001}
    assert {p["port"] for p in metrics_rule["ports"]} == {8002}
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]

    store = policies["em-edgemodel-artifacts"]
    store_pod = one(objects, "Deployment", "edgemodel-artifacts")["spec"]["template"]["metadata"]
    assert matches(store["spec"]["podSelector"]["matchLabels"], store_pod["labels"])
    (rule,) = store["spec"]["ingress"]
    # Which pods the peers admit (never part-of alone): test_network_policy.py.
    assert [p["port"] for p in rule["ports"]] == [8080]


def test_prometheus_auth_is_mounted_not_inlined(render: Render) -> None:
    objects = render(dict(COMBINATIONS)["prometheus-auth"])
    args = parsed_operator_args(objects)
    assert args.prometheus_url == "https://prometheus.monitoring.svc:9091"
    spec = operator_deployment(objects)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["EDGEMODEL_PROMETHEUS_TOKEN_FILE"] == "/var/run/secrets/edgemodel/prometheus/token"
    assert env["EDGEMODEL_PROMETHEUS_CA_FILE"] == "/etc/edgemodel/prometheus-ca/ca.crt"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["prometheus-token"]["secret"]["secretName"] == "prometheus-token"
    assert volumes["prometheus-ca"]["configMap"]["name"] == "prometheus-ca"
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["prometheus-token"]["readOnly"] and mounts["prometheus-ca"]["readOnly"]


def test_values_reach_the_flags(render: Render) -> None:
    objects = render(
        {
            "operator.workers": "3",
            "operator.verbose": "true",
            "runtime.image": "registry.local/edgemodel/runtime:dev",
            "runtime.nodeCachePath": "",
            "runtime.allowGpuProviderFallback": "true",
            "artifactStore.serviceName": "store",
            "artifactStore.storageClass": "local-path",
            "artifactStore.size": "2Gi",
        }
    )
    args = parsed_operator_args(objects)
    assert args.workers == 3 and args.verbose
    assert args.runtime_image == "registry.local/edgemodel/runtime:dev"
    assert args.node_cache_path == ""
    assert args.allow_gpu_provider_fallback
    assert args.artifact_service == "store"
    pvc = one(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "store"
    assert pvc["spec"]["storageClassName"] == "local-path"
    assert one(objects, "Service", "store")["metadata"]["name"] == "store"
