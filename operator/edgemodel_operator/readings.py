"""Owns metric readings: the four outcomes of a check and the pure classifiers producing them.

Principle 4: SUCCESSFUL, FAILED, INCONCLUSIVE (no data) and ERROR (Prometheus unreachable or
a bad answer). Only FAILED may ever count toward a rollback; the others hold. Pure and free of
any network client, so the decision modules (lifecycle, canary, autoscaler) import this and
never aiohttp; `metrics` re-exports these names next to the Prometheus client.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any


class Outcome(enum.StrEnum):
    """The four results of a metric check (principle 4)."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"  # no data: no traffic, no series yet
    ERROR = "Error"  # Prometheus unreachable or answered something unusable


@dataclass(frozen=True)
class Reading:
    """One classified metric value; `detail` is a one-line, human-readable why."""

    outcome: Outcome
    value: float | None
    threshold: float | None
    detail: str

    @property
    def has_value(self) -> bool:
        return self.value is not None and not math.isnan(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "value": self.value if self.has_value else None,
            "threshold": self.threshold,
            "detail": self.detail,
        }


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def classify_latency(value_ms: float | None, slo_ms: float) -> Reading:
    """p95 (ms) against the SLO: above fails, at or below passes, None/NaN is no data.

    +Inf (the p95 fell in the histogram's +Inf bucket) is a real, very slow value: FAILED.
    """
    if value_ms is None or math.isnan(value_ms):
        return Reading(Outcome.INCONCLUSIVE, None, slo_ms, "no data: no latency samples in window")
    if value_ms > slo_ms:
        return Reading(
            Outcome.FAILED, value_ms, slo_ms, f"p95 {_fmt(value_ms)} ms > SLO {_fmt(slo_ms)} ms"
        )
    return Reading(
        Outcome.SUCCESSFUL, value_ms, slo_ms, f"p95 {_fmt(value_ms)} ms <= SLO {_fmt(slo_ms)} ms"
    )


def classify_error_rate(value: float | None, max_error_rate: float) -> Reading:
    """Error fraction against the SLO: above fails, at or below passes, None/NaN is no data."""
    if value is None or math.isnan(value):
        return Reading(Outcome.INCONCLUSIVE, None, max_error_rate, "no data: no requests in window")
    if value > max_error_rate:
        return Reading(
            Outcome.FAILED,
            value,
            max_error_rate,
            f"error rate {_fmt(value)} > max {_fmt(max_error_rate)}",
        )
    return Reading(
        Outcome.SUCCESSFUL,
        value,
        max_error_rate,
        f"error rate {_fmt(value)} <= max {_fmt(max_error_rate)}",
    )


def classify_shed(value: float | None, scale_up_at: float) -> Reading:
    """The share of requests shed at the in-flight cap against the autoscaler's line: above it
    FAILED (the target is saturated), at or below SUCCESSFUL, None/NaN no data (no requests).
    Feeds the autoscaler only: shedding is never a canary's failure (promql.py)."""
    if value is None or math.isnan(value):
        return Reading(Outcome.INCONCLUSIVE, None, scale_up_at, "no data: no requests in window")
    if value > scale_up_at:
        return Reading(
            Outcome.FAILED, value, scale_up_at, f"shed {_fmt(value)} > {_fmt(scale_up_at)}"
        )
    return Reading(
        Outcome.SUCCESSFUL, value, scale_up_at, f"shed {_fmt(value)} <= {_fmt(scale_up_at)}"
    )


def classify_vs_baseline(canary: Reading, stable: Reading, tolerance: float) -> Reading:
    """Canary against the stable baseline: FAILED when canary > stable * (1 + tolerance).

    An ERROR on either side is ERROR (we could not look); a missing value on either side is
    INCONCLUSIVE (nothing to compare). The threshold reported is stable * (1 + tolerance).
    """
    if Outcome.ERROR in (canary.outcome, stable.outcome):
        side = "canary" if canary.outcome is Outcome.ERROR else "stable"
        detail = canary.detail if side == "canary" else stable.detail
        return Reading(Outcome.ERROR, None, None, f"{side}: {detail}")
    value, base = canary.value, stable.value
    if value is None or math.isnan(value) or base is None or math.isnan(base):
        side = "canary" if not canary.has_value else "stable"
        return Reading(Outcome.INCONCLUSIVE, None, None, f"no data: no {side} value to compare")
    limit = base * (1.0 + tolerance)
    relation = ">" if value > limit else "<="
    return Reading(
        Outcome.FAILED if value > limit else Outcome.SUCCESSFUL,
        value,
        limit,
        f"canary {_fmt(value)} {relation} stable {_fmt(base)} * {1 + tolerance:g}",
    )
