"""Owns the lifecycle's phases and the edges between them: `Phase`, `EDGES`, `TERMINAL`.

The phase is what `kubectl get edgemodel` shows and what `status.phase` holds (the same
strings the CRD enumerates). `EDGES` declares, for each phase, the phases one pass may move it
to while the spec keeps its generation; a new generation (any spec edit) re-enters the
machine and may land anywhere in `ENTRY` (docs/architecture.md, "Lifecycle"). The tests run
every phase against every class of observation and fail on an edge not declared here.

Failure semantics are edges too: a transient failure (source unreachable, timeout, 5xx, an
evicted or timed-out Job) keeps the revision in Compressing and retries with backoff; only a
permanent one (failed accuracy gate, invalid model) or a stalled canary analysis reaches
Failed, and Failed is `TERMINAL`: within a generation it leads nowhere but to itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgemodel_operator.api import Phase

P = Phase

# Within one generation of the spec: the phases a pass may move each phase to (itself
# included where it may stay). Why each edge exists is in docs/architecture.md's table.
EDGES: Mapping[Phase, frozenset[Phase]] = {
    # No status yet: the first pass compresses, or finds artifacts and deploys, or fails.
    P.PENDING: frozenset({P.COMPRESSING, P.DEPLOYING, P.READY, P.DEGRADED, P.FAILED}),
    # Jobs run or retry after a transient failure (stay); a permanent failure fails; once
    # every artifact is there the revision deploys (first/no SLO), starts a canary beside
    # the stable one, or is the stable one already (Ready, or Degraded when replicas lack).
    P.COMPRESSING: frozenset(
        {P.COMPRESSING, P.FAILED, P.DEPLOYING, P.PROGRESSING, P.READY, P.DEGRADED}
    ),
    P.DEPLOYING: frozenset({P.DEPLOYING, P.READY, P.DEGRADED}),
    # A canary advances (stay), is promoted (Ready/Degraded, or stays while scaling to 100%),
    # is rolled back (Ready once stable is whole, else RollingBack), or its analysis stalls.
    P.PROGRESSING: frozenset({P.PROGRESSING, P.READY, P.DEGRADED, P.ROLLING_BACK, P.FAILED}),
    # Stable: replicas come and go (Degraded); the post-promotion guard may roll back.
    P.READY: frozenset({P.READY, P.DEGRADED, P.ROLLING_BACK}),
    P.DEGRADED: frozenset({P.DEGRADED, P.READY, P.ROLLING_BACK}),
    P.ROLLING_BACK: frozenset({P.ROLLING_BACK, P.READY, P.DEGRADED}),
    # Permanent for this generation: a failed gate, an invalid model, a stalled analysis.
    P.FAILED: frozenset({P.FAILED}),
}

# Phases that only a new generation leaves.
TERMINAL: frozenset[Phase] = frozenset({P.FAILED})

# Where a pass may land when the generation changed: anywhere but back to Pending.
ENTRY: frozenset[Phase] = frozenset(Phase) - {P.PENDING}


def allowed(before: Phase, after: Phase, new_generation: bool) -> bool:
    """Whether one pass may move `before` to `after` (the machine's contract)."""
    return after in (ENTRY if new_generation else EDGES[before])


# How soon to look again when nothing wakes us: busy phases poll a little as a safety net
# (watch events do the real waking); settled ones rarely.
REQUEUE_SECONDS: Mapping[Phase, float] = {
    P.PENDING: 5.0,
    P.COMPRESSING: 10.0,
    P.DEPLOYING: 10.0,
    P.PROGRESSING: 5.0,
    P.ROLLING_BACK: 5.0,
    P.DEGRADED: 30.0,
    P.READY: 120.0,
    P.FAILED: 300.0,
}
