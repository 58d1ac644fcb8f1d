"""Owns which latency signals the SLO loop keeps for a model, and how several combine (pure).

A classifier or detector keeps one: the p95 request latency against `slo.latencyP95Ms`. A
generative model with token-level SLOs (`slo.timeToFirstTokenP95Ms`, `slo.interTokenP95Ms`,
docs/architecture.md "Generative serving") keeps those instead: a whole generation's duration
grows with the tokens asked for, so it says nothing about the service. Each objective carries
the spec's SLO with its own p95 in `latency_p95_ms`, so the autoscaler and the canary analysis
treat it exactly as they treat request latency (same four outcomes, same restart safety), and
`worst` picks the reading furthest over its own SLO for the one decision a target gets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgemodel_operator.api import SLO, EdgeModelSpec
from edgemodel_operator.promql import DURATION_METRIC, ITL_METRIC, TTFT_METRIC
from edgemodel_operator.readings import Outcome, Reading


@dataclass(frozen=True)
class LatencyObjective:
    """One latency histogram kept under a p95: its name in readings, its metric, its SLO."""

    name: str
    metric: str
    slo: SLO  # the spec's SLO with latency_p95_ms set to this objective's p95


def latency_objectives(spec: EdgeModelSpec) -> list[LatencyObjective]:
    """The latency objectives of a spec: request latency, or a generative model's token SLOs."""
    slo = spec.slo
    if slo is None:
        return []
    if not (spec.generative and slo.token_slos):
        return [LatencyObjective("request latency", DURATION_METRIC, slo)]
    out = []
    if slo.time_to_first_token_p95_ms is not None:
        ttft = replace(slo, latency_p95_ms=slo.time_to_first_token_p95_ms)
        out.append(LatencyObjective("time to first token", TTFT_METRIC, ttft))
    if slo.inter_token_p95_ms is not None:
        itl = replace(slo, latency_p95_ms=slo.inter_token_p95_ms)
        out.append(LatencyObjective("inter-token latency", ITL_METRIC, itl))
    return out


def named(objective: LatencyObjective, reading: Reading) -> Reading:
    """`reading` with a token objective's name in front of its detail (status and Events say
    which one); request latency readings read as they always have."""
    if objective.metric == DURATION_METRIC:
        return reading
    return replace(reading, detail=f"{objective.name}: {reading.detail}")


def _over(reading: Reading) -> float:
    """How far over its SLO a reading is (value / threshold); -inf without a value."""
    if not reading.has_value or reading.value is None or not reading.threshold:
        return -math.inf
    return reading.value / reading.threshold


def worst(readings: Sequence[Reading]) -> Reading:
    """The reading that decides, as the handler's checks combine: a failure (the one furthest
    over its SLO) before an ERROR, an ERROR before the rest, then the reading closest to its
    SLO line; INCONCLUSIVE only when none has a value."""
    if not readings:
        raise ValueError("worst() needs at least one reading")
    failed = [reading for reading in readings if reading.outcome is Outcome.FAILED]
    if failed:
        return max(failed, key=_over)
    for reading in readings:
        if reading.outcome is Outcome.ERROR:
            return reading
    return max(readings, key=_over)
