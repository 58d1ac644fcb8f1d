"""Owns the canary analysis limits: how many analyses in a row may lack data or fail to reach
Prometheus before the rollout is stalled (Argo's inconclusiveLimit and consecutiveErrorLimit).

INCONCLUSIVE and ERROR readings hold a canary (canary.py, principle 4) — rightly, a monitoring
outage must neither promote nor roll back — but not forever: after `rollout.inconclusiveLimit`
analyses in a row without data, or `rollout.errorLimit` with Prometheus unreachable, the
rollout stalls with that reason, the canary's replicas go and the stable revision serves
alone until the spec's next generation starts the canary again. A SUCCESSFUL or FAILED
analysis resets both counts. Kept in status.rollout.canary beside canary.RolloutState's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from edgemodel_operator.api import Rollout
from edgemodel_operator.readings import Outcome, Reading


@dataclass(frozen=True)
class AnalysisLimits:
    """Consecutive analyses without data / with errors, and the stall they led to, if any."""

    inconclusive: int = 0
    errors: int = 0
    stalled_at: float | None = None
    stalled_generation: int = 0
    reason: str = ""
    message: str = ""

    @property
    def stalled(self) -> bool:
        return self.stalled_at is not None

    def count(
        self, reading: Reading, rollout: Rollout, revision: str, generation: int, now: float
    ) -> AnalysisLimits:
        """The counts after one analysis; a stall once either reaches its limit."""
        if reading.outcome is Outcome.INCONCLUSIVE:
            counted = replace(self, inconclusive=self.inconclusive + 1, errors=0)
        elif reading.outcome is Outcome.ERROR:
            counted = replace(self, inconclusive=0, errors=self.errors + 1)
        else:
            return replace(self, inconclusive=0, errors=0)
        if counted.inconclusive >= rollout.inconclusive_limit:
            reason = "AnalysisInconclusive"
            what = (
                f"{counted.inconclusive} analyses in a row without data "
                f"(inconclusiveLimit {rollout.inconclusive_limit})"
            )
        elif counted.errors >= rollout.error_limit:
            reason = "AnalysisErrors"
            what = (
                f"{counted.errors} analyses in a row could not reach Prometheus "
                f"(errorLimit {rollout.error_limit})"
            )
        else:
            return counted
        return replace(
            counted,
            stalled_at=now,
            stalled_generation=generation,
            reason=reason,
            message=f"canary {revision}: {what}: {reading.detail}"[:1024],
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.inconclusive:
            out["inconclusiveChecks"] = self.inconclusive
        if self.errors:
            out["errorChecks"] = self.errors
        if self.stalled_at is not None:
            out.update(
                stalledAt=self.stalled_at,
                stalledGeneration=self.stalled_generation,
                stalledReason=self.reason,
                stalledMessage=self.message,
            )
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> AnalysisLimits:
        """Tolerates a missing or hand-edited status: unreadable fields take their defaults."""
        raw = raw or {}
        at = raw.get("stalledAt")
        stalled_at = (
            float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
        )
        return cls(
            inconclusive=_count(raw.get("inconclusiveChecks")),
            errors=_count(raw.get("errorChecks")),
            stalled_at=stalled_at,
            stalled_generation=_count(raw.get("stalledGeneration")),
            reason=str(raw.get("stalledReason") or "AnalysisStalled") if stalled_at else "",
            message=str(raw.get("stalledMessage") or "") if stalled_at else "",
        )


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)
