"""Owns reading GPU provider fallbacks off runtime pods, and the condition that reports them.

A GPU target's server runs `edgemodel serve --providers cuda --require-provider`: when
onnxruntime gives its session another provider than CUDA (no driver or device in the pod, a
CPU-only build), the server exits 3 instead of serving from the CPU on a GPU node, and leaves
one JSON line as its termination message:
{"reason": "ProviderUnavailable", "requested": "cuda", "provider": "cpu", "message": ...}.
`provider_fallbacks` finds those messages in the pods' container statuses (the current or the
last termination: a restarting pod shows it in lastState), `accelerator_condition` turns them
into the EdgeModel's `AcceleratorAvailable` condition naming each target and the provider it
fell back to. Pure functions, no API calls (docs/architecture.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgemodel_operator import labels
from edgemodel_operator.errors import FailureKind, exit_code

CONDITION = "AcceleratorAvailable"
REASON_FALLBACK = "ProviderFallback"
REASON_OK = "AsExpected"
SERVER_CONTAINER = "server"
# edgemodel serve's exit code for --require-provider.
EXIT_PROVIDER = exit_code(FailureKind.PROVIDER_UNAVAILABLE)


@dataclass(frozen=True)
class ProviderFallback:
    """One target whose server found another provider than the one it asked for."""

    target: str
    requested: str
    provider: str
    pod: str
    message: str


def _termination(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = status.get("state") or {}
    last = status.get("lastState") or {}
    found: Mapping[str, Any] | None = state.get("terminated") or last.get("terminated")
    return found


def fallback_of(pod: Mapping[str, Any]) -> ProviderFallback | None:
    """The fallback a runtime pod's server reported, or None (serving, starting, other exits)."""
    meta = pod.get("metadata") or {}
    target = (meta.get("labels") or {}).get(labels.TARGET)
    if not target:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != SERVER_CONTAINER:
            continue
        terminated = _termination(status)
        if not terminated or terminated.get("exitCode") != EXIT_PROVIDER:
            return None
        try:
            report = json.loads(str(terminated.get("message") or ""))
        except ValueError:
            return None
        if not isinstance(report, dict) or report.get("reason") != "ProviderUnavailable":
            return None
        return ProviderFallback(
            target=str(target),
            requested=str(report.get("requested", "")),
            provider=str(report.get("provider", "")),
            pod=str(meta.get("name", "")),
            message=str(report.get("message", "")),
        )
    return None


def provider_fallbacks(pods: Sequence[Mapping[str, Any]]) -> dict[str, ProviderFallback]:
    """target -> the fallback one of its pods reported (the first pod by name, for a stable
    message when several did)."""
    out: dict[str, ProviderFallback] = {}
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        found = fallback_of(pod)
        if found is not None and found.target not in out:
            out[found.target] = found
    return out


def accelerator_condition(
    fallbacks: Mapping[str, ProviderFallback], gpu_targets: Sequence[str]
) -> tuple[bool, str, str] | None:
    """(status, reason, message) of `AcceleratorAvailable`; None without GPU targets.

    False names every GPU target whose server fell back, the provider it asked for and the
    one it got; fallbacks of targets that are no longer GPU targets (or no longer exist) are
    ignored.
    """
    if not gpu_targets:
        return None
    failing = [fallbacks[t] for t in sorted(gpu_targets) if t in fallbacks]
    if not failing:
        return True, REASON_OK, "no GPU target reports a provider fallback"
    parts = [
        f"target {f.target}: requested {f.requested}, onnxruntime fell back to {f.provider} "
        f"(pod {f.pod}: its server exits rather than serve from {f.provider})"
        for f in failing
    ]
    return False, REASON_FALLBACK, "; ".join(parts)
