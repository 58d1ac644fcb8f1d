"""Owns the runtime's Prometheus metrics and their `/metrics` app.

The metric names and labels are a contract (docs/architecture.md, "Contracts").

Every series carries the same three labels — model, revision, target — fixed for the life of
the process, plus `code` on the request counter (an HTTP status or a gRPC status name), and
`provider` / `requested` on `edgemodel_model_info` (the execution provider the session got,
so a GPU target that fell back to the CPU shows on a dashboard and in PromQL joins). Nothing
request-specific (request ids, client or pod addresses) ever becomes a label, so cardinality
is bounded by the number of distinct status codes. The registry is private to the server so
tests and embedders never see series from another instance.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LABELS = ("model", "revision", "target")

# Sub-millisecond resolution matters: a small model on CPU answers in a few hundred µs, and a
# regression from 0.3 ms to 0.9 ms must be visible before it reaches the SLO.
_BASE_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def latency_buckets(slo_seconds: float) -> tuple[float, ...]:
    """Latency buckets with a boundary exactly at the SLO, so "fraction within SLO" is exact."""
    return tuple(sorted({*_BASE_LATENCY_BUCKETS, round(slo_seconds, 9)}))


def batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Powers of two up to the largest batch the server will form (and that batch itself)."""
    top = max(1, max_batch_size)
    buckets = {1.0, float(top)}
    size = 2
    while size < top:
        buckets.add(float(size))
        size *= 2
    return tuple(sorted(buckets))


class ServeMetrics:
    """The runtime's series, pre-bound to this process's model/revision/target labels."""

    def __init__(
        self,
        *,
        model: str,
        revision: str,
        target: str,
        slo_seconds: float = 0.05,
        max_batch_size: int = 1,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        values = (model, revision, target)
        self._values = values
        self.request_duration = Histogram(
            "edgemodel_request_duration_seconds",
            "Inference request latency as seen by the server, from request received to response"
            " ready, of accepted requests only (successes and server-side failures; refused and"
            " client-failed requests are counted in edgemodel_requests_total, not timed here)",
            LABELS,
            buckets=latency_buckets(slo_seconds),
            registry=self.registry,
        ).labels(*values)
        self._requests = Counter(
            "edgemodel_requests",
            "Inference requests by outcome (code: HTTP status or gRPC status name)",
            (*LABELS, "code"),
            registry=self.registry,
        )
        self.inflight = Gauge(
            "edgemodel_inflight_requests",
            "Inference requests being handled now",
            LABELS,
            registry=self.registry,
        ).labels(*values)
        self.batch_size = Histogram(
            "edgemodel_batch_size",
            "Rows per onnxruntime execution (more than one request's rows when batching merged"
            " them)",
            LABELS,
            buckets=batch_buckets(max_batch_size),
            registry=self.registry,
        ).labels(*values)
        self.queue_duration = Histogram(
            "edgemodel_queue_duration_seconds",
            "Time a validated request waited before its onnxruntime execution started",
            LABELS,
            buckets=_BASE_LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(*values)
        self._model_info = Gauge(
            "edgemodel_model_info",
            "1 for the model this process serves: provider is the onnxruntime execution provider"
            " its session runs on (cpu, cuda, tensorrt), requested what --providers asked for",
            (*LABELS, "provider", "requested"),
            registry=self.registry,
        )
        self._by_code: dict[str, Counter] = {}

    def model_loaded(self, provider: str, requested: str) -> None:
        """Record which provider the loaded model's session got, against the one asked for."""
        self._model_info.clear()
        self._model_info.labels(*self._values, provider, requested).set(1)

    def observe_request(self, code: str, seconds: float, *, timed: bool = True) -> None:
        """Record one finished inference request (any outcome) and, when `timed`, its latency.

        Only requests the server accepted and worked on are timed (successes and server-side
        failures): refusals and client failures answer in microseconds, and timing them would
        let any client pull the SLO's p95 down (docs/architecture.md, "Serving boundary").
        """
        counter = self._by_code.get(code)
        if counter is None:  # cache the child: labels() costs a lock and a dict build per call
            counter = self._requests.labels(*self._values, code)
            self._by_code[code] = counter
        counter.inc()
        if timed:
            self.request_duration.observe(seconds)

    def exposition(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data


def metrics_app(metrics: ServeMetrics) -> web.Application:
    """The metrics port's app: `/metrics` only (it is not served on the inference port)."""

    async def handle(_request: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app
