"""PromQL rendering (promql), reading classification (readings) and response parsing (pure).

The queries are checked for shape here and against a real Prometheus in
tests/integration/metrics; classification is checked at and around every threshold, and the
response parser against every answer shape the Prometheus API documents (and some it should
never send).
"""

from __future__ import annotations

import json
import math
import re

import pytest

from edgemodel_operator.metrics import parse_query_response, prometheus_url_for
from edgemodel_operator.promql import (
    ERROR_CODE_REGEX,
    error_rate_query,
    escape_label_value,
    is_error_code,
    p95_latency_query,
    request_rate_query,
    shed_fraction_query,
)
from edgemodel_operator.readings import (
    Outcome,
    Reading,
    classify_error_rate,
    classify_latency,
    classify_shed,
    classify_vs_baseline,
)

# ------------------------------------------------------------------ queries


def test_p95_query_shape() -> None:
    q = p95_latency_query("prod", "digits", "abc123", "arm", 60)
    assert q == (
        "histogram_quantile(0.95, sum by (le) (rate(edgemodel_request_duration_seconds_bucket"
        '{namespace="prod",model="digits",revision="abc123",target="arm"}[60s])))'
    )


def test_error_rate_query_shape() -> None:
    q = error_rate_query("prod", "digits", "abc123", None, 30)
    sel = '{namespace="prod",model="digits",revision="abc123"'
    assert q == (
        f'(sum(rate(edgemodel_requests_total{sel},code=~"{ERROR_CODE_REGEX}"}}[30s]))'
        f' or vector(0)) / sum(rate(edgemodel_requests_total{sel},code!="SHED"}}[30s]))'
    )


def test_shed_fraction_query_shape() -> None:
    q = shed_fraction_query("prod", "digits", None, "arm", 30)
    sel = '{namespace="prod",model="digits",target="arm"'
    assert q == (
        f'(sum(rate(edgemodel_requests_total{sel},code="SHED"}}[30s])) or vector(0))'
        f" / sum(rate(edgemodel_requests_total{sel}}}[30s]))"
    )


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (None, Outcome.INCONCLUSIVE),
        (math.nan, Outcome.INCONCLUSIVE),
        (0.0, Outcome.SUCCESSFUL),
        (0.01, Outcome.SUCCESSFUL),
        (0.0100001, Outcome.FAILED),
        (1.0, Outcome.FAILED),
    ],
)
def test_classify_shed(value: float | None, outcome: Outcome) -> None:
    reading = classify_shed(value, 0.01)
    assert reading.outcome is outcome and reading.threshold == 0.01


def test_request_rate_query_shape() -> None:
    assert request_rate_query("ns", "m", None, None, 15) == (
        'sum(rate(edgemodel_requests_total{namespace="ns",model="m"}[15s]))'
    )


@pytest.mark.parametrize("revision", [None, "r1"])
@pytest.mark.parametrize("target", [None, "t1"])
@pytest.mark.parametrize(
    "build", [p95_latency_query, error_rate_query, request_rate_query, shed_fraction_query]
)
def test_optional_labels_only_when_given(
    build: object, revision: str | None, target: str | None
) -> None:
    assert callable(build)
    q: str = build("ns", "m", revision, target, 60)
    assert ('revision="r1"' in q) == (revision is not None)
    assert ('target="t1"' in q) == (target is not None)
    assert 'namespace="ns"' in q and 'model="m"' in q
    assert q.count("(") == q.count(")") and q.count("{") == q.count("}")


@pytest.mark.parametrize("window", [0, -5])
def test_window_must_be_positive(window: int) -> None:
    with pytest.raises(ValueError, match="window_s"):
        p95_latency_query("ns", "m", None, None, window)


@pytest.mark.parametrize(
    ("raw", "literal"),
    [
        ("plain", '"plain"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a\nb", '"a\\nb"'),
        ('}",x="', '"}\\",x=\\""'),
        ("ünïcode", '"ünïcode"'),
    ],
)
def test_label_values_are_escaped(raw: str, literal: str) -> None:
    assert escape_label_value(raw) == literal


def test_injection_stays_inside_the_literal() -> None:
    q = request_rate_query('x"} or vector(1) #', "m", None, None, 60)
    assert 'namespace="x\\"} or vector(1) #"' in q


# ------------------------------------------------------------------ error codes

ERRORS = ["500", "502", "503", "504", "599", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"]
ERRORS += ["UNKNOWN", "DATA_LOSS"]
NOT_ERRORS = ["200", "201", "400", "404", "413", "429", "OK", "INVALID_ARGUMENT", "NOT_FOUND"]
NOT_ERRORS += ["RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "UNIMPLEMENTED", "CANCELLED"]
NOT_ERRORS += ["5000", "50", "5xx", "internal", "600"]


@pytest.mark.parametrize("code", ERRORS + NOT_ERRORS)
def test_error_codes(code: str) -> None:
    expected = code in ERRORS
    assert is_error_code(code) == expected
    # PromQL regex matchers are fully anchored, like re.fullmatch.
    assert (re.fullmatch(ERROR_CODE_REGEX, code) is not None) == expected


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (None, Outcome.INCONCLUSIVE),
        (math.nan, Outcome.INCONCLUSIVE),
        (0.0, Outcome.SUCCESSFUL),
        (49.999, Outcome.SUCCESSFUL),
        (50.0, Outcome.SUCCESSFUL),  # at the SLO is within it
        (50.001, Outcome.FAILED),
        (math.inf, Outcome.FAILED),  # the p95 fell in the +Inf bucket: very slow, not unknown
    ],
)
def test_classify_latency(value: float | None, outcome: Outcome) -> None:
    reading = classify_latency(value, 50.0)
    assert reading.outcome is outcome
    assert reading.threshold == 50.0
    assert reading.detail
    if outcome is Outcome.INCONCLUSIVE:
        assert reading.value is None and "no data" in reading.detail
    else:
        assert reading.value == value


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (None, Outcome.INCONCLUSIVE),
        (math.nan, Outcome.INCONCLUSIVE),
        (0.0, Outcome.SUCCESSFUL),
        (0.01, Outcome.SUCCESSFUL),
        (0.0100001, Outcome.FAILED),
        (1.0, Outcome.FAILED),
    ],
)
def test_classify_error_rate(value: float | None, outcome: Outcome) -> None:
    reading = classify_error_rate(value, 0.01)
    assert reading.outcome is outcome
    assert reading.threshold == 0.01


def _r(outcome: Outcome, value: float | None) -> Reading:
    return Reading(outcome, value, None, f"{outcome} {value}")


@pytest.mark.parametrize(
    ("canary", "stable", "outcome"),
    [
        (_r(Outcome.SUCCESSFUL, 10.0), _r(Outcome.SUCCESSFUL, 10.0), Outcome.SUCCESSFUL),
        (_r(Outcome.SUCCESSFUL, 12.0), _r(Outcome.SUCCESSFUL, 10.0), Outcome.SUCCESSFUL),
        (_r(Outcome.FAILED, 12.01), _r(Outcome.SUCCESSFUL, 10.0), Outcome.FAILED),
        (_r(Outcome.SUCCESSFUL, 5.0), _r(Outcome.FAILED, 100.0), Outcome.SUCCESSFUL),
        (_r(Outcome.INCONCLUSIVE, None), _r(Outcome.SUCCESSFUL, 10.0), Outcome.INCONCLUSIVE),
        (_r(Outcome.SUCCESSFUL, 10.0), _r(Outcome.INCONCLUSIVE, None), Outcome.INCONCLUSIVE),
        (_r(Outcome.SUCCESSFUL, 10.0), _r(Outcome.SUCCESSFUL, math.nan), Outcome.INCONCLUSIVE),
        (_r(Outcome.ERROR, None), _r(Outcome.SUCCESSFUL, 10.0), Outcome.ERROR),
        (_r(Outcome.SUCCESSFUL, 10.0), _r(Outcome.ERROR, None), Outcome.ERROR),
        (_r(Outcome.ERROR, None), _r(Outcome.INCONCLUSIVE, None), Outcome.ERROR),
    ],
)
def test_classify_vs_baseline(canary: Reading, stable: Reading, outcome: Outcome) -> None:
    reading = classify_vs_baseline(canary, stable, 0.2)
    assert reading.outcome is outcome
    if outcome in (Outcome.SUCCESSFUL, Outcome.FAILED):
        assert stable.value is not None
        assert reading.threshold == pytest.approx(stable.value * 1.2)


# ------------------------------------------------------------------ responses


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def _vector(*values: str) -> bytes:
    result = [{"metric": {"i": str(i)}, "value": [1.7e9, v]} for i, v in enumerate(values)]
    return _body({"status": "success", "data": {"resultType": "vector", "result": result}})


@pytest.mark.parametrize(
    ("status", "body", "value", "error"),
    [
        (200, _vector("0.25"), 0.25, None),
        (200, _vector("1", "2"), 1.0, None),  # the first sample
        (200, _vector(), None, None),  # no data
        (
            200,
            _body({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}),
            3.0,
            None,
        ),
        (200, _vector("+Inf"), math.inf, None),
        (
            400,
            _body({"status": "error", "errorType": "bad_data", "error": "parse error"}),
            None,
            "bad_data: parse error",
        ),
        (503, b"<html>bad gateway</html>", None, "not JSON"),
        (200, b"[1, 2]", None, "unexpected JSON"),
        (
            200,
            _body({"status": "success", "data": {"resultType": "matrix", "result": []}}),
            None,
            "unexpected result type",
        ),
        (200, _body({"status": "success"}), None, "no data object"),
        (
            200,
            _body({"status": "success", "data": {"resultType": "vector", "result": [{}]}}),
            None,
            "bad sample",
        ),
        (200, _vector("not-a-number"), None, "bad sample"),
        (500, _body({"status": "success", "data": {}}), None, "HTTP 500"),
    ],
)
def test_parse_query_response(
    status: int, body: bytes, value: float | None, error: str | None
) -> None:
    result = parse_query_response(status, body)
    if error is None:
        assert result.ok and result.value == value
        assert result.no_data == (value is None)
    else:
        assert result.error is not None and error in result.error
        assert result.value is None and not result.no_data


def test_parse_nan_is_a_value_not_no_data() -> None:
    result = parse_query_response(200, _vector("NaN"))
    assert result.ok and not result.no_data
    assert result.value is not None and math.isnan(result.value)
    assert classify_latency(result.value, 10).outcome is Outcome.INCONCLUSIVE


# ------------------------------------------------------------------ per-object URL


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, "http://default:9090"),
        ({"edgemodel.dev/prometheus-url": ""}, "http://default:9090"),
        ({"edgemodel.dev/prometheus-url": "  "}, "http://default:9090"),
        ({"other": "http://x"}, "http://default:9090"),
        ({"edgemodel.dev/prometheus-url": "https://prom.team-a:9090/"}, "https://prom.team-a:9090"),
        ({"edgemodel.dev/prometheus-url": " http://p/prefix "}, "http://p/prefix"),
    ],
)
def test_prometheus_url_for(annotations: dict[str, str], expected: str) -> None:
    assert prometheus_url_for(annotations, "http://default:9090") == expected


@pytest.mark.parametrize("bad", ["prom:9090", "ftp://x", "http://"])
def test_prometheus_url_for_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError, match=r"edgemodel\.dev/prometheus-url"):
        prometheus_url_for({"edgemodel.dev/prometheus-url": bad}, "http://default:9090")
