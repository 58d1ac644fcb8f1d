"""Owns the typed Python model of the EdgeModel API (spec and status), kept in sync with crds/.

`parse_spec` turns the raw `spec` dict into frozen dataclasses, applying the same defaults as
the CRD's structural schema, so the operator sees one shape whether or not the API server
defaulted the object (e.g. an object stored before a default was added). Field names are the
contract's camelCase names, carried in each field's metadata; tests/unit/test_api_types.py
walks the CRD schema and this module together and fails on any drift.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from edgemodel_operator.errors import EdgeModelOperatorError, FailureKind

GROUP = "edgemodel.dev"
VERSION = "v1alpha1"
PLURAL = "edgemodels"
KIND = "EdgeModel"

Quantization = Literal["dynamic-int8", "static-int8", "fp16", "none", "int4-weight", "int8-weight"]
WEIGHT_ONLY_QUANTIZATION = ("int4-weight", "int8-weight")
Arch = Literal["amd64", "arm64"]
Accelerator = Literal["none", "nvidia-gpu"]
Runtime = Literal["onnxruntime", "triton"]
Tokenizer = Literal["none", "bytes", "file"]


class Phase(enum.StrEnum):
    """The EdgeModel's phase; its values are the strings written to status.phase.

    The edges between phases are declared in `lifecycle.phases` (docs/architecture.md,
    "Lifecycle").
    """

    PENDING = "Pending"
    COMPRESSING = "Compressing"
    DEPLOYING = "Deploying"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    ROLLING_BACK = "RollingBack"
    FAILED = "Failed"

    @classmethod
    def parse(cls, value: object) -> Phase:
        """The phase status holds; a missing or unknown one reads as Pending."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.PENDING


SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
URI_RE = re.compile(r"^(https?|file|pvc)://[^\s]+$")


class SpecError(EdgeModelOperatorError, ValueError):
    """An EdgeModel spec the operator cannot act on; the message names the field."""

    failure = FailureKind.INVALID_INPUT

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def _f(json_name: str, default: Any = dataclasses.MISSING, **extra: Any) -> Any:
    """A dataclass field carrying its API (camelCase) name and constraints in metadata."""
    metadata = {"json": json_name, **extra}
    if default is dataclasses.MISSING:
        return field(metadata=metadata)
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: _copy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return dataclasses.replace(value)


# ------------------------------------------------------------------ spec


@dataclass(frozen=True)
class DataRef:
    """A file the compression step reads, pinned by digest."""

    uri: str = _f("uri", pattern=URI_RE)
    sha256: str = _f("sha256", pattern=SHA256_RE)


@dataclass(frozen=True)
class ModelSource:
    """Where the source ONNX model lives."""

    uri: str = _f("uri", pattern=URI_RE)
    sha256: str = _f("sha256", pattern=SHA256_RE)


@dataclass(frozen=True)
class Pruning:
    """Unstructured magnitude pruning before quantization."""

    sparsity: float = _f("sparsity", minimum=0.0, maximum=0.95)


@dataclass(frozen=True)
class AccuracyGate:
    """Limits the compressed model must stay within on the evaluation data."""

    evaluation: DataRef = _f("evaluation")
    max_accuracy_drop: float | None = _f("maxAccuracyDrop", None, minimum=0.0, maximum=1.0)
    min_agreement: float | None = _f("minAgreement", None, minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class Compression:
    """How the model is compressed."""

    quantization: Quantization = _f("quantization", "dynamic-int8")
    calibration: DataRef | None = _f("calibration", None)
    pruning: Pruning | None = _f("pruning", None)
    accuracy_gate: AccuracyGate | None = _f("accuracyGate", None)
    embedding_bits: Literal[4, 8] | None = _f("embeddingBits", None)
    # int4-weight / int8-weight only: values per quantization block, and no zero points
    block_size: Literal[32, 64, 128] | None = _f("blockSize", None)
    symmetric: bool | None = _f("symmetric", None)


@dataclass(frozen=True)
class Replicas:
    """Replica bounds of one target; max defaults to min."""

    min: int = _f("min", 1, minimum=0, maximum=1000)
    max: int | None = _f("max", None, minimum=0, maximum=1000)

    @property
    def upper(self) -> int:
        return self.min if self.max is None else self.max


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration, passed through to the target's pods."""

    key: str | None = _f("key", None)
    operator: Literal["Exists", "Equal"] | None = _f("operator", None)
    value: str | None = _f("value", None)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = _f("effect", None)
    toleration_seconds: int | None = _f("tolerationSeconds", None)


@dataclass(frozen=True)
class Resources:
    """Container resource requests and limits (Kubernetes quantities)."""

    limits: dict[str, str] = _f("limits", {})
    requests: dict[str, str] = _f("requests", {})


@dataclass(frozen=True)
class Target:
    """One group of edge nodes the model is served on."""

    name: str = _f("name", pattern=DNS_LABEL_RE)
    arch: Arch = _f("arch")
    accelerator: Accelerator = _f("accelerator", "none")
    runtime: Runtime = _f("runtime", "onnxruntime")
    replicas: Replicas = _f("replicas", Replicas())
    node_selector: dict[str, str] = _f("nodeSelector", {})
    tolerations: list[Toleration] = _f("tolerations", [])
    resources: Resources = _f("resources", Resources())

    @property
    def gpu(self) -> bool:
        return self.accelerator == "nvidia-gpu"


@dataclass(frozen=True)
class SLO:
    """The latency and error objectives the control loop keeps."""

    latency_p95_ms: float = _f("latencyP95Ms", exclusive_minimum=0.0, maximum=600000.0)
    max_error_rate: float = _f("maxErrorRate", 0.01, minimum=0.0, maximum=1.0)
    # Generative models only (spec.serving.generative): when set, these replace latencyP95Ms
    # as the latency signals of the autoscaler and the canary analysis.
    time_to_first_token_p95_ms: float | None = _f(
        "timeToFirstTokenP95Ms", None, exclusive_minimum=0.0, maximum=600000.0
    )
    inter_token_p95_ms: float | None = _f(
        "interTokenP95Ms", None, exclusive_minimum=0.0, maximum=600000.0
    )

    @property
    def token_slos(self) -> bool:
        return self.time_to_first_token_p95_ms is not None or self.inter_token_p95_ms is not None


@dataclass(frozen=True)
class Serving:
    """How the runtime serves the model: a generative decoder streams tokens (v2 generate)."""

    generative: bool = _f("generative", False)
    max_sequences: int = _f("maxSequences", 8, minimum=1, maximum=1024)
    tokenizer: Tokenizer = _f("tokenizer", "none")
    # tokenizer: file — a Hugging Face tokenizer.json the runtime pods fetch by digest.
    tokenizer_file: DataRef | None = _f("tokenizerFile", None)


@dataclass(frozen=True)
class Autoscaling:
    """Prometheus-driven replica scaling."""

    enabled: bool = _f("enabled", False)
    interval_seconds: int = _f("intervalSeconds", 30, minimum=5, maximum=3600)
    scale_up_at: float = _f("scaleUpAt", 0.9, exclusive_minimum=0.0, maximum=10.0)
    scale_down_at: float = _f("scaleDownAt", 0.5, minimum=0.0, maximum=10.0)
    stabilization_seconds: int = _f("stabilizationSeconds", 300, minimum=0, maximum=86400)
    # Saturation beside latency: more than this share of a target's requests shed at the
    # in-flight cap scales it up, whatever the p95 of the requests it did serve.
    scale_up_at_shed_fraction: float = _f(
        "scaleUpAtShedFraction", 0.01, exclusive_minimum=0.0, maximum=1.0
    )


@dataclass(frozen=True)
class Rollout:
    """Canary steps and the analysis that gates them."""

    steps: list[int] = _f("steps", [10, 50, 100])
    analysis_interval_seconds: int = _f("analysisIntervalSeconds", 30, minimum=5, maximum=3600)
    failure_threshold: int = _f("failureThreshold", 3, minimum=1, maximum=100)
    post_promotion_guard_seconds: int = _f(
        "postPromotionGuardSeconds", 300, minimum=0, maximum=86400
    )
    # Argo's inconclusiveLimit / consecutiveErrorLimit: this many analyses in a row without
    # data (or with Prometheus unreachable) stall the rollout; the stable revision keeps serving.
    inconclusive_limit: int = _f("inconclusiveLimit", 20, minimum=1, maximum=1000)
    error_limit: int = _f("errorLimit", 10, minimum=1, maximum=1000)


@dataclass(frozen=True)
class EdgeModelSpec:
    """The whole desired state of one EdgeModel."""

    model: ModelSource = _f("model")
    targets: list[Target] = _f("targets")
    compression: Compression = _f("compression", Compression())
    slo: SLO | None = _f("slo", None)
    serving: Serving | None = _f("serving", None)
    autoscaling: Autoscaling = _f("autoscaling", Autoscaling())
    rollout: Rollout = _f("rollout", Rollout())
    paused: bool = _f("paused", False)

    @property
    def generative(self) -> bool:
        """Served as a generative decoder (token streaming, token-level SLOs)."""
        return self.serving is not None and self.serving.generative


# ------------------------------------------------------------------ status


@dataclass(frozen=True)
class Condition:
    """A kstatus-compatible condition."""

    type: str = _f("type")
    status: Literal["True", "False", "Unknown"] = _f("status")
    reason: str = _f("reason", "")
    message: str = _f("message", "")
    last_transition_time: str = _f("lastTransitionTime", "")
    observed_generation: int = _f("observedGeneration", 0)


@dataclass(frozen=True)
class Rollback:
    """The last automatic rollback."""

    from_revision: str = _f("from")
    to_revision: str = _f("to")
    reason: str = _f("reason", "")
    time: str = _f("time", "")


# ------------------------------------------------------------------ parsing

T = TypeVar("T")


def parse_spec(raw: dict[str, Any]) -> EdgeModelSpec:
    """Parses and defaults a raw spec; raises SpecError naming the first bad field."""
    spec = parse(EdgeModelSpec, raw, "spec")
    _check_cross_field(spec)
    return spec


def parse(cls: type[T], raw: Any, path: str) -> T:
    """Builds dataclass `cls` from its API dict, applying field defaults."""
    if not isinstance(raw, dict):
        raise SpecError(path, f"expected an object, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.metadata["json"]: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SpecError(f"{path}.{unknown[0]}", "unknown field")
    values: dict[str, Any] = {}
    for json_name, fld in known.items():
        sub = f"{path}.{json_name}"
        if json_name not in raw or raw[json_name] is None:
            if fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
                raise SpecError(sub, "required")
            continue
        value = _convert(hints[fld.name], raw[json_name], sub)
        _check_constraints(fld.metadata, value, sub)
        values[fld.name] = value
    return cls(**values)


def _convert(hint: Any, raw: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in get_args(hint) if arg is not type(None)]
        return _convert(options[0], raw, path)
    if origin is Literal:
        allowed = get_args(hint)
        if raw not in allowed:
            raise SpecError(
                path, f"unsupported value {raw!r}: must be one of {', '.join(map(str, allowed))}"
            )
        return raw
    if origin is list:
        if not isinstance(raw, list):
            raise SpecError(path, "expected a list")
        (item,) = get_args(hint)
        return [_convert(item, value, f"{path}[{i}]") for i, value in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, dict):
            raise SpecError(path, "expected an object")
        return {str(k): str(v) for k, v in raw.items()}
    if dataclasses.is_dataclass(hint):
        return parse(hint, raw, path)  # type: ignore[arg-type]
    return _convert_scalar(hint, raw, path)


# scalar type -> (accepted Python types, what the error calls it); bool is refused where a
# number is expected (it is an int subclass in Python, not a number in the API).
_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _convert_scalar(hint: Any, raw: Any, path: str) -> Any:
    if hint not in _SCALARS:
        raise TypeError(f"unsupported type {hint!r} at {path}")
    accepted, what = _SCALARS[hint]
    value: Any = raw
    if (isinstance(value, bool) and hint is not bool) or not isinstance(value, accepted):
        raise SpecError(path, f"expected {what}, got {raw!r}")
    return float(raw) if hint is float else raw


def _check_constraints(metadata: Any, value: Any, path: str) -> None:
    pattern = metadata.get("pattern")
    if pattern is not None and not pattern.match(value):
        raise SpecError(path, f"invalid value {value!r}: must match {pattern.pattern}")
    minimum = metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise SpecError(path, f"{value} is below the minimum {minimum}")
    exclusive = metadata.get("exclusive_minimum")
    if exclusive is not None and value <= exclusive:
        raise SpecError(path, f"{value} must be greater than {exclusive}")
    maximum = metadata.get("maximum")
    if maximum is not None and value > maximum:
        raise SpecError(path, f"{value} is above the maximum {maximum}")


def _check_cross_field(spec: EdgeModelSpec) -> None:
    """The CRD's CEL rules, repeated so a spec stored under an older CRD is still caught."""
    _check_compression(spec.compression)
    if not 1 <= len(spec.targets) <= 16:
        raise SpecError("spec.targets", "must have 1 to 16 items")
    seen: set[str] = set()
    for i, target in enumerate(spec.targets):
        path = f"spec.targets[{i}]"
        if target.name in seen:
            raise SpecError(f"{path}.name", f"duplicate target name {target.name!r}")
        seen.add(target.name)
        _check_target(target, path)
    _check_rollout_steps(spec.rollout.steps)
    if spec.autoscaling.scale_down_at >= spec.autoscaling.scale_up_at:
        raise SpecError("spec.autoscaling.scaleDownAt", "must be below scaleUpAt")
    if spec.autoscaling.enabled and spec.slo is None:
        raise SpecError("spec.slo", "required when autoscaling is enabled")
    if spec.slo is not None and spec.slo.token_slos and not spec.generative:
        raise SpecError("spec.slo", "token-level SLOs need spec.serving.generative: true")
    if spec.serving is not None:
        _check_serving(spec.serving)


def _check_serving(serving: Serving) -> None:
    if (serving.tokenizer == "file") != (serving.tokenizer_file is not None):
        raise SpecError(
            "spec.serving.tokenizerFile", "required exactly when spec.serving.tokenizer is file"
        )
    if serving.tokenizer_file is not None and not serving.tokenizer_file.uri.startswith(
        ("http://", "https://")
    ):
        raise SpecError(
            "spec.serving.tokenizerFile.uri", "must be http(s): the runtime pods fetch it"
        )


def _check_compression(comp: Compression) -> None:
    if comp.quantization == "static-int8" and comp.calibration is None:
        raise SpecError("spec.compression.calibration", "required when quantization is static-int8")
    if comp.embedding_bits == 4 and comp.quantization not in ("dynamic-int8", "static-int8"):
        raise SpecError(
            "spec.compression.embeddingBits", "4 needs quantization dynamic-int8 or static-int8"
        )
    blocks = comp.block_size is not None or comp.symmetric is not None
    if blocks and comp.quantization not in WEIGHT_ONLY_QUANTIZATION:
        raise SpecError(
            "spec.compression.blockSize", "blockSize and symmetric need int4-weight or int8-weight"
        )


def _check_target(target: Target, path: str) -> None:
    if target.replicas.max is not None and target.replicas.min > target.replicas.max:
        raise SpecError(f"{path}.replicas.min", "must be <= replicas.max")
    if not target.gpu and "nvidia.com/gpu" in target.resources.limits:
        raise SpecError(f"{path}.resources.limits", "nvidia.com/gpu needs accelerator nvidia-gpu")
    for j, toleration in enumerate(target.tolerations):
        if toleration.operator == "Exists" and toleration.value:
            raise SpecError(
                f"{path}.tolerations[{j}].value", "must be empty when operator is Exists"
            )
        if toleration.operator == "Exists" and not toleration.key:
            # Without a key it tolerates every taint: reserved nodes would be open to any
            # EdgeModel author (docs/security.md).
            raise SpecError(f"{path}.tolerations[{j}].key", "is required when operator is Exists")
    selected = target.node_selector.get("kubernetes.io/arch")
    if selected is not None and selected != target.arch:
        raise SpecError(
            f"{path}.nodeSelector",
            f"kubernetes.io/arch={selected} contradicts arch {target.arch}",
        )


def _check_rollout_steps(steps: list[int]) -> None:
    if not 1 <= len(steps) <= 20:
        raise SpecError("spec.rollout.steps", "must have 1 to 20 items")
    for i, step in enumerate(steps):
        if not 1 <= step <= 100:
            raise SpecError(
                f"spec.rollout.steps[{i}]", f"{step} must be a percent between 1 and 100"
            )
    if steps[-1] != 100:
        raise SpecError("spec.rollout.steps", "must end at 100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise SpecError("spec.rollout.steps", "must be strictly increasing")


def to_dict(value: Any) -> Any:
    """The API dict of a parsed value (camelCase names, None fields left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for fld in dataclasses.fields(value):
            item = getattr(value, fld.name)
            if item is not None:
                out[fld.metadata["json"]] = to_dict(item)
        return out
    if isinstance(value, list):
        return [to_dict(item) for item in value]
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    return value
