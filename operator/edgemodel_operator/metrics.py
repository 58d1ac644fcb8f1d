"""Owns the operator's access to runtime metrics: PromQL, Prometheus queries, and readings.

Three layers, each usable alone:

- Pure PromQL builders over the runtime's metric contract (docs/architecture.md, "Contracts"):
  `edgemodel_request_duration_seconds` (histogram) and `edgemodel_requests_total{code}`, both
  labelled model/revision/target by the runtime and namespace/pod by the scrape.
- Pure classifiers turning a number into a `Reading` (they live in `readings`, which imports
  no network client, so the pure decision modules can use them; re-exported here).
- `PrometheusClient`, an async instant-query client that never raises for Prometheus trouble:
  whatever goes wrong on the wire becomes a `QueryResult` with an error, and so an ERROR
  reading, because a monitoring outage must never look like a healthy or a failing model.

Trust boundary (docs/security.md): whatever Prometheus answers is untrusted text. A failed
query carries two texts: `error`, the full detail, for the operator's log only, and `reason`,
one of a few fixed, bounded phrases, the only one that may reach an EdgeModel's status or
Events (`public_error`). The per-object URL annotation is honoured only for URLs the operator
allowlists (`allowed_prometheus_url`), and redirects are never followed, so the operator's
bearer token goes nowhere but the URL it was configured for.

What counts as an error (the numerator of the error rate): server-side failures only.
  - HTTP: every 5xx status.
  - gRPC: INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, DATA_LOSS.
Not errors: 2xx, every 4xx, and the gRPC client-mistake codes (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, OUT_OF_RANGE, UNIMPLEMENTED, ...). RESOURCE_EXHAUSTED is deliberately *not*
an error: the runtime uses it (and HTTP 413) for a request larger than the limit, which is the
client's mistake (runtime serve/errors.py, ErrorKind.TOO_LARGE). A bad client must never make
a healthy revision look broken and trigger a rollback.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edgemodel_operator import labels
from edgemodel_operator.api import SLO
from edgemodel_operator.readings import (
    Outcome,
    Reading,
    classify_error_rate,
    classify_latency,
    classify_vs_baseline,
)

__all__ = [
    "DURATION_METRIC",
    "ERROR_CODE_REGEX",
    "PROMETHEUS_URL_ANNOTATION",
    "REQUESTS_METRIC",
    "SERVER_ERROR_GRPC_CODES",
    "Outcome",
    "PrometheusClient",
    "QueryResult",
    "Reading",
    "allowed_prometheus_url",
    "classify_error_rate",
    "classify_latency",
    "classify_vs_baseline",
    "error_rate_query",
    "escape_label_value",
    "is_error_code",
    "p95_latency_query",
    "parse_query_response",
    "prometheus_url_for",
    "request_rate_query",
    "selector",
]

log = logging.getLogger("edgemodel.metrics")
DURATION_METRIC = "edgemodel_request_duration_seconds"
MAX_RESPONSE_BYTES = 1 << 20  # an instant query's answer is tiny; never buffer a flood
REQUESTS_METRIC = "edgemodel_requests_total"

# Per-object override of the operator-wide Prometheus URL.
PROMETHEUS_URL_ANNOTATION = labels.PROMETHEUS_URL

# HTTP statuses are numeric (5xx); gRPC codes are names. One regex serves both because the
# runtime puts either in the same `code` label.
SERVER_ERROR_GRPC_CODES = ("INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "DATA_LOSS")
ERROR_CODE_REGEX = "5[0-9][0-9]|" + "|".join(SERVER_ERROR_GRPC_CODES)


def is_error_code(code: str) -> bool:
    """Whether a `code` label value counts as an error (the same rule as ERROR_CODE_REGEX)."""
    if len(code) == 3 and code.startswith("5") and code.isdigit():
        return True
    return code in SERVER_ERROR_GRPC_CODES


# ------------------------------------------------------------------ PromQL


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
    namespace: str, model: str, revision: str | None, target: str | None, window_s: int
) -> str:
    """p95 request latency in seconds over the window, across every pod of the selection.

    Buckets are summed by `le` only, so the quantile is of the whole selection's traffic (not
    an average of per-pod quantiles, which would hide one slow pod behind fast ones less).
    Zero traffic in the window gives NaN; no series at all gives an empty result.
    """
    sel = selector(namespace, model, revision, target)
    return (
        f"histogram_quantile(0.95, sum by (le) "
        f"(rate({DURATION_METRIC}_bucket{sel}{_window(window_s)})))"
    )


def error_rate_query(
    namespace: str, model: str, revision: str | None, target: str | None, window_s: int
) -> str:
    """Fraction of requests in the window that failed server-side (see module docstring).

    `or vector(0)` keeps the numerator at 0 when no error series exists yet (the runtime only
    creates a code's series on its first request), so a clean revision reads 0, not "no data";
    the denominator stays empty without traffic series, and 0/0 = NaN without traffic.
    """
    window = _window(window_s)
    errors = selector(namespace, model, revision, target, {"code": ERROR_CODE_REGEX})
    total = selector(namespace, model, revision, target)
    return (
        f"(sum(rate({REQUESTS_METRIC}{errors}{window})) or vector(0))"
        f" / sum(rate({REQUESTS_METRIC}{total}{window}))"
    )


def request_rate_query(
    namespace: str, model: str, revision: str | None, target: str | None, window_s: int
) -> str:
    """Requests per second over the window (every code), across every pod of the selection."""
    sel = selector(namespace, model, revision, target)
    return f"sum(rate({REQUESTS_METRIC}{sel}{_window(window_s)}))"


# ------------------------------------------------------------------ Prometheus client


@dataclass(frozen=True)
class QueryResult:
    """An instant query's answer: a value, no data (value None, no error), or an error.

    `error` is the detail (may quote Prometheus: logs only); `reason` the fixed phrase that
    may be shown to the EdgeModel's users (status, Events).
    """

    value: float | None = None
    error: str | None = None
    reason: str = ""

    @property
    def public_error(self) -> str:
        """The error as users may see it: a fixed phrase, never text Prometheus sent."""
        return self.reason or REASON_FAILED

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def no_data(self) -> bool:
        return self.error is None and self.value is None


# The fixed phrases a failed query may show users (QueryResult.reason). Prometheus' own
# `errorType` values are a closed set and so may be named; anything else it says may not.
REASON_FAILED = "Prometheus query failed"
REASON_UNREACHABLE = "Prometheus unreachable"
REASON_TIMEOUT = "Prometheus timed out"
REASON_CONFIGURATION = "Prometheus client configuration invalid (see the operator's log)"
REASON_NOT_UNDERSTOOD = "Prometheus answer not understood"
PROMETHEUS_ERROR_TYPES = frozenset(
    {"bad_data", "timeout", "canceled", "execution", "internal", "unavailable", "not_found"}
)


def _http_reason(status: int, error_type: Any = None) -> str:
    code = status if 100 <= status <= 599 else 0
    kind = f" ({error_type})" if error_type in PROMETHEUS_ERROR_TYPES else ""
    return f"Prometheus answered HTTP {code}{kind}"


def parse_query_response(status: int, body: bytes) -> QueryResult:
    """Interprets an /api/v1/query HTTP answer (pure, so every shape is unit-testable)."""
    try:
        payload = json.loads(body)
    except ValueError:
        snippet = body[:200].decode("utf-8", "replace").strip()
        return QueryResult(
            error=f"HTTP {status}: not JSON: {snippet!r}", reason=_http_reason(status)
        )
    if not isinstance(payload, dict):
        return QueryResult(
            error=f"HTTP {status}: unexpected JSON {type(payload).__name__}",
            reason=REASON_NOT_UNDERSTOOD,
        )
    if payload.get("status") != "success" or status != 200:
        kind = payload.get("errorType") or "error"
        message = payload.get("error") or f"status {payload.get('status')!r}"
        return QueryResult(
            error=f"HTTP {status}: {kind}: {message}", reason=_http_reason(status, kind)
        )
    data = payload.get("data")
    if not isinstance(data, dict):
        return QueryResult(error="response has no data object", reason=REASON_NOT_UNDERSTOOD)
    result_type = data.get("resultType")
    result = data.get("result")
    try:
        if result_type == "scalar":
            return QueryResult(value=_sample_value(result))
        if result_type == "vector":
            if not isinstance(result, list):
                return QueryResult(
                    error="vector result is not a list", reason=REASON_NOT_UNDERSTOOD
                )
            if not result:
                return QueryResult()  # no data
            # Our queries aggregate to one series; with several, the first is as good as any.
            first = result[0]
            if not isinstance(first, dict):
                return QueryResult(
                    error="vector sample is not an object", reason=REASON_NOT_UNDERSTOOD
                )
            return QueryResult(value=_sample_value(first.get("value")))
    except (TypeError, ValueError, IndexError) as exc:
        return QueryResult(error=f"bad sample in response: {exc}", reason=REASON_NOT_UNDERSTOOD)
    return QueryResult(
        error=f"unexpected result type {result_type!r}", reason=REASON_NOT_UNDERSTOOD
    )


def _sample_value(sample: Any) -> float:
    # A sample is [unix_time, "value"]; the value is a string so NaN and ±Inf survive JSON.
    if not isinstance(sample, list) or len(sample) != 2:
        raise ValueError(f"sample {sample!r} is not [time, value]")
    return float(sample[1])


class PrometheusClient:
    """Async instant-query client for the Prometheus HTTP API; never raises for its trouble.

    `token` is sent as a bearer token; `token_file` is read on every query instead, because a
    projected service-account token is rotated on disk under a long-running operator. TLS uses
    `ca_file` when given, the system roots otherwise, and no verification with `insecure`.
    Without an injected `session` each query opens and closes its own, so the client is safe
    to share across event loops (and kopf handler tasks) and needs no closing.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        insecure: bool = False,
        timeout_s: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.token_file = Path(token_file) if token_file is not None else None
        self.ca_file = Path(ca_file) if ca_file is not None else None
        self.insecure = insecure
        self.timeout_s = timeout_s
        self._session = session

    def _headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file is not None:
            token = self.token_file.read_text().strip()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.ca_file))
        return True

    async def query(self, promql: str) -> QueryResult:
        """Runs an instant query; errors come back in the result, never as an exception."""
        url = f"{self.base_url}/api/v1/query"
        try:
            headers = self._headers()
            ssl_option = self._ssl()
        except (OSError, ValueError) as exc:
            # OSError covers ssl.SSLError (a bad CA file); ValueError a token that is not text.
            return QueryResult(error=f"client configuration: {exc}", reason=REASON_CONFIGURATION)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            if self._session is not None:
                return await self._post(self._session, url, promql, headers, ssl_option, timeout)
            async with aiohttp.ClientSession() as session:
                return await self._post(session, url, promql, headers, ssl_option, timeout)
        except TimeoutError:
            return QueryResult(
                error=f"Prometheus at {self.base_url} timed out after {self.timeout_s:g} s",
                reason=REASON_TIMEOUT,
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: aiohttp rejects a malformed URL before connecting.
            return QueryResult(
                error=f"Prometheus at {self.base_url} unreachable: {exc!r}",
                reason=REASON_UNREACHABLE,
            )

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        promql: str,
        headers: dict[str, str],
        ssl_option: ssl.SSLContext | bool,
        timeout: aiohttp.ClientTimeout,
    ) -> QueryResult:
        # POST (form-encoded) so long selectors never hit URL length limits of proxies. No
        # redirects: a 3xx must not carry the bearer token to wherever it points.
        async with session.post(
            url,
            data={"query": promql},
            headers=headers,
            ssl=ssl_option,
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            body = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    break
            result = parse_query_response(response.status, bytes(body))
        if result.error is not None:
            log.warning("prometheus query failed", extra={"url": url, "error": result.error})
        return result

    async def p95_ms(
        self,
        namespace: str,
        model: str,
        revision: str | None,
        target: str | None,
        window_s: int,
        slo: SLO,
    ) -> Reading:
        """The selection's p95 latency in ms, classified against `slo.latency_p95_ms`."""
        result = await self.query(p95_latency_query(namespace, model, revision, target, window_s))
        if result.error is not None:
            return Reading(Outcome.ERROR, None, slo.latency_p95_ms, result.public_error)
        seconds = result.value
        return classify_latency(None if seconds is None else seconds * 1000.0, slo.latency_p95_ms)

    async def error_rate(
        self,
        namespace: str,
        model: str,
        revision: str | None,
        target: str | None,
        window_s: int,
        slo: SLO,
    ) -> Reading:
        """The selection's server-error fraction, classified against `slo.max_error_rate`."""
        result = await self.query(error_rate_query(namespace, model, revision, target, window_s))
        if result.error is not None:
            return Reading(Outcome.ERROR, None, slo.max_error_rate, result.public_error)
        return classify_error_rate(result.value, slo.max_error_rate)

    async def request_rate(
        self, namespace: str, model: str, revision: str | None, target: str | None, window_s: int
    ) -> QueryResult:
        """Requests per second (lets a caller tell "no traffic" from "no series")."""
        return await self.query(request_rate_query(namespace, model, revision, target, window_s))


def prometheus_url_for(annotations: Mapping[str, str], default: str) -> str:
    """The Prometheus base URL for one object: its annotation if set, else `default`.

    A malformed annotation raises ValueError instead of silently falling back, because
    querying the wrong Prometheus would judge the model on someone else's data.
    """
    raw = (annotations.get(PROMETHEUS_URL_ANNOTATION) or "").strip()
    if not raw:
        return default
    if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1]) == 0:
        raise ValueError(
            f"annotation {PROMETHEUS_URL_ANNOTATION}={raw!r}: must be an http:// or https:// URL"
        )
    return raw.rstrip("/")


def allowed_prometheus_url(
    annotations: Mapping[str, str], default: str, allowlist: Collection[str]
) -> str:
    """The Prometheus URL for one object, refusing an annotation the operator did not allow.

    Anyone who may edit an EdgeModel may set the annotation; without this check they could
    point the operator (and, before, its credentials) at any host, and read the answers back
    in status. An annotated URL is honoured only when it equals (trailing "/" aside) one of
    the operator's `allowlist` (chart value `prometheus.allowedUrls`); the operator-configured
    `default` is always allowed. ValueError names the annotation and the refused value.
    """
    url = prometheus_url_for(annotations, default)
    allowed = {u.strip().rstrip("/") for u in allowlist if u.strip()}
    if url and url.rstrip("/") != default.rstrip("/") and url not in allowed:
        raise ValueError(
            f"annotation {PROMETHEUS_URL_ANNOTATION}={url!r}: not in the operator's allowed "
            "Prometheus URLs (chart value prometheus.allowedUrls)"
        )
    return url
