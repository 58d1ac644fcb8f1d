"""The EdgeModel API as the real API server enforces it.

The CRD from crds/ is installed into the sandbox's kube-apiserver; a minimal manifest comes
back with every default filled in (and the Python model defaults it the same way); each
invalid manifest below breaks exactly one rule and must be refused by the API server with a
message naming the field. The Python model refuses the same manifests, naming the same field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from edgemodel_operator.api import SpecError, parse_spec
from tests.conftest import Cluster

pytestmark = pytest.mark.sandbox

SHA = "3" * 64


def minimal(name: str = "digits") -> dict[str, Any]:
    return {
        "apiVersion": "edgemodel.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "https://models.example.com/digits.onnx", "sha256": SHA},
            "targets": [{"name": "arm", "arch": "arm64"}],
        },
    }


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        keys = path.split(".")
        node = spec
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[keys[-1]] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        keys = path.split(".")
        node = spec
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


def _both(*mutations: Mutation) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(spec)

    return mutate


GATE = {"evaluation": {"uri": "https://models.example.com/eval.npz", "sha256": SHA}}
ARM = {"name": "arm", "arch": "arm64"}

# (id, mutation of spec, field the error must name)
INVALID: list[tuple[str, Mutation, str]] = [
    ("sha256-uppercase", _set("model.sha256", "A" * 64), "spec.model.sha256"),
    ("sha256-short", _set("model.sha256", "abc"), "spec.model.sha256"),
    ("sha256-missing", _delete("model.sha256"), "spec.model.sha256"),
    ("uri-scheme", _set("model.uri", "ftp://models.example.com/m.onnx"), "spec.model.uri"),
    ("model-missing", _delete("model"), "spec.model"),
    (
        "quantization-unknown",
        _set("compression.quantization", "int4"),
        "spec.compression.quantization",
    ),
    (
        "static-int8-without-calibration",
        _set("compression.quantization", "static-int8"),
        "spec.compression.calibration",
    ),
    (
        "embedding-bits-unknown",
        _set("compression.embeddingBits", 6),
        "spec.compression.embeddingBits",
    ),
    (
        "embedding-bits-4-with-fp16",
        _both(_set("compression.quantization", "fp16"), _set("compression.embeddingBits", 4)),
        "spec.compression.embeddingBits",
    ),
    (
        "block-size-unknown",
        _both(_set("compression.quantization", "int4-weight"), _set("compression.blockSize", 48)),
        "spec.compression.blockSize",
    ),
    (
        "block-size-with-dynamic-int8",
        _set("compression.blockSize", 64),
        "spec.compression.blockSize",
    ),
    (
        "symmetric-with-fp16",
        _both(_set("compression.quantization", "fp16"), _set("compression.symmetric", True)),
        "spec.compression.blockSize",
    ),
    (
        "calibration-bad-digest",
        _set("compression.calibration", {"uri": "https://x/c.npz", "sha256": "zz"}),
        "spec.compression.calibration.sha256",
    ),
    (
        "sparsity-too-high",
        _set("compression.pruning", {"sparsity": 0.99}),
        "spec.compression.pruning.sparsity",
    ),
    (
        "sparsity-negative",
        _set("compression.pruning", {"sparsity": -0.1}),
        "spec.compression.pruning.sparsity",
    ),
    (
        "gate-without-evaluation",
        _set("compression.accuracyGate", {"minAgreement": 0.9}),
        "spec.compression.accuracyGate.evaluation",
    ),
    (
        "gate-agreement-above-1",
        _set("compression.accuracyGate", {**GATE, "minAgreement": 1.5}),
        "spec.compression.accuracyGate.minAgreement",
    ),
    ("targets-empty", _set("targets", []), "spec.targets"),
    ("targets-missing", _delete("targets"), "spec.targets"),
    (
        "targets-too-many",
        _set("targets", [{"name": f"t{i}", "arch": "arm64"} for i in range(17)]),
        "spec.targets",
    ),
    (
        "target-names-duplicate",
        _set("targets", [ARM, {"name": "arm", "arch": "amd64"}]),
        "spec.targets[1]",
    ),
    ("target-name-not-dns", _set("targets.0.name", "Arm_1"), "spec.targets[0].name"),
    ("arch-unknown", _set("targets.0.arch", "riscv64"), "spec.targets[0].arch"),
    (
        "arch-missing",
        _delete("targets.0.arch") if False else _set("targets", [{"name": "arm"}]),
        "spec.targets[0].arch",
    ),
    ("accelerator-unknown", _set("targets.0.accelerator", "tpu"), "spec.targets[0].accelerator"),
    ("runtime-unknown", _set("targets.0.runtime", "tensorflow"), "spec.targets[0].runtime"),
    (
        "replicas-min-above-max",
        _set("targets.0.replicas", {"min": 3, "max": 2}),
        "spec.targets[0].replicas.min",
    ),
    (
        "replicas-max-above-1000",
        _set("targets.0.replicas", {"min": 1, "max": 1001}),
        "spec.targets[0].replicas.max",
    ),
    (
        "replicas-min-negative",
        _set("targets.0.replicas", {"min": -1}),
        "spec.targets[0].replicas.min",
    ),
    (
        "node-selector-contradicts-arch",
        _set("targets.0.nodeSelector", {"kubernetes.io/arch": "amd64"}),
        "spec.targets[0].nodeSelector",
    ),
    (
        "gpu-limit-without-accelerator",
        _set("targets.0.resources", {"limits": {"nvidia.com/gpu": 1}}),
        "spec.targets[0].resources.limits",
    ),
    (
        "toleration-exists-with-value",
        _set("targets.0.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
        "spec.targets[0].tolerations[0].value",
    ),
    (
        "toleration-exists-without-key",
        _set("targets.0.tolerations", [{"operator": "Exists", "effect": "NoSchedule"}]),
        "spec.targets[0].tolerations[0].key",
    ),
    (
        "toleration-effect-unknown",
        _set("targets.0.tolerations", [{"key": "k", "effect": "Sometimes"}]),
        "spec.targets[0].tolerations[0].effect",
    ),
    ("slo-latency-zero", _set("slo", {"latencyP95Ms": 0}), "spec.slo.latencyP95Ms"),
    (
        "slo-error-rate-above-1",
        _set("slo", {"latencyP95Ms": 20, "maxErrorRate": 2}),
        "spec.slo.maxErrorRate",
    ),
    ("autoscaling-without-slo", _set("autoscaling", {"enabled": True}), "spec.slo"),
    (
        "autoscaling-thresholds-inverted",
        _both(
            _set("slo", {"latencyP95Ms": 20}),
            _set("autoscaling", {"scaleUpAt": 0.5, "scaleDownAt": 0.8}),
        ),
        "spec.autoscaling.scaleDownAt",
    ),
    (
        "autoscaling-shed-line-zero",
        _set("autoscaling", {"scaleUpAtShedFraction": 0}),
        "spec.autoscaling.scaleUpAtShedFraction",
    ),
    (
        "autoscaling-shed-line-above-one",
        _set("autoscaling", {"scaleUpAtShedFraction": 1.5}),
        "spec.autoscaling.scaleUpAtShedFraction",
    ),
    (
        "autoscaling-interval-too-short",
        _set("autoscaling", {"intervalSeconds": 1}),
        "spec.autoscaling.intervalSeconds",
    ),
    ("rollout-steps-not-ending-at-100", _set("rollout", {"steps": [10, 50]}), "spec.rollout.steps"),
    ("rollout-steps-decreasing", _set("rollout", {"steps": [50, 10, 100]}), "spec.rollout.steps"),
    ("rollout-steps-repeated", _set("rollout", {"steps": [10, 10, 100]}), "spec.rollout.steps"),
    ("rollout-step-zero", _set("rollout", {"steps": [0, 100]}), "spec.rollout.steps[0]"),
    (
        "rollout-failure-threshold-zero",
        _set("rollout", {"failureThreshold": 0}),
        "spec.rollout.failureThreshold",
    ),
    (
        "rollout-inconclusive-limit-zero",
        _set("rollout", {"inconclusiveLimit": 0}),
        "spec.rollout.inconclusiveLimit",
    ),
    (
        "rollout-error-limit-too-high",
        _set("rollout", {"errorLimit": 1001}),
        "spec.rollout.errorLimit",
    ),
    (
        "token-slo-without-generative",
        _set("slo", {"latencyP95Ms": 9000, "timeToFirstTokenP95Ms": 300}),
        "spec.slo",
    ),
    (
        "token-slo-generative-false",
        _both(
            _set("slo", {"latencyP95Ms": 9000, "interTokenP95Ms": 40}),
            _set("serving", {"generative": False}),
        ),
        "spec.slo",
    ),
    (
        "serving-max-sequences-zero",
        _set("serving", {"maxSequences": 0}),
        "spec.serving.maxSequences",
    ),
    ("serving-tokenizer-unknown", _set("serving", {"tokenizer": "bpe"}), "spec.serving.tokenizer"),
    (
        "serving-tokenizer-file-missing",
        _set("serving", {"generative": True, "tokenizer": "file"}),
        "spec.serving.tokenizerFile",
    ),
    (
        "serving-tokenizer-file-not-http",
        _set(
            "serving",
            {
                "generative": True,
                "tokenizer": "file",
                "tokenizerFile": {"uri": "pvc://claim/tokenizer.json", "sha256": "c" * 64},
            },
        ),
        "spec.serving.tokenizerFile.uri",
    ),
    ("paused-not-boolean", _set("paused", "yes"), "spec.paused"),
    ("unknown-field", _set("replicas", 3), "spec.replicas"),
]


def _apply(cluster: Cluster, namespace: str, manifest: dict[str, Any], dry_run: bool = True) -> Any:
    args = ["apply", "-n", namespace, "-f", "-"]
    if dry_run:
        args.insert(1, "--dry-run=server")
    return cluster.kubectl(*args, input=yaml.safe_dump(manifest), check=False)


def test_crd_is_established_with_short_name_and_categories(
    cluster: Cluster, crd: dict[str, Any]
) -> None:
    resources = cluster.kubectl("api-resources", "--api-group=edgemodel.dev", "-o", "wide").stdout
    assert "edgemodels" in resources and " em " in resources
    assert "edge,ml" in resources
    served = json.loads(
        cluster.kubectl("get", "crd", "edgemodels.edgemodel.dev", "-o", "json").stdout
    )
    assert served["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_minimal_manifest_comes_back_with_every_default(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    manifest = minimal()
    result = _apply(cluster, namespace, manifest, dry_run=False)
    assert result.returncode == 0, result.stderr
    stored = json.loads(
        cluster.kubectl("get", "em", "digits", "-n", namespace, "-o", "json").stdout
    )
    spec = stored["spec"]
    assert spec["compression"] == {"quantization": "dynamic-int8"}
    assert spec["targets"][0] == {
        "name": "arm",
        "arch": "arm64",
        "accelerator": "none",
        "runtime": "onnxruntime",
        "replicas": {"min": 1},
    }
    assert spec["autoscaling"] == {
        "enabled": False,
        "intervalSeconds": 30,
        "scaleUpAt": 0.9,
        "scaleDownAt": 0.5,
        "stabilizationSeconds": 300,
        "scaleUpAtShedFraction": 0.01,
    }
    assert spec["rollout"] == {
        "steps": [10, 50, 100],
        "analysisIntervalSeconds": 30,
        "failureThreshold": 3,
        "postPromotionGuardSeconds": 300,
        "inconclusiveLimit": 20,
        "errorLimit": 10,
    }
    assert spec["paused"] is False
    # The operator's model defaults an undefaulted spec exactly as the API server did.
    assert parse_spec(manifest["spec"]) == parse_spec(spec)


@pytest.mark.parametrize(
    ("case", "mutation", "field"), INVALID, ids=[case for case, _, _ in INVALID]
)
def test_invalid_manifest_is_refused_naming_the_field(
    cluster: Cluster, crd: dict[str, Any], namespace: str, case: str, mutation: Mutation, field: str
) -> None:
    manifest = minimal(f"bad-{case}")
    mutation(manifest["spec"])
    result = _apply(cluster, namespace, manifest)
    assert result.returncode != 0, f"API server accepted {case}: {result.stdout}"
    assert field in result.stderr, f"{case}: error does not name {field}: {result.stderr}"
    with pytest.raises(SpecError) as refused:
        parse_spec(manifest["spec"])
    assert str(refused.value).startswith(field), f"{case}: Python model names {refused.value}"


def test_every_valid_variant_is_accepted(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    manifest = minimal("full")
    manifest["spec"].update(
        {
            "compression": {
                "quantization": "static-int8",
                "calibration": {"uri": "pvc://models/digits/calibration.npz", "sha256": SHA},
                "pruning": {"sparsity": 0.5},
                "accuracyGate": {
                    **copy.deepcopy(GATE),
                    "maxAccuracyDrop": 0.005,
                    "minAgreement": 0.98,
                },
            },
            "targets": [
                {
                    "name": "arm",
                    "arch": "arm64",
                    "replicas": {"min": 0, "max": 1000},
                    "nodeSelector": {
                        "kubernetes.io/arch": "arm64",
                        "topology.kubernetes.io/zone": "site-1",
                    },
                },
                {
                    "name": "jetson",
                    "arch": "arm64",
                    "accelerator": "nvidia-gpu",
                    "runtime": "triton",
                    "resources": {
                        "limits": {"nvidia.com/gpu": 1, "memory": "2Gi"},
                        "requests": {"cpu": "500m"},
                    },
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                },
            ],
            "slo": {"latencyP95Ms": 12.5, "maxErrorRate": 0.001},
            "autoscaling": {
                "enabled": True,
                "intervalSeconds": 10,
                "scaleUpAt": 1.0,
                "scaleDownAt": 0.3,
            },
            "rollout": {"steps": [5, 25, 50, 100], "failureThreshold": 2},
            "paused": True,
        }
    )
    result = _apply(cluster, namespace, manifest, dry_run=False)
    assert result.returncode == 0, result.stderr
    parsed = parse_spec(manifest["spec"])
    assert parsed.targets[1].gpu and parsed.targets[0].replicas.upper == 1000


@pytest.mark.parametrize("quantization", ["int4-weight", "int8-weight"])
def test_weight_only_quantization_takes_block_size_and_symmetry(
    cluster: Cluster, crd: dict[str, Any], namespace: str, quantization: str
) -> None:
    manifest = minimal(f"blocks-{quantization}")
    manifest["spec"]["compression"] = {
        "quantization": quantization,
        "blockSize": 128,
        "symmetric": True,
        "accuracyGate": copy.deepcopy(GATE),
    }
    result = _apply(cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr
    compression = parse_spec(manifest["spec"]).compression
    assert (compression.block_size, compression.symmetric) == (128, True)


def test_a_generative_model_with_token_slos_is_accepted(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    manifest = minimal("lm")
    manifest["spec"].update(
        {
            "serving": {
                "generative": True,
                "tokenizer": "file",
                "tokenizerFile": {"uri": "https://models.example.com/t.json", "sha256": "c" * 64},
                "maxSequences": 4,
            },
            "slo": {"latencyP95Ms": 30000, "timeToFirstTokenP95Ms": 400, "interTokenP95Ms": 50},
            "autoscaling": {"enabled": True},
        }
    )
    result = _apply(cluster, namespace, manifest, dry_run=False)
    assert result.returncode == 0, result.stderr
    parsed = parse_spec(manifest["spec"])
    assert parsed.generative and parsed.slo is not None
    assert parsed.slo.time_to_first_token_p95_ms == 400
    assert parsed.serving is not None and parsed.serving.tokenizer_file is not None


def test_kubectl_get_shows_the_printer_columns(
    cluster: Cluster, crd: dict[str, Any], namespace: str
) -> None:
    assert _apply(cluster, namespace, minimal("shown"), dry_run=False).returncode == 0
    status = {
        "status": {
            "phase": "Ready",
            "stableRevision": "r-1a2b3c4d",
            "readyReplicas": "3/3",
            "p95LatencyMs": 7.5,
            "observedGeneration": 1,
        }
    }
    cluster.kubectl(
        "patch",
        "em",
        "shown",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    table = cluster.kubectl("get", "em", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "STABLE", "READY", "P95MS", "AGE"]
    assert table[1].split()[:5] == ["shown", "Ready", "r-1a2b3c4d", "3/3", "7.5"]


@pytest.mark.parametrize(
    "toleration",
    [{"operator": "Exists"}, {"key": "", "operator": "Exists", "effect": "NoSchedule"}],
    ids=["no-key", "empty-key"],
)
def test_toleration_of_every_taint_is_refused(
    cluster: Cluster, crd: dict[str, Any], namespace: str, toleration: dict[str, Any]
) -> None:
    # Attack: `operator: Exists` with no key tolerates every taint, so an EdgeModel author
    # could put its pods on nodes the admin reserved (control plane, other tenants' nodes).
    manifest = minimal("tolerate-all")
    manifest["spec"]["targets"][0]["tolerations"] = [toleration]
    result = _apply(cluster, namespace, manifest)
    assert result.returncode != 0, f"API server accepted {toleration}: {result.stdout}"
    assert "spec.targets[0].tolerations[0].key" in result.stderr, result.stderr
    # A keyed Exists toleration (the GPU one the operator itself adds) stays valid.
    manifest["spec"]["targets"][0]["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    accepted = _apply(cluster, namespace, manifest)
    assert accepted.returncode == 0, accepted.stderr
