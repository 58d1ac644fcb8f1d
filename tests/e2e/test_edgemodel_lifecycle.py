"""An EdgeModel's whole life in the sandbox, with every part real.

The operator runs as a process against the sandbox API server; compression Jobs run the real
`edgemodel compress` (the pod runner plays the kubelet); the real scheduler places runtime pods
by arch and accelerator; runtime pods run the real `edgemodel serve` on their pod IPs;
tritonclient talks to them. Killing the operator mid-way still converges with no duplicates;
deleting the EdgeModel lets the garbage collector remove everything it owned.
"""

from __future__ import annotations

import json
import signal
import zlib
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import Cluster
from tests.e2e.conftest import (
    Operator,
    Seeded,
    describe_for,
    edgemodel,
    events,
    get_em,
    wait_for,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def manifest(name: str, seeded: Seeded, **spec: Any) -> dict[str, Any]:
    targets = [
        {"name": "arm64-cpu", "arch": "arm64"},
        {"name": "amd64-cpu", "arch": "amd64"},
        {"name": "gpu", "arch": "amd64", "accelerator": "nvidia-gpu"},
    ]
    return edgemodel(name, seeded, {"targets": targets}, **spec)


def items(cluster: Cluster, kind: str, ns: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", kind, "-n", ns, "-l", selector, "-o", "json").stdout
    result: list[dict[str, Any]] = json.loads(out)["items"]
    return result


def phase_is(cluster: Cluster, ns: str, name: str, phase: str, revision: str | None = None) -> Any:
    def check() -> Any:
        em = get_em(cluster, ns, name)
        status = em.get("status") or {}
        if status.get("phase") != phase:
            return None
        if revision is not None and status.get("stableRevision") == revision:
            return None
        if status.get("observedGeneration") != em["metadata"]["generation"]:
            return None
        return em

    return check


def test_edgemodel_lifecycle_across_arm64_amd64_and_gpu_nodes(
    cluster: Cluster, namespace: str, operator: Operator, seeded: Seeded
) -> None:
    ns, name = namespace, "digits"
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(manifest(name, seeded)))
    em = wait_for(
        "Ready",
        phase_is(cluster, ns, name, "Ready"),
        420,
        on_fail=describe_for(cluster, ns, name, operator),
    )
    status = em["status"]
    first = status["stableRevision"]

    # Real compression: one artifact per variant, with figures in status.
    records = {r["variant"]: r for r in status["revisions"] if r["revision"] == first}
    assert set(records) == {"arm64", "amd64", "gpu"}
    for variant, record in records.items():
        assert record["result"] == "passed" and len(record["artifactDigest"]) == 64
        assert 0 < record["ratio"] < 1.0, record
        assert record["mode"] == ("fp16" if variant == "gpu" else "dynamic-int8")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["observedGeneration"] == em["metadata"]["generation"]
    assert status["readyReplicas"] == "3/3"
    table = cluster.kubectl("get", "em", name, "-n", ns).stdout.splitlines()[1].split()
    assert table[1:4] == ["Ready", first, "3/3"]

    # The real scheduler put each target on a node of the right arch and accelerator.
    pods = items(
        cluster, "pods", ns, f"edgemodel.dev/name={name},app.kubernetes.io/component=runtime"
    )
    assert len(pods) == 3
    for pod in pods:
        target = pod["metadata"]["labels"]["edgemodel.dev/target"]
        node = json.loads(
            cluster.kubectl("get", "node", pod["spec"]["nodeName"], "-o", "json").stdout
        )
        arch = node["metadata"]["labels"]["kubernetes.io/arch"]
        gpu = "nvidia.com/gpu" in node["status"]["capacity"]
        assert (arch, gpu) == {
            "arm64-cpu": ("arm64", False),
            "amd64-cpu": ("amd64", False),
            "gpu": ("amd64", True),
        }[target], (target, pod["spec"]["nodeName"])
        # A real address in the sandbox's pod network, published by the real EndpointSlice
        # controller behind the target's Service.
        ip = pod["status"]["podIP"]
        slices = items(cluster, "endpointslices", ns, f"kubernetes.io/service-name={name}-{target}")
        assert ip in {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}

    # tritonclient, unchanged, against a runtime pod's process on its pod IP.
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    data = np.load(seeded.fixture.evaluation)
    batch = data["input"][:16].astype(np.float32)
    arm_pod = next(
        p for p in pods if p["metadata"]["labels"]["edgemodel.dev/target"] == "arm64-cpu"
    )
    ip = arm_pod["status"]["podIP"]
    http = httpclient.InferenceServerClient(f"{ip}:8000")
    assert http.is_model_ready(name)
    inp = httpclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=True)
    labels = http.infer(name, [inp]).as_numpy("label")
    assert labels is not None and (labels == data["labels"][:16]).mean() >= 0.9
    grpc = grpcclient.InferenceServerClient(f"{ip}:8001")
    ginp = grpcclient.InferInput("input", list(batch.shape), "FP32")
    ginp.set_data_from_numpy(batch)
    glabels = grpc.infer(name, [ginp]).as_numpy("label")
    assert glabels is not None and (glabels == labels).all()

    # A spec change that touches compression makes a new revision, which replaces the old one.
    # (A sparsity unique to this run: the store is content-addressed and would otherwise hand
    # back an artifact an earlier run made, with no compression to interrupt.)
    sparsity = 0.05 + (zlib.crc32(ns.encode()) % 40) / 100
    cluster.kubectl(
        "patch",
        "em",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps(
            {"spec": {"compression": {"quantization": "fp16", "pruning": {"sparsity": sparsity}}}}
        ),
    )
    # Kill the operator mid-way (while it compresses), restart it: same end state, no duplicates.
    wait_for(
        "a compression Job of the new revision",
        lambda: [
            j
            for j in items(cluster, "jobs", ns, f"edgemodel.dev/name={name}")
            if j["metadata"]["labels"]["edgemodel.dev/revision"] != first
        ],
        60,
    )
    operator.kill(signal.SIGKILL)
    operator.start()
    em = wait_for(
        "the new revision Ready",
        phase_is(cluster, ns, name, "Ready", revision=first),
        420,
        on_fail=describe_for(cluster, ns, name, operator),
    )
    second = em["status"]["stableRevision"]
    assert second != first
    jobs = items(cluster, "jobs", ns, f"edgemodel.dev/name={name},edgemodel.dev/revision={second}")
    assert sorted(j["metadata"]["labels"]["edgemodel.dev/variant"] for j in jobs) == [
        "amd64",
        "arm64",
        "gpu",
    ]
    deployments = items(cluster, "deployments", ns, f"edgemodel.dev/name={name}")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
        f"{name}-{t}-{second}" for t in ("arm64-cpu", "amd64-cpu", "gpu")
    )
    reasons = {e["reason"] for e in events(cluster, ns, name)}
    assert {"PhaseChanged", "Compressed", "RevisionStable"} <= reasons

    # Deleting the EdgeModel removes everything it owned (the real garbage collector).
    cluster.kubectl("delete", "em", name, "-n", ns, "--wait=true", "--timeout=60s")
    selector = f"edgemodel.dev/name={name}"
    wait_for(
        "owned objects to be garbage-collected",
        lambda: (
            not any(
                items(cluster, kind, ns, selector)
                for kind in ("deployments", "services", "jobs", "pods")
            )
        ),
        120,
    )


def test_failed_accuracy_gate_reports_the_figures(
    cluster: Cluster, namespace: str, operator: Operator, seeded: Seeded
) -> None:
    uri, sha = seeded.evaluation
    em = manifest(
        "strict",
        seeded,
        targets=[{"name": "cpu", "arch": "amd64"}],
        # Pruning 95% of the weights wrecks this classifier: the gate must catch it.
        compression={
            "quantization": "dynamic-int8",
            "pruning": {"sparsity": 0.95},
            "accuracyGate": {
                "evaluation": {"uri": uri, "sha256": sha},
                "minAgreement": 0.99,
                "maxAccuracyDrop": 0.01,
            },
        },
    )
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(em))
    failed = wait_for(
        "Failed",
        phase_is(cluster, namespace, "strict", "Failed"),
        300,
        on_fail=describe_for(cluster, namespace, "strict", operator),
    )
    conditions = {c["type"]: c for c in failed["status"]["conditions"]}
    compressed = conditions["Compressed"]
    assert compressed["reason"] == "AccuracyGateFailed"
    assert "agreement" in compressed["message"] and "< required 0.99" in compressed["message"]
    # Stalled for kstatus (Flux fails it at once); what `kubectl wait` sees too.
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == (
        "True",
        "AccuracyGateFailed",
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Stalled", "em/strict", "--timeout=30s"
    )
    # Not retried: a failed gate gives the same answer every time (podFailurePolicy FailJob).
    jobs = items(cluster, "jobs", namespace, "edgemodel.dev/name=strict")
    assert len(jobs) == 1 and jobs[0]["status"].get("failed") == 1
    assert items(cluster, "deployments", namespace, "edgemodel.dev/name=strict") == []


def test_target_no_node_can_host_waits_for_such_a_node(
    cluster: Cluster, namespace: str, operator: Operator, seeded: Seeded
) -> None:
    zone = f"zone-{namespace}"
    em = manifest(
        "remote",
        seeded,
        targets=[
            {"name": "far", "arch": "arm64", "nodeSelector": {"topology.kubernetes.io/zone": zone}}
        ],
    )
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(em))

    def unschedulable() -> Any:
        conditions = {
            c["type"]: c
            for c in (get_em(cluster, namespace, "remote").get("status") or {}).get(
                "conditions", []
            )
        }
        available = conditions.get("Available") or {}
        return available if available.get("reason") == "Unschedulable" else None

    available = wait_for(
        "an Unschedulable condition",
        unschedulable,
        300,
        on_fail=describe_for(cluster, namespace, "remote", operator),
    )
    assert f"topology.kubernetes.io/zone={zone}" in available["message"]
    # Such a node appears: the target is picked up again, no manual step.
    from edgemodel_sandbox.fleet import ARM64_CPU, node_manifest

    node = node_manifest(ARM64_CPU, 900 + abs(hash(namespace)) % 90, 0)
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = zone
    node["metadata"]["name"] = f"edge-far-{namespace}"
    node["metadata"]["labels"]["kubernetes.io/hostname"] = node["metadata"]["name"]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
    try:
        wait_for(
            "Ready once the node exists",
            phase_is(cluster, namespace, "remote", "Ready"),
            300,
            on_fail=describe_for(cluster, namespace, "remote", operator),
        )
    finally:
        cluster.kubectl("delete", "em", "remote", "-n", namespace, "--wait=true", check=False)
        cluster.kubectl("delete", "node", node["metadata"]["name"], check=False)
