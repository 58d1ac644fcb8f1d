"""GitOps and kind assets: the kustomize overlays, the Argo CD health check, kind-config.yaml.

The overlays are rendered with kubectl's built-in kustomize and validated by a server-side
dry-run against the sandbox (the real CRD schema and CEL rules). Argo CD's health check is Lua
and there is no Lua interpreter here, so the same rules are written as a small Python function
(`health`) that mirrors the Lua line for line; it is checked against kstatus's rules on sample
statuses, and the Lua text is checked to contain each rule.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Cluster

GITOPS_DOC = ROOT / "docs" / "gitops.md"
OVERLAYS = ["dev", "prod"]


# ------------------------------------------------------------------ kustomize overlays


def _render(cluster: Cluster, path: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("kustomize", str(ROOT / path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.sandbox
def test_examples_is_a_kustomize_base(cluster: Cluster) -> None:
    objects = _render(cluster, "examples")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("EdgeModel", "digits")]
    assert objects[0] == yaml.safe_load((ROOT / "examples" / "digits-edgemodel.yaml").read_text())


@pytest.mark.sandbox
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_server_side_validation(
    cluster: Cluster, crd: dict[str, Any], overlay: str
) -> None:
    objects = _render(cluster, f"deploy/overlays/{overlay}")
    namespace = f"edgemodel-{overlay}"
    (ns,) = [o for o in objects if o["kind"] == "Namespace"]
    assert ns["metadata"]["name"] == namespace
    (model,) = [o for o in objects if o["kind"] == "EdgeModel"]
    assert model["metadata"]["namespace"] == namespace
    assert model["metadata"]["labels"]["edgemodel.dev/environment"] == overlay
    spec = model["spec"]
    assert spec["paused"] is False
    if overlay == "dev":
        assert all(t["replicas"]["max"] == 1 for t in spec["targets"])
        assert spec["slo"]["latencyP95Ms"] == 100 and spec["rollout"]["steps"] == [100]
    else:
        assert spec["targets"][0]["replicas"] == {"min": 3, "max": 12}
        assert spec["slo"]["latencyP95Ms"] == 20 and spec["rollout"]["steps"][-1] == 100

    # A namespaced object cannot be dry-run into a namespace that does not exist: create it
    # for real (it is the overlay's own Namespace), dry-run everything, remove it.
    existed = cluster.kubectl("get", "namespace", namespace, check=False).returncode == 0
    if not existed:
        cluster.kubectl("create", "namespace", namespace)
    try:
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-o", "name", "-k", str(ROOT / "deploy/overlays" / overlay)
        )
        assert sorted(result.stdout.split()) == sorted(
            ["namespace/" + namespace, "edgemodel.edgemodel.dev/digits"]
        )
    finally:
        if not existed:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# ------------------------------------------------------------------ Argo CD health (Lua mirror)


def health(obj: dict[str, Any]) -> str:
    """Python mirror of the Lua health check in docs/gitops.md (same order, same rules)."""
    status = obj.get("status")
    if status is None or status.get("observedGeneration") is None:
        return "Progressing"
    generation = obj["metadata"].get("generation")
    if generation is not None and status["observedGeneration"] != generation:
        return "Progressing"
    ready = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            ready = condition
    if status.get("phase") in ("Failed", "Degraded"):
        return "Degraded"
    if ready is not None and ready.get("status") == "True":
        return "Healthy"
    return "Progressing"


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus's verdict for a custom resource (what Flux reads): Current, InProgress, Failed.

    Generic rules: a stale observedGeneration is InProgress; `Stalled=True` is Failed;
    `Ready=True` is Current; anything else is InProgress.
    """
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conditions.get("Stalled") == "True":
        return "Failed"
    if conditions.get("Ready") == "True":
        return "Current"
    return "InProgress"


def _em(
    generation: int, observed: int | None, phase: str | None, ready: str | None
) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "digits", "generation": generation}}
    if observed is None and phase is None:
        return obj
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if observed is not None:
        status["observedGeneration"] = observed
    if ready is not None:
        # As the operator writes them: Ready, and Stalled only True for a Failed revision.
        stalled = "True" if phase == "Failed" else "False"
        for kind, value in (("Ready", ready), ("Stalled", stalled)):
            status["conditions"].append(
                {
                    "type": kind,
                    "status": value,
                    "reason": "R",
                    "message": "m",
                    "observedGeneration": observed,
                }
            )
    obj["status"] = status
    return obj


SAMPLES = [
    # (generation, observedGeneration, phase, Ready) -> Argo CD health
    ((1, None, None, None), "Progressing"),  # no status yet
    ((1, 1, "Pending", None), "Progressing"),
    ((1, 1, "Compressing", "False"), "Progressing"),
    ((1, 1, "Deploying", "False"), "Progressing"),
    ((1, 1, "Progressing", "False"), "Progressing"),  # canary steps
    ((1, 1, "RollingBack", "False"), "Progressing"),
    ((1, 1, "Ready", "True"), "Healthy"),
    ((2, 1, "Ready", "True"), "Progressing"),  # a new spec not yet observed
    ((1, 1, "Failed", "False"), "Degraded"),
    ((1, 1, "Degraded", "False"), "Degraded"),
    ((3, 2, "Failed", "False"), "Progressing"),  # the fix is pushed, not yet observed
]


@pytest.mark.parametrize(("fields", "expected"), SAMPLES, ids=[str(s[0]) for s in SAMPLES])
def test_health_rules_agree_with_kstatus(fields: tuple[Any, ...], expected: str) -> None:
    obj = _em(*fields)
    verdict = health(obj)
    assert verdict == expected
    # Argo CD's health and Flux's kstatus verdict agree on Healthy, on stale statuses and on
    # failures: a Failed EdgeModel is Stalled, so Flux fails it at once, not at its timeout.
    # Degraded (replicas lost, may recover by itself) stays InProgress for kstatus.
    assert (verdict == "Healthy") == (kstatus(obj) == "Current")
    if verdict == "Progressing":
        assert kstatus(obj) == "InProgress"
    phase_failed = obj.get("status", {}).get("phase") == "Failed"
    assert (kstatus(obj) == "Failed") == (phase_failed and verdict == "Degraded")


def test_lua_snippet_states_the_same_rules() -> None:
    (lua,) = re.findall(r"```lua\n(.*?)```", GITOPS_DOC.read_text(), flags=re.S)
    compact = " ".join(lua.split())
    for rule in (
        "obj.status.observedGeneration ~= obj.metadata.generation",
        'condition.type == "Ready"',
        'ready.status == "True"',
        'obj.status.phase == "Failed" or obj.status.phase == "Degraded"',
        'hs.status = "Healthy"',
        'hs.status = "Degraded"',
        'hs.status = "Progressing"',
        "return hs",
    ):
        assert rule in compact, rule
    # Order matters: staleness first, then Degraded, then Healthy (as in `health`).
    assert compact.index("~= obj.metadata.generation") < compact.index('"Degraded"')
    assert compact.index('hs.status = "Degraded"') < compact.index('hs.status = "Healthy"')
    assert "resource.customizations.health.edgemodel.dev_EdgeModel" in GITOPS_DOC.read_text()


# ------------------------------------------------------------------ kind


def test_kind_config_describes_an_edge_fleet() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker", "worker", "worker"]
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    for node in workers:
        labels = node["labels"]
        assert labels["edgemodel.dev/simulated-arch"] in ("amd64", "arm64")
        assert labels["edgemodel.dev/simulated-accelerator"] in ("none", "nvidia-gpu")
        assert labels["topology.kubernetes.io/zone"].startswith("site-")
        assert all(isinstance(v, str) for v in labels.values())  # kind wants string labels
    archs = [n["labels"]["edgemodel.dev/simulated-arch"] for n in workers]
    assert archs.count("arm64") >= 1 and archs.count("amd64") >= 1
    gpus = [
        n for n in workers if n["labels"]["edgemodel.dev/simulated-accelerator"] == "nvidia-gpu"
    ]
    assert len(gpus) == 1
    (patch,) = gpus[0]["kubeadmConfigPatches"]
    join = yaml.safe_load(patch)
    assert join["kind"] == "JoinConfiguration"
    assert join["nodeRegistration"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert len({n["labels"]["topology.kubernetes.io/zone"] for n in workers}) >= 2
