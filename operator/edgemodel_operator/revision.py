"""Owns what a revision is: a digest of everything that changes what the pods run.

A revision covers the model digest, the compression settings and each target's runtime
settings (arch, accelerator, runtime). Replicas, selectors, tolerations and resources are
not part of it: changing them updates the running revision in place. Each revision is
compressed once per *variant* — the hardware family an artifact is built for — so a GPU
target gets an fp16 artifact and an arm64 CPU target an int8 one tuned for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from edgemodel_operator.api import EdgeModelSpec, Target, to_dict

Variant = Literal["amd64", "arm64", "gpu"]
REVISION_LENGTH = 10


def revision_of(spec: EdgeModelSpec) -> str:
    """The revision id of a spec: `r` + 10 hex digits of a canonical digest."""
    material = {
        "model": spec.model.sha256,
        "compression": to_dict(spec.compression),
        "targets": sorted((t.name, t.arch, t.accelerator, t.runtime) for t in spec.targets),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return "r" + digest[:REVISION_LENGTH]


def variant_of(target: Target) -> Variant:
    """The artifact variant a target runs: GPU nodes share one, CPU nodes one per arch."""
    if target.gpu:
        return "gpu"
    return target.arch


@dataclass(frozen=True)
class CompressionPlan:
    """How one variant of a revision is compressed; becomes `edgemodel compress` flags."""

    variant: Variant
    mode: str
    note: str


def compression_plan(spec: EdgeModelSpec, variant: Variant) -> CompressionPlan:
    mode = spec.compression.quantization
    if variant == "gpu" and mode == "dynamic-int8":
        # ONNX Runtime's dynamic-quantization kernels (DynamicQuantizeLinear, MatMulInteger)
        # run on the CPU only: an int8-dynamic artifact on a GPU node would leave the GPU idle.
        return CompressionPlan(
            variant, "fp16", "gpu target: fp16 instead of dynamic-int8 (CPU-only kernels)"
        )
    return CompressionPlan(variant, mode, "")


def variants(spec: EdgeModelSpec) -> list[Variant]:
    """The distinct variants a spec needs, in a stable order."""
    seen: list[Variant] = []
    for target in spec.targets:
        variant = variant_of(target)
        if variant not in seen:
            seen.append(variant)
    return seen
