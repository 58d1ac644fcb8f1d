"""Manifest builders: what every Job, Deployment and Service the operator writes must say.

Pure functions, so each property is checked on the dicts directly: placement by arch and
accelerator, the user's selectors/tolerations/resources merged in, probes on the v2 health
endpoints, the metrics port declared, restricted security contexts, ownerReferences, labels.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from edgemodel_operator import builders
from edgemodel_operator.api import Target, parse_spec, to_dict
from edgemodel_operator.revision import Variant, revision_of
from edgemodel_operator.settings import Settings

SHA = "b" * 64
SETTINGS = Settings()


def model(**extra: Any) -> Any:
    raw = {
        "model": {"uri": "https://models.example.com/m.onnx", "sha256": SHA},
        "targets": [
            {
                "name": "arm",
                "arch": "arm64",
                "nodeSelector": {"topology.kubernetes.io/zone": "site-1"},
                "tolerations": [{"key": "edge", "operator": "Exists"}],
                "resources": {"limits": {"cpu": "2"}, "requests": {"memory": "300Mi"}},
            },
            {"name": "jetson", "arch": "arm64", "accelerator": "nvidia-gpu"},
            {
                "name": "triton-gpu",
                "arch": "amd64",
                "accelerator": "nvidia-gpu",
                "runtime": "triton",
            },
        ],
        **extra,
    }
    return parse_spec(raw)


def deployment(target: Target, spec: Any = None) -> dict[str, Any]:
    spec = spec or model()
    return builders.runtime_deployment(
        "digits", "ns", "uid-1", spec, target, revision_of(spec), SHA, 2, SETTINGS
    )


def pod(dep: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = dep["spec"]["template"]["spec"]
    return result


def init_container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_spec["initContainers"] if c["name"] == name]
    result: dict[str, Any] = found
    return result


@pytest.mark.parametrize("index", [0, 1, 2])
def test_every_pod_is_restricted_owned_and_labelled(index: int) -> None:
    spec = model()
    dep = deployment(spec.targets[index], spec)
    p = pod(dep)
    assert dep["metadata"]["ownerReferences"][0] == {
        "apiVersion": "edgemodel.dev/v1alpha1",
        "kind": "EdgeModel",
        "name": "digits",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["edgemodel.dev/name"] == "digits"
    assert labels["edgemodel.dev/target"] == spec.targets[index].name
    assert labels["edgemodel.dev/revision"] == revision_of(spec)
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    init = p["initContainers"]
    # The node cache's prepare step is the one container that is not "restricted" (see
    # test_node_cache_is_handed_to_the_pods_user_with_chown_only); it runs first.
    assert [c["name"] for c in init] == ["prepare-cache", "fetch"]
    for container in p["containers"] + init[1:]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert "limits" in container["resources"] and "requests" in container["resources"]
    server = p["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {port["name"]: port["containerPort"] for port in server["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["prometheus.io/scrape"] == "true"
        and annotations["prometheus.io/port"] == "8002"
    )


def test_cpu_target_merges_the_users_placement_and_resources() -> None:
    spec = model()
    p = pod(deployment(spec.targets[0], spec))
    assert p["nodeSelector"] == {
        "kubernetes.io/arch": "arm64",
        "topology.kubernetes.io/zone": "site-1",
    }
    assert p["tolerations"] == [{"key": "edge", "operator": "Exists"}]
    resources = p["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "1Gi", "cpu": "2"}
    assert resources["requests"] == {"cpu": "100m", "memory": "300Mi"}
    assert "nvidia.com/gpu" not in resources["limits"]
    assert "--providers" not in p["containers"][0]["args"]


def test_gpu_target_requests_a_gpu_and_tolerates_the_taint() -> None:
    spec = model()
    p = pod(deployment(spec.targets[1], spec))
    assert p["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p[
        "tolerations"
    ]
    resources = p["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1" == resources["requests"]["nvidia.com/gpu"]
    args = p["containers"][0]["args"]
    assert args[args.index("--providers") + 1] == "cuda"


def test_triton_target_runs_tritonserver_on_a_verified_model_repository() -> None:
    spec = model()
    p = pod(deployment(spec.targets[2], spec))
    triton = p["containers"][0]
    assert triton["image"] == SETTINGS.triton_image and triton["command"] == ["tritonserver"]
    assert (
        "--model-repository=/models" in triton["args"] and "--metrics-port=8002" in triton["args"]
    )
    fetch = init_container(p, "fetch")["args"]
    assert fetch[:3] == ["fetch", "--sha256", SHA]
    assert fetch[fetch.index("--layout") + 1] == "triton" and "--fp16" in fetch and "--gpu" in fetch


def test_node_cache_is_host_path_or_empty_dir() -> None:
    spec = model()
    volumes = {v["name"]: v for v in pod(deployment(spec.targets[0], spec))["volumes"]}
    assert volumes["cache"]["hostPath"]["path"] == "/var/lib/edgemodel/cache"
    no_cache = builders.runtime_deployment(
        "digits", "ns", "u", spec, spec.targets[0], "r1", SHA, 1, Settings(node_cache_path="")
    )
    assert {v["name"]: v for v in pod(no_cache)["volumes"]}["cache"] == {
        "name": "cache",
        "emptyDir": {},
    }


def test_node_cache_is_handed_to_the_pods_user_with_chown_only() -> None:
    # The kubelet creates a DirectoryOrCreate hostPath root-owned 0755 and hostPath ignores
    # fsGroup: without this step fetch (uid 10001) cannot write the cache on a real node.
    spec = model()
    p = pod(deployment(spec.targets[0], spec))
    prepare, fetch = p["initContainers"]
    assert prepare["name"] == "prepare-cache" and fetch["name"] == "fetch"
    assert prepare["command"] == ["edgemodel"] and prepare["image"] == SETTINGS.runtime_image
    assert prepare["args"] == [
        "prepare-cache", "/cache", "--uid", "10001", "--gid", "10001", "--mode", "0750"
    ]  # fmt: skip
    assert prepare["volumeMounts"] == [{"name": "cache", "mountPath": "/cache"}]
    assert prepare["securityContext"] == {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "limits" in prepare["resources"] and "requests" in prepare["resources"]
    # The pod itself stays non-root; only this container overrides it.
    assert p["securityContext"]["runAsUser"] == 10001
    assert {"name": "cache", "mountPath": "/cache"} in fetch["volumeMounts"]
    # Without a node cache (an emptyDir, fsGroup applies) there is nothing to prepare, so the
    # pod is "restricted" as a whole.
    no_cache = builders.runtime_deployment(
        "digits", "ns", "u", spec, spec.targets[0], "r1", SHA, 1, Settings(node_cache_path="")
    )
    assert [c["name"] for c in pod(no_cache)["initContainers"]] == ["fetch"]


def test_gpu_servers_refuse_a_fallback_provider_unless_allowed() -> None:
    spec = model()
    gpu_args = pod(deployment(spec.targets[1], spec))["containers"][0]["args"]
    assert gpu_args[gpu_args.index("--providers") + 1] == "cuda"
    assert "--require-provider" in gpu_args
    assert gpu_args[gpu_args.index("--termination-log") + 1] == "/dev/termination-log"
    cpu_args = pod(deployment(spec.targets[0], spec))["containers"][0]["args"]
    assert "--require-provider" not in cpu_args
    lenient = builders.runtime_deployment(
        "digits", "ns", "u", spec, spec.targets[1], "r1", SHA, 1,
        Settings(strict_gpu_providers=False),
    )  # fmt: skip
    lenient_args = pod(lenient)["containers"][0]["args"]
    assert "--providers" in lenient_args and "--require-provider" not in lenient_args


def test_artifact_port_reaches_every_pod_and_the_store() -> None:
    settings = Settings(artifact_port=9000)
    assert settings.artifact_url == "http://edgemodel-artifacts.edgemodel-system.svc:9000"
    spec = model()
    dep = builders.runtime_deployment(
        "digits", "ns", "u", spec, spec.targets[0], "r1", SHA, 1, settings
    )
    fetch = init_container(pod(dep), "fetch")["args"]
    assert fetch[fetch.index("--server") + 1] == settings.artifact_url
    job = builders.compression_job("digits", "ns", "u", spec, "r1", "arm64", settings)
    publish = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert publish[publish.index("--server") + 1] == settings.artifact_url
    _sa, _pvc, store, svc = builders.artifact_store(settings)
    server = store["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][server["args"].index("--port") + 1] == "9000"
    assert server["ports"] == [{"name": "http", "containerPort": 9000}]
    assert svc["spec"]["ports"][0]["port"] == 9000


def test_service_spans_revisions_of_one_target() -> None:
    spec = model()
    svc = builders.target_service("digits", "ns", "uid-1", spec.targets[0])
    assert svc["spec"]["selector"] == {
        "edgemodel.dev/name": "digits",
        "edgemodel.dev/target": "arm",
    }
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http", "grpc", "metrics"]


@pytest.mark.parametrize(
    ("uri", "path", "volume_kind"),
    [
        ("https://models.example.com/m.onnx", "https://models.example.com/m.onnx", None),
        (
            "pvc://models/digits/m.onnx",
            "/sources/model/models/digits/m.onnx",
            "persistentVolumeClaim",
        ),
        ("file:///srv/models/m.onnx", "/sources/model/host/m.onnx", "hostPath"),
    ],
)
def test_compression_job_reads_every_source_scheme(
    uri: str, path: str, volume_kind: str | None
) -> None:
    spec = parse_spec(
        {
            "model": {"uri": uri, "sha256": SHA},
            "targets": [{"name": "a", "arch": "amd64"}],
            "compression": {
                "quantization": "static-int8",
                "calibration": {"uri": "https://x/c.npz", "sha256": "c" * 64},
                "pruning": {"sparsity": 0.5},
                "accuracyGate": {
                    "evaluation": {"uri": "https://x/e.npz", "sha256": "e" * 64},
                    "maxAccuracyDrop": 0.005,
                    "minAgreement": 0.98,
                },
            },
        }
    )
    job = builders.compression_job("digits", "ns", "uid-1", spec, "r1", "amd64", SETTINGS)
    pod_spec = job["spec"]["template"]["spec"]
    args = pod_spec["initContainers"][0]["args"]
    assert args[1] == path
    flags = {
        a: b for a, b in itertools.pairwise(args) if a.startswith("--") and not b.startswith("--")
    }
    assert (
        flags["--sha256"] == SHA
        and flags["--mode"] == "static-int8"
        and flags["--target"] == "amd64"
    )
    assert flags["--calibration-sha256"] == "c" * 64 and flags["--eval-sha256"] == "e" * 64
    assert flags["--max-accuracy-drop"] == "0.5"  # fraction in the API, points on the command line
    assert flags["--min-agreement"] == "0.98" and flags["--prune-sparsity"] == "0.5"
    kinds = {k for v in pod_spec["volumes"] for k in v if k != "name"}
    # "projected": the publish step's artifact-store token (audience edgemodel-artifacts).
    assert (volume_kind in kinds) if volume_kind else kinds == {"emptyDir", "projected"}
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    assert job["spec"]["backoffLimit"] == SETTINGS.job_backoff_limit
    assert job["spec"]["activeDeadlineSeconds"] == SETTINGS.job_deadline_seconds
    assert pod_spec["containers"][0]["args"][:2] == ["publish", "/work/out"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_embedding_bits_reach_cpu_compression_jobs_only() -> None:
    raw: dict[str, Any] = {
        "model": {"uri": "https://x/m.onnx", "sha256": SHA},
        "targets": [
            {"name": "cpu", "arch": "arm64"},
            {"name": "gpu", "arch": "amd64", "accelerator": "nvidia-gpu"},
        ],
    }
    spec = parse_spec({**raw, "compression": {"embeddingBits": 4}})

    def args(variant: Variant) -> list[str]:
        job = builders.compression_job("m", "ns", "uid", spec, "r1", variant, SETTINGS)
        return list(job["spec"]["template"]["spec"]["initContainers"][0]["args"])

    cpu = args("arm64")
    assert cpu[cpu.index("--embedding-bits") + 1] == "4"
    gpu = args("gpu")  # fp16 artifact: GatherBlockQuantized is a CPU kernel
    assert "--embedding-bits" not in gpu and gpu[gpu.index("--mode") + 1] == "fp16"
    # A new revision when it is set; specs that never set it keep the revision they had.
    unset = parse_spec(raw)
    assert "embeddingBits" not in to_dict(unset.compression)
    assert revision_of(unset) != revision_of(spec)


def test_names_fit_kubernetes_limits() -> None:
    name = "m" * 40
    assert len(builders.job_name(name, "r" + "0" * 10, "amd64")) <= 63
    assert len(builders.service_name(name, "t" * 20)) <= 63


def test_artifact_store_is_a_pvc_server_and_service() -> None:
    sa, pvc, dep, svc = builders.artifact_store(SETTINGS)
    assert (
        sa["kind"] == "ServiceAccount"
        and dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    )
    assert pvc["kind"] == "PersistentVolumeClaim" and dep["spec"]["strategy"] == {
        "type": "Recreate"
    }
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][0] == "artifact-server"
    assert svc["spec"]["ports"][0]["port"] == SETTINGS.artifact_port


def test_compression_job_tolerates_its_targets_taints_and_prefers_their_nodes() -> None:
    spec = model()  # arm64 variant: "arm" only (jetson is the gpu variant with triton-gpu)
    arm = pod(builders.compression_job("digits", "ns", "u", spec, "r1", "arm64", SETTINGS))
    assert arm["tolerations"] == [{"key": "edge", "operator": "Exists"}]
    (term,) = arm["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["preference"]["matchExpressions"] == [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["site-1"]}
    ]
    assert "nodeSelector" not in arm  # preferred only: never waits for a node it cannot get
    gpu = pod(builders.compression_job("digits", "ns", "u", spec, "r1", "gpu", SETTINGS))
    assert gpu["tolerations"] == [builders.GPU_TOLERATION]  # both GPU targets', once
    assert "affinity" not in gpu  # neither selects nodes
    # Two targets of one variant: only the selector terms they share are preferred.
    shared = parse_spec(
        {
            "model": {"uri": "https://models.example.com/m.onnx", "sha256": SHA},
            "targets": [
                {"name": "a", "arch": "amd64", "nodeSelector": {"site": "s1", "rack": "1"}},
                {"name": "b", "arch": "amd64", "nodeSelector": {"site": "s1", "rack": "2"}},
            ],
        }
    )
    both = pod(builders.compression_job("m", "ns", "u", shared, "r1", "amd64", SETTINGS))
    (term,) = both["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["preference"]["matchExpressions"] == [
        {"key": "site", "operator": "In", "values": ["s1"]}
    ]
    assert "tolerations" not in both
