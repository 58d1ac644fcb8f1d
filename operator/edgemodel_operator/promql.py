"""Owns the PromQL the operator sends: pure renderers over the runtime's metric contract.

The contract (docs/architecture.md, "Contracts"): `edgemodel_request_duration_seconds`
(histogram) and `edgemodel_requests_total{code}`, both labelled model/revision/target by the
runtime and namespace/pod by the scrape. Every function here turns typed inputs into a query
string and nothing else: no client, no clock, so the decision modules may use it and the
import-linter contract "decision modules" holds it to that.

What counts as an error (the numerator of the error rate): server-side failures only.
  - HTTP: every 5xx status.
  - gRPC: INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, DATA_LOSS.
Not errors: 2xx, every 4xx, and the gRPC client-mistake codes (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, OUT_OF_RANGE, UNIMPLEMENTED, ...). RESOURCE_EXHAUSTED is deliberately *not*
an error: the runtime uses it (and HTTP 413) for a request larger than the limit, which is the
client's mistake (runtime serve/errors.py, ErrorKind.TOO_LARGE). A bad client must never make
a healthy revision look broken and trigger a rollback.

Shed requests (refused at the in-flight cap: 503 / RESOURCE_EXHAUSTED on the wire) carry the one
code `SHED_CODE` on both protocols and are left out of the error rate entirely, numerator and
denominator: a flood that is shed neither fails a healthy canary nor dilutes a broken one's
server errors.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "DURATION_METRIC",
    "ERROR_CODE_REGEX",
    "GENERATED_TOKENS_METRIC",
    "ITL_METRIC",
    "REQUESTS_METRIC",
    "SERVER_ERROR_GRPC_CODES",
    "SHED_CODE",
    "TTFT_METRIC",
    "error_rate_query",
    "escape_label_value",
    "is_error_code",
    "p95_latency_query",
    "request_rate_query",
    "selector",
    "shed_fraction_query",
    "token_rate_query",
]

DURATION_METRIC = "edgemodel_request_duration_seconds"
REQUESTS_METRIC = "edgemodel_requests_total"
# Generative models (docs/architecture.md, "Generative serving"): token-level histograms.
TTFT_METRIC = "edgemodel_time_to_first_token_seconds"
ITL_METRIC = "edgemodel_inter_token_latency_seconds"
GENERATED_TOKENS_METRIC = "edgemodel_generated_tokens_total"

# HTTP statuses are numeric (5xx); gRPC codes are names. One regex serves both because the
# runtime puts either in the same `code` label.
SERVER_ERROR_GRPC_CODES = ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS")
ERROR_CODE_REGEX = "5[0-9][0-9]|" + "|".join(SERVER_ERROR_GRPC_CODES)
# The runtime's `code` for a shed request (its serve/errors.py SHED_CODE; the packages share
# no code, docs/architecture.md "Contracts" is the agreement).
SHED_CODE = "SHED"


def is_error_code(code: str) -> bool:
    """Whether a `code` label value counts as an error (the same rule as ERROR_CODE_REGEX)."""
    if len(code) == 3 and code.startswith("5") and code.isdigit():
        return True
    return code in SERVER_ERROR_GRPC_CODES


def escape_label_value(value: str) -> str:
    """`value` as a double-quoted PromQL string literal (backslash, quote, newline escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def selector(
    namespace: str,
    model: str,
    revision: str | None,
    target: str | None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The label matchers picking one model's series; None revision/target means all of them.

    `extra` holds regex matchers (label -> regex), used for the error-code filter.
    """
    parts = [
        f"namespace={escape_label_value(namespace)}",
        f"model={escape_label_value(model)}",
    ]
    if revision is not None:
        parts.append(f"revision={escape_label_value(revision)}")
    if target is not None:
        parts.append(f"target={escape_label_value(target)}")
    for label, regex in (extra or {}).items():
        parts.append(f"{label}=~{escape_label_value(regex)}")
    return "{" + ",".join(parts) + "}"


def _window(window_s: int) -> str:
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    return f"[{window_s}s]"


def p95_latency_query(
    namespace: str,
    model: str,
    revision: str | None,
    target: str | None,
    window_s: int,
    metric: str = DURATION_METRIC,
) -> str:
    """p95 request latency in seconds over the window, across every pod of the selection.

    Buckets are summed by `le` only, so the quantile is of the whole selection's traffic (not
    an average of per-pod quantiles, which would hide one slow pod behind fast ones less).
    Zero traffic in the window gives NaN; no series at all gives an empty result. `metric`
    is any latency histogram of the contract: request duration by default, time to first
    token or inter-token latency for a generative model's token-level SLOs.
    """
    sel = selector(namespace, model, revision, target)
    return f"histogram_quantile(0.95, sum by (le) (rate({metric}_bucket{sel}{_window(window_s)})))"


def error_rate_query(
    namespace: str, model: str, revision: str | None, target: str | None, window_s: int
) -> str:
    """Fraction of the requests in the window, shed ones left out, that failed server-side
    (see module docstring).

    `or vector(0)` keeps the numerator at 0 when no error series exists yet (the runtime only
    creates a code's series on its first request), so a clean revision reads 0, not "no data";
    the denominator stays empty without traffic series, and 0/0 = NaN without traffic.
    """
    window = _window(window_s)
    errors = selector(namespace, model, revision, target, {"code": ERROR_CODE_REGEX})
    not_shed = f',code!="{SHED_CODE}"}}'
    total = selector(namespace, model, revision, target).removesuffix("}") + not_shed
    return (
        f"(sum(rate({REQUESTS_METRIC}{errors}{window})) or vector(0))"
        f" / sum(rate({REQUESTS_METRIC}{total}{window}))"
    )


def shed_fraction_query(
    namespace: str, model: str, revision: str | None, target: str | None, window_s: int
) -> str:
    """Fraction of all requests in the window (shed ones included) that were shed at the
    in-flight cap: the autoscaler's saturation signal, read beside p95 (a saturated target's
    served requests stay fast because the others are refused). `or vector(0)` reads 0 before
    the first shed request creates its series; no traffic at all gives NaN or no result."""
    window = _window(window_s)
    shed = selector(namespace, model, revision, target).removesuffix("}") + f',code="{SHED_CODE}"}}'
    total = selector(namespace, model, revision, target)
    return (
        f"(sum(rate({REQUESTS_METRIC}{shed}{window})) or vector(0))"
        f" / sum(rate({REQUESTS_METRIC}{total}{window}))"
    )


def token_rate_query(
    namespace: str, model: str, revision: str | None, target: str | None, window_s: int
) -> str:
    """Generated tokens per second over the window, across every pod of the selection."""
    sel = selector(namespace, model, revision, target)
    return f"sum(rate({GENERATED_TOKENS_METRIC}{sel}{_window(window_s)}))"


def request_rate_query(
    namespace: str, model: str, revision: str | None, target: str | None, window_s: int
) -> str:
    """Requests per second over the window (every code), across every pod of the selection."""
    sel = selector(namespace, model, revision, target)
    return f"sum(rate({REQUESTS_METRIC}{sel}{_window(window_s)}))"
