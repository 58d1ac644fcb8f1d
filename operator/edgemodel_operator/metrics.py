"""Owns the operator's Prometheus client: instant queries, the URL allowlist, readings.

Two pure neighbours hold what needs no network: `promql` renders the queries over the
runtime's metric contract (docs/architecture.md, "Contracts"; its docstring says what counts
as an error) and `readings` classifies a number into a `Reading`. Both are re-exported here
for callers that want one import; the decision modules import them directly and never this
module (import-linter contract "decision modules").

`PrometheusClient` is an async instant-query client that never raises for Prometheus trouble:
whatever goes wrong on the wire becomes a `QueryResult` with an error, and so an ERROR
reading, because a monitoring outage must never look like a healthy or a failing model.

Trust boundary (docs/security.md): whatever Prometheus answers is untrusted text. A failed
query carries two texts: `error`, the full detail, for the operator's log only, and `reason`,
one of a few fixed, bounded phrases, the only one that may reach an EdgeModel's status or
Events (`public_error`). The per-object URL annotation is honoured only for URLs the operator
allowlists (`allowed_prometheus_url`), and redirects are never followed, so the operator's
bearer token goes nowhere but the URL it was configured for.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edgemodel_operator import labels
from edgemodel_operator.api import SLO
from edgemodel_operator.promql import (
    DURATION_METRIC,
    ERROR_CODE_REGEX,
    REQUESTS_METRIC,
    SERVER_ERROR_GRPC_CODES,
    error_rate_query,
    escape_label_value,
    is_error_code,
    p95_latency_query,
    request_rate_query,
    selector,
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
    "classify_shed",
    "classify_vs_baseline",
    "error_rate_query",
    "escape_label_value",
    "is_error_code",
    "p95_latency_query",
    "parse_query_response",
    "prometheus_url_for",
    "request_rate_query",
    "selector",
    "shed_fraction_query",
]

log = logging.getLogger("edgemodel.metrics")
MAX_RESPONSE_BYTES = 1 << 20  # an instant query's answer is tiny; never buffer a flood

# Per-object override of the operator-wide Prometheus URL.
PROMETHEUS_URL_ANNOTATION = labels.PROMETHEUS_URL

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
        metric: str = DURATION_METRIC,
    ) -> Reading:
        """The selection's p95 of the latency histogram `metric` (request duration unless
        told), in ms, classified against `slo.latency_p95_ms`."""
        query = p95_latency_query(namespace, model, revision, target, window_s, metric)

        def in_ms(seconds: float | None, line: float) -> Reading:
            return classify_latency(None if seconds is None else seconds * 1000.0, line)

        return await self._classified(query, slo.latency_p95_ms, in_ms)

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
        query = error_rate_query(namespace, model, revision, target, window_s)
        return await self._classified(query, slo.max_error_rate, classify_error_rate)

    async def shed_fraction(
        self,
        namespace: str,
        model: str,
        revision: str | None,
        target: str | None,
        window_s: int,
        scale_up_at: float,
    ) -> Reading:
        """The share of the selection's requests shed at the in-flight cap, classified against
        the autoscaler's `scaleUpAtShedFraction`."""
        query = shed_fraction_query(namespace, model, revision, target, window_s)
        return await self._classified(query, scale_up_at, classify_shed)

    async def _classified(
        self, query: str, line: float, classify: Callable[[float | None, float], Reading]
    ) -> Reading:
        """`query`'s value classified against `line`; ERROR (with the public reason) when
        Prometheus could not answer."""
        result = await self.query(query)
        if result.error is not None:
            return Reading(Outcome.ERROR, None, line, result.public_error)
        return classify(result.value, line)

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
