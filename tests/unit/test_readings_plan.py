"""Which SLO readings a pass needs, decided purely by `observe.readings_needed`.

No SLO: none. An SLO: the current p95 and error rate of every target, over the autoscaler's
interval. A revision rolling out against a stable one: the canary analysis against that
stable revision (not once it was rolled back). The just-promoted revision inside its
post-promotion guard: the guard check. Analysis and guard look back the rollout's analysis
interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edgemodel_operator.api import parse_spec
from edgemodel_operator.canary import RolloutState
from edgemodel_operator.lifecycle import Desired, State
from edgemodel_operator.observe import ReadingsPlan, readings_needed
from edgemodel_operator.revision import revision_of
from edgemodel_operator.settings import Settings

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def desired(**overrides: Any) -> Desired:
    raw: dict[str, Any] = {
        "model": {"uri": "https://models.example.com/m.onnx", "sha256": "a" * 64},
        "targets": [{"name": "arm", "arch": "arm64"}],
        "slo": {"latencyP95Ms": 100},
        "autoscaling": {"intervalSeconds": 45},
        "rollout": {"analysisIntervalSeconds": 20, "postPromotionGuardSeconds": 300},
    }
    raw.update(overrides)
    parsed = parse_spec(raw)
    return Desired("digits", "ns", "uid", 1, parsed, revision_of(parsed), Settings())


def state(stable: str, rollout: RolloutState | None = None) -> State:
    return State(stable_revision=stable, rollout={"canary": rollout.to_dict()} if rollout else {})


def test_without_an_slo_nothing_is_measured() -> None:
    d = desired(slo=None)
    assert readings_needed(d, state(""), NOW) == ReadingsPlan()
    assert not readings_needed(d, state(""), NOW).current


def test_with_an_slo_the_current_readings_are_taken_over_the_autoscaler_interval() -> None:
    d = desired()
    plan = readings_needed(d, state(d.revision), NOW)
    assert plan.current and plan.window_s == 45
    assert plan.canary_vs == "" and not plan.guard


def test_a_short_interval_still_looks_back_ten_seconds() -> None:
    d = desired(autoscaling={"intervalSeconds": 5}, rollout={"analysisIntervalSeconds": 5})
    plan = readings_needed(d, state(d.revision), NOW)
    assert plan.window_s == 10 and plan.analysis_window_s == 10


def test_a_first_revision_has_nothing_to_be_compared_with() -> None:
    assert readings_needed(desired(), state(""), NOW).canary_vs == ""


def test_a_rollout_analyses_the_canary_against_the_stable_revision() -> None:
    d = desired()
    rollout = RolloutState.start(d.revision, "old", NOW.timestamp())
    plan = readings_needed(d, state("old", rollout), NOW)
    assert plan.canary_vs == "old" and plan.analysis_window_s == 20 and not plan.guard


def test_a_rolled_back_canary_is_analysed_no_more() -> None:
    d = desired()
    rolled_back = RolloutState(canary_revision=d.revision, rolled_back_at=NOW.timestamp())
    assert readings_needed(d, state("old", rolled_back), NOW).canary_vs == ""


def test_the_promoted_revision_is_guarded_until_the_guard_ends() -> None:
    d = desired()
    promoted = RolloutState(canary_revision=d.revision, promoted_at=NOW.timestamp() - 100)
    assert readings_needed(d, state(d.revision, promoted), NOW).guard
    late = datetime.fromtimestamp(NOW.timestamp() + 250, UTC)
    assert not readings_needed(d, state(d.revision, promoted), late).guard
