"""The Prometheus client and its PromQL against a real Prometheus scraping a real exporter.

A prometheus_client exporter in this process serves the runtime's metric contract
(`edgemodel_request_duration_seconds`, `edgemodel_requests_total{code}`) with a fixed mix of
latencies and codes, observed continuously so `rate()` sees traffic; the Debian `prometheus`
binary scrapes it every second (static_configs adding namespace/pod, as the Kubernetes scrape
would). The tests then check the numbers our queries produce, the four reading outcomes, and
that no Prometheus trouble ever raises.

Fakes, only where the real server cannot show the fault: a tiny aiohttp server stands in for
Prometheus to record the Authorization header (Prometheus itself has no bearer-token auth to
check against) and to hang past the client's timeout.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from edgemodel_operator.api import SLO
from edgemodel_operator.metrics import Outcome, PrometheusClient, QueryResult
from edgemodel_sandbox.cluster import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
NS = "prod"
WINDOW = 10
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
WEIRD_MODEL = 'we"ird\\model'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PROMETHEUS.exists(), reason="needs the Debian prometheus binary"),
]

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


# ------------------------------------------------------------------ the exporter

# One batch per tick and per series: (seconds, code) pairs. For revision r1: 18 fast, 2 slow;
# the two server errors (500, UNAVAILABLE) are the slow ones, and the client mistakes (4xx,
# INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED) must not count. So:
#   error rate = 2/20 = 0.1
#   p95: cumulative 0.9 up to le=0.005 (and 0.01, 0.025), 1.0 at le=0.05 -> rank 0.95 is
#   halfway through (0.025, 0.05]: 37.5 ms by histogram_quantile's linear interpolation.
R1_BATCH = (
    [(0.004, "200")] * 13
    + [(0.004, c) for c in ("400", "404", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED")]
    + [(0.04, "500"), (0.04, "UNAVAILABLE")]
)
# A broken revision under a flood: 2 server errors in 20 accepted requests, and 60 requests shed
# at the in-flight cap (code SHED, never timed, as the runtime counts them). Shed requests are in
# neither side of the error rate: 0.1, where counting them would dilute it to 2/80 = 0.025.
FLOODED_MODEL = "flooded"
FLOODED_BATCH = [(0.004, "200")] * 18 + [(0.04, "500")] * 2 + [(0.0, "SHED")] * 60
# r2 and the weird model: all fast and clean: p95 = 0.001 + 0.004 x 0.95 = 4.8 ms, errors 0.
CLEAN_BATCH = [(0.004, "200")] * 10 + [(0.004, "OK")] * 10


class _Locked:
    """Collects another registry under a lock (prometheus_client's Collector protocol)."""

    def __init__(self, registry: CollectorRegistry, lock: threading.Lock) -> None:
        self.registry, self.lock = registry, lock

    def collect(self) -> list[Any]:
        with self.lock:
            return list(self.registry.collect())


class Exporter:
    """The runtime's metric contract, fed a fixed request mix on a background thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Scrapes see whole batches only (the feed holds the lock per tick), so the mix in any
        # window is exact and the expected values below need no slack for a torn batch.
        self._lock = threading.Lock()
        self.exposed = CollectorRegistry(auto_describe=False)
        self.exposed.register(_Locked(self.registry, self._lock))
        labels = ("model", "revision", "target")
        self.duration = Histogram(
            "edgemodel_request_duration_seconds",
            "latency",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "edgemodel_requests", "requests", (*labels, "code"), registry=self.registry
        )
        self.port = free_port()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self.series: list[tuple[tuple[str, str, str], list[tuple[float, str]]]] = [
            (("digits", "r1", "arm"), R1_BATCH),
            (("digits", "r2", "arm"), CLEAN_BATCH),
            ((WEIRD_MODEL, "r1", "arm"), CLEAN_BATCH),
            ((FLOODED_MODEL, "r1", "arm"), FLOODED_BATCH),
        ]
        # Observed once before the first scrape and never again: the series exists but has no
        # traffic in any window, so histogram_quantile gives NaN and the error rate 0/0.
        self._observe(("digits", "idle", "arm"), CLEAN_BATCH)

    def _observe(self, labels: tuple[str, str, str], batch: list[tuple[float, str]]) -> None:
        for seconds, code in batch:
            if code != "SHED":
                self.duration.labels(*labels).observe(seconds)
            self.requests.labels(*labels, code).inc()

    def _feed(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                for labels, batch in self.series:
                    self._observe(labels, batch)

    def start(self) -> Exporter:
        self._server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.exposed)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------ the real Prometheus


@dataclass
class Prometheus:
    """A real Prometheus process on a free loopback port, with its own data folder."""

    workdir: Path
    scrape_port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s"]
        if self.scrape_port is not None:
            lines += [
                "scrape_configs:",
                "  - job_name: runtime",
                "    scrape_interval: 1s",
                "    static_configs:",
                f"      - targets: ['127.0.0.1:{self.scrape_port}']",
                f"        labels: {{namespace: {NS}, pod: digits-r1-abc}}",
            ]
        config.write_text("\n".join(lines) + "\n")
        self.log = self.workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"prometheus not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping the exporter, returned once our own queries see rated data."""
    exporter = Exporter().start()
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), scrape_port=exporter.port)
    try:
        server.start()
        client = PrometheusClient(server.url)
        from edgemodel_operator.metrics import p95_latency_query

        query = p95_latency_query(NS, "digits", "r1", "arm", WINDOW)
        deadline = time.monotonic() + 30
        while True:
            result = run(client.query(query))
            if result.value is not None and not math.isnan(result.value):
                break
            assert time.monotonic() < deadline, f"no data after 30 s: {result}"
            time.sleep(0.5)
        yield server
    finally:
        server.stop()
        exporter.stop()


SLO_ = SLO(latency_p95_ms=50.0, max_error_rate=0.05)


# ------------------------------------------------------------------ numbers


def test_p95_matches_the_histogram(prometheus: Prometheus) -> None:
    client = PrometheusClient(prometheus.url)
    reading = run(client.p95_ms(NS, "digits", "r1", "arm", WINDOW, SLO_))
    assert reading.outcome is Outcome.SUCCESSFUL, reading
    assert reading.value is not None
    assert 25.0 < reading.value <= 50.0  # the bucket the 95th percentile is in
    assert reading.value == pytest.approx(37.5, abs=0.5)
    strict = run(client.p95_ms(NS, "digits", "r1", "arm", WINDOW, SLO(latency_p95_ms=30.0)))
    assert strict.outcome is Outcome.FAILED and strict.threshold == 30.0


def test_p95_selects_by_revision(prometheus: Prometheus) -> None:
    client = PrometheusClient(prometheus.url)
    reading = run(client.p95_ms(NS, "digits", "r2", "arm", WINDOW, SLO_))
    assert reading.outcome is Outcome.SUCCESSFUL
    assert reading.value == pytest.approx(4.8, abs=0.2)


def test_error_rate_counts_server_errors_only(prometheus: Prometheus) -> None:
    client = PrometheusClient(prometheus.url)
    r1 = run(client.error_rate(NS, "digits", "r1", "arm", WINDOW, SLO_))
    assert r1.outcome is Outcome.FAILED and r1.value == pytest.approx(0.1, abs=0.001)
    # No error series at all for r2: 0, not "no data".
    r2 = run(client.error_rate(NS, "digits", "r2", None, WINDOW, SLO_))
    assert r2.outcome is Outcome.SUCCESSFUL and r2.value == 0.0
    # The whole model, every revision with traffic: 2 errors in 40 requests per tick.
    both = run(client.error_rate(NS, "digits", None, None, WINDOW, SLO_))
    assert both.value == pytest.approx(0.05, abs=0.001)


def test_shed_requests_neither_fail_nor_dilute_the_error_rate(prometheus: Prometheus) -> None:
    client = PrometheusClient(prometheus.url)
    flooded = run(client.error_rate(NS, FLOODED_MODEL, "r1", "arm", WINDOW, SLO_))
    assert flooded.outcome is Outcome.FAILED and flooded.value == pytest.approx(0.1, abs=0.001)


def test_the_shed_share_counts_every_request_and_reads_zero_before_any_is_shed(
    prometheus: Prometheus,
) -> None:
    """The autoscaler's saturation signal: 60 of 80 requests shed is 0.75, over any line."""
    client = PrometheusClient(prometheus.url)
    flooded = run(client.shed_fraction(NS, FLOODED_MODEL, "r1", "arm", WINDOW, 0.01))
    assert flooded.outcome is Outcome.FAILED and flooded.value == pytest.approx(0.75, abs=0.001)
    assert "shed 0.75 > 0.01" in flooded.detail
    # No SHED series at all for r2: 0, not "no data", so a clean target may scale down.
    clean = run(client.shed_fraction(NS, "digits", "r2", "arm", WINDOW, 0.01))
    assert clean.outcome is Outcome.SUCCESSFUL and clean.value == 0.0


def test_request_rate(prometheus: Prometheus) -> None:
    client = PrometheusClient(prometheus.url)
    r1 = run(client.request_rate(NS, "digits", "r1", "arm", WINDOW))
    r2 = run(client.request_rate(NS, "digits", "r2", "arm", WINDOW))
    assert r1.value is not None and r2.value is not None
    assert r1.value > 0 and r1.value == pytest.approx(r2.value, rel=0.05)


def test_label_values_are_escaped_end_to_end(prometheus: Prometheus) -> None:
    client = PrometheusClient(prometheus.url)
    reading = run(client.p95_ms(NS, WEIRD_MODEL, "r1", "arm", WINDOW, SLO_))
    assert reading.outcome is Outcome.SUCCESSFUL
    assert reading.value == pytest.approx(4.8, abs=0.2)


# ------------------------------------------------------------------ no data


@pytest.mark.parametrize(
    ("namespace", "model", "revision"),
    [
        (NS, "nope", None),  # no such series
        ("other", "digits", "r1"),  # wrong namespace
        (NS, "digits", "idle"),  # the series exists but had no traffic: NaN
    ],
)
def test_missing_or_idle_series_is_inconclusive(
    prometheus: Prometheus, namespace: str, model: str, revision: str | None
) -> None:
    client = PrometheusClient(prometheus.url)
    p95 = run(client.p95_ms(namespace, model, revision, None, WINDOW, SLO_))
    errors = run(client.error_rate(namespace, model, revision, None, WINDOW, SLO_))
    assert p95.outcome is Outcome.INCONCLUSIVE and p95.value is None, p95
    assert errors.outcome is Outcome.INCONCLUSIVE and errors.value is None, errors
    shed = run(client.shed_fraction(namespace, model, revision, None, WINDOW, 0.01))
    assert shed.outcome is Outcome.INCONCLUSIVE and shed.value is None, shed


# ------------------------------------------------------------------ errors, never exceptions


def test_bad_query_is_an_error(prometheus: Prometheus) -> None:
    result = run(PrometheusClient(prometheus.url).query("sum(rate(x[5m]"))
    assert result.error is not None and "bad_data" in result.error and result.value is None


def test_stopped_prometheus_is_an_error_not_an_exception(tmp_path: Path) -> None:
    server = Prometheus(tmp_path / "prom")
    try:
        server.start()
        client = PrometheusClient(server.url, timeout_s=2)
        assert run(client.query("vector(1)")) == QueryResult(value=1.0)
    finally:
        server.stop()
    p95 = run(client.p95_ms(NS, "digits", "r1", "arm", WINDOW, SLO_))
    errors = run(client.error_rate(NS, "digits", "r1", "arm", WINDOW, SLO_))
    for reading in (p95, errors):
        assert reading.outcome is Outcome.ERROR and reading.value is None
        assert "unreachable" in reading.detail


def test_unresolvable_host_is_an_error() -> None:
    result = run(PrometheusClient("http://prometheus.invalid:9090", timeout_s=2).query("up"))
    assert result.error is not None


# ------------------------------------------------------------------ a fake Prometheus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def with_fake(handler: Handler, body: Callable[[str], Awaitable[T]]) -> T:
    app = web.Application()
    app.router.add_route("*", "/api/v1/query", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        return await body(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def vector(value: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [time.time(), value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_bearer_token_is_sent_and_token_file_reread(tmp_path: Path) -> None:
    seen: list[str | None] = []
    queries: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        queries.append(str((await request.post()).get("query")))
        if request.headers.get("Authorization") not in ("Bearer s3cret", "Bearer rotated"):
            return web.Response(status=401, text="Unauthorized")
        return web.json_response(vector("0.012"))

    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")

    async def body(url: str) -> list[QueryResult]:
        results = [await PrometheusClient(url, token="s3cret").query("up")]
        from_file = PrometheusClient(url, token_file=token_file)
        results.append(await from_file.query("up"))
        token_file.write_text("rotated")  # kubelet rotates the projected token on disk
        results.append(await from_file.query("up"))
        results.append(await PrometheusClient(url).query("up"))
        results.append(await PrometheusClient(url + "/").query('a{b="c"}'))
        return results

    results = run(with_fake(handler, body))
    assert seen == ["Bearer s3cret", "Bearer s3cret", "Bearer rotated", None, None]
    assert [r.value for r in results[:3]] == [0.012] * 3
    assert results[3].error is not None and "401" in results[3].error
    assert queries[-1] == 'a{b="c"}'


def test_unreadable_token_file_is_an_error(tmp_path: Path) -> None:
    client = PrometheusClient("http://127.0.0.1:1", token_file=tmp_path / "missing")
    result = run(client.query("up"))
    assert result.error is not None and "configuration" in result.error


def test_hanging_prometheus_times_out_as_an_error() -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 10)  # hangs until the client has given up
        return web.json_response(vector("1"))

    async def body(url: str) -> tuple[QueryResult, float]:
        started = time.monotonic()
        result = await PrometheusClient(url, timeout_s=0.3).query("up")
        took = time.monotonic() - started
        release.set()
        return result, took

    result, took = run(with_fake(handler, body))
    assert result.error is not None and "timed out" in result.error
    assert took < 2.5


def test_error_status_in_json_is_an_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        payload = {"status": "error", "errorType": "timeout", "error": "query timed out"}
        return web.json_response(payload, status=503)

    async def body(url: str) -> QueryResult:
        return await PrometheusClient(url).query("up")

    result = run(with_fake(handler, body))
    assert result.error == "HTTP 503: timeout: query timed out"


def test_tls_with_ca_file_and_insecure(tmp_path: Path) -> None:
    import ssl

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=prometheus", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(vector("2"))

    async def body() -> list[QueryResult]:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        url = f"https://127.0.0.1:{port}"
        try:
            return [
                await PrometheusClient(url, ca_file=cert).query("up"),
                await PrometheusClient(url, insecure=True).query("up"),
                await PrometheusClient(url).query("up"),  # system roots do not know it
                await PrometheusClient(url, ca_file=tmp_path / "nope.crt").query("up"),
            ]
        finally:
            await runner.cleanup()

    trusted, insecure, untrusted, missing_ca = run(body())
    assert trusted.value == 2.0 and insecure.value == 2.0
    assert untrusted.error is not None and "certificate" in untrusted.error.lower()
    assert missing_ca.error is not None and "configuration" in missing_ca.error
