"""Token-level SLOs: a generative model is scaled and analysed on time to first token and
inter-token latency, exactly as other models are on request latency.

Covers the API (token SLOs need `serving.generative`), the objectives a spec yields, how the
readings of several objectives combine, the PromQL of the token histograms, the autoscaler and
the canary analysis fed with token readings, and the runtime flags and SLO environment the
pods get.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgemodel_operator import builders, canary
from edgemodel_operator.api import SLO, Autoscaling, SpecError, parse_spec
from edgemodel_operator.autoscaler import ScalerState, decide
from edgemodel_operator.objectives import latency_objectives, named, worst
from edgemodel_operator.promql import (
    DURATION_METRIC,
    ITL_METRIC,
    TTFT_METRIC,
    p95_latency_query,
    token_rate_query,
)
from edgemodel_operator.readings import Outcome, Reading, classify_latency

NOW = 1_800_000_000.0
POLICY = Autoscaling(
    enabled=True, interval_seconds=30, scale_up_at=0.9, scale_down_at=0.5, stabilization_seconds=300
)


def spec(slo: dict[str, Any] | None, serving: dict[str, Any] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "model": {"uri": "https://models.example.com/lm.onnx", "sha256": "3" * 64},
        "targets": [{"name": "arm", "arch": "arm64"}],
    }
    if slo is not None:
        raw["slo"] = slo
    if serving is not None:
        raw["serving"] = serving
    return raw


TOKEN_SLO = {"latencyP95Ms": 30000, "timeToFirstTokenP95Ms": 400, "interTokenP95Ms": 50}
GENERATIVE = {"generative": True, "tokenizer": "bytes"}


def test_token_slos_need_a_generative_model() -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(spec(TOKEN_SLO))
    assert refused.value.path == "spec.slo"
    parsed = parse_spec(spec(TOKEN_SLO, GENERATIVE))
    assert parsed.generative
    assert parsed.serving is not None and parsed.serving.max_sequences == 8
    assert parsed.slo is not None and parsed.slo.inter_token_p95_ms == 50


def test_a_generative_model_keeps_its_token_slos_instead_of_request_latency() -> None:
    objectives = latency_objectives(parse_spec(spec(TOKEN_SLO, GENERATIVE)))
    assert [(o.metric, o.slo.latency_p95_ms) for o in objectives] == [
        (TTFT_METRIC, 400),
        (ITL_METRIC, 50),
    ]
    assert all(o.slo.max_error_rate == 0.01 for o in objectives)


@pytest.mark.parametrize(
    ("slo", "serving", "metrics"),
    [
        ({"latencyP95Ms": 20}, None, [DURATION_METRIC]),
        ({"latencyP95Ms": 20}, GENERATIVE, [DURATION_METRIC]),  # no token SLO given
        ({"latencyP95Ms": 9e3, "interTokenP95Ms": 80}, GENERATIVE, [ITL_METRIC]),
        (None, GENERATIVE, []),
    ],
)
def test_objectives_follow_the_slos_given(
    slo: dict[str, Any] | None, serving: dict[str, Any] | None, metrics: list[str]
) -> None:
    assert [o.metric for o in latency_objectives(parse_spec(spec(slo, serving)))] == metrics


def test_token_queries_read_the_token_histograms() -> None:
    query = p95_latency_query("ns", "lm", "r1", "arm", 60, TTFT_METRIC)
    assert query == (
        "histogram_quantile(0.95, sum by (le) (rate(edgemodel_time_to_first_token_seconds_bucket"
        '{namespace="ns",model="lm",revision="r1",target="arm"}[60s])))'
    )
    assert p95_latency_query("ns", "lm", None, None, 60).count(DURATION_METRIC) == 1
    assert token_rate_query("ns", "lm", None, "arm", 30) == (
        'sum(rate(edgemodel_generated_tokens_total{namespace="ns",model="lm",target="arm"}[30s]))'
    )


def token_readings(ttft_ms: float | None, itl_ms: float | None) -> list[Reading]:
    objectives = latency_objectives(parse_spec(spec(TOKEN_SLO, GENERATIVE)))
    values = [ttft_ms, itl_ms]
    return [
        named(o, classify_latency(v, o.slo.latency_p95_ms))
        for o, v in zip(objectives, values, strict=True)
    ]


def test_the_reading_furthest_over_its_own_slo_decides() -> None:
    # TTFT 600/400 = 1.5 x its SLO; ITL 60/50 = 1.2 x: TTFT decides.
    decided = worst(token_readings(600, 60))
    assert (decided.outcome, decided.value, decided.threshold) == (Outcome.FAILED, 600, 400)
    assert decided.detail.startswith("time to first token:")
    # Both within: the one closest to its line (ITL 45/50 over TTFT 100/400).
    assert worst(token_readings(100, 45)).threshold == 50
    # Only one has data (every generation was one token long): it decides.
    assert worst(token_readings(100, None)).threshold == 400
    assert worst(token_readings(None, None)).outcome is Outcome.INCONCLUSIVE
    unreachable = Reading(Outcome.ERROR, None, 50, "connection refused")
    assert worst([token_readings(100, 20)[0], unreachable]) is unreachable
    assert worst([token_readings(900, 20)[0], unreachable]).outcome is Outcome.FAILED


def scale(reading: Reading, replicas: int = 2, state: ScalerState | None = None) -> tuple[int, str]:
    # The spec's request SLO (30 s) must play no part: the reading's own SLO draws the lines.
    _, decision = decide(
        state or ScalerState(),
        POLICY,
        SLO(latency_p95_ms=30000),
        replicas,
        1,
        8,
        reading,
        NOW,
        False,
    )
    return decision.replicas, decision.reason


def test_the_autoscaler_scales_up_on_a_token_slo_breach() -> None:
    replicas, reason = scale(worst(token_readings(100, 90)))  # ITL 90 > 0.9 x 50
    assert replicas == 4
    assert "> 0.9 x SLO = 45" in reason


def test_the_autoscaler_scales_down_on_token_latency_well_within_both_slos() -> None:
    calm = worst(token_readings(100, 20))  # TTFT 0.25 x, ITL 0.4 x: below 0.5 x both
    streak = ScalerState(below_since=NOW - 400)
    assert scale(calm, replicas=3, state=streak)[0] == 2
    # ITL at 0.6 x its SLO holds, though TTFT alone would allow a scale-down.
    assert scale(worst(token_readings(100, 30)), replicas=3, state=streak)[0] == 3


def test_the_autoscaler_holds_without_token_data() -> None:
    assert scale(worst(token_readings(None, None)), replicas=3)[0] == 3


def analyse(canary_ms: float, stable_ms: float, metric: str) -> Reading:
    objective = next(
        o for o in latency_objectives(parse_spec(spec(TOKEN_SLO, GENERATIVE))) if o.metric == metric
    )
    no_errors = Reading(Outcome.SUCCESSFUL, 0.0, 0.01, "error rate 0")

    def reading(value: float) -> Reading:
        return classify_latency(value, objective.slo.latency_p95_ms)

    return named(
        objective, canary.analyse(reading(canary_ms), no_errors, reading(stable_ms), objective.slo)
    )


def test_a_canary_breaching_time_to_first_token_fails_its_analysis() -> None:
    failed = analyse(900, 200, TTFT_METRIC)
    assert failed.outcome is Outcome.FAILED
    assert failed.detail.startswith("time to first token:")
    # Over the SLO but no worse than the stable revision: the fleet is slow, not the canary.
    assert analyse(900, 880, TTFT_METRIC).outcome is Outcome.SUCCESSFUL
    assert analyse(40, 30, ITL_METRIC).outcome is Outcome.SUCCESSFUL
    assert analyse(120, 30, ITL_METRIC).outcome is Outcome.FAILED


def test_generative_pods_get_the_generate_flags_and_token_slo_boundaries() -> None:
    parsed = parse_spec(spec(TOKEN_SLO, {**GENERATIVE, "maxSequences": 4}))
    assert builders.generative_args(parsed) == [
        "--generative",
        "--max-sequences",
        "4",
        "--tokenizer",
        "bytes",
    ]
    env = {e["name"]: e["value"] for e in builders._token_slo_env(parsed)}
    assert {k: float(v) for k, v in env.items()} == {
        "EDGEMODEL_TTFT_SLO_MS": 400.0,
        "EDGEMODEL_ITL_SLO_MS": 50.0,
    }
    plain = parse_spec(spec({"latencyP95Ms": 20}))
    assert builders.generative_args(plain) == []
    assert builders._token_slo_env(plain) == []


def test_the_dashboard_shows_the_token_metrics() -> None:
    path = Path(__file__).resolve().parents[2] / "charts" / "edgemodel" / "dashboards"
    dashboard = json.loads((path / "edgemodel.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for metric in (f"{TTFT_METRIC}_bucket", f"{ITL_METRIC}_bucket", "edgemodel_generated_tokens"):
        assert metric in exprs, metric
