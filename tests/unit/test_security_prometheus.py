"""Attacks through the Prometheus override: credential theft, and reading a body into status.

Anyone who may edit an EdgeModel may annotate it with `edgemodel.dev/prometheus-url`. These
tests play that user against real HTTP servers on 127.0.0.1 (aiohttp), which record the
Authorization header each request carried: the annotation is honoured only for allowlisted
URLs, the operator's bearer token goes to the operator-configured Prometheus alone (not to
an allowlisted one, not through a redirect), and nothing Prometheus writes in a response body
reaches the EdgeModel's status (only fixed, bounded reasons do). See docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from edgemodel_operator.api import SLO
from edgemodel_operator.handlers import Runtime
from edgemodel_operator.metrics import (
    PROMETHEUS_URL_ANNOTATION,
    Outcome,
    PrometheusClient,
    allowed_prometheus_url,
)
from edgemodel_operator.settings import Settings
from tests.local_http import LocalHTTPServer

CONFIGURED = "http://prometheus.monitoring.svc:9090"
SECRET = "s3cret-operator-token"
SLO_ = SLO(latency_p95_ms=100.0, max_error_rate=0.01)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [{"value": [0, "0.05"]}]}}


class Recorder(LocalHTTPServer):
    """A real HTTP server on 127.0.0.1 that records the Authorization header of each request."""

    def __init__(self, handler: Handler | None = None) -> None:
        super().__init__()
        self.seen: list[str | None] = []
        self._handler = handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.headers.get("Authorization"))
        if self._handler is not None:
            return await self._handler(request)
        return web.json_response(VECTOR)


def _token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    return path


# ------------------------------------------------------------------ the annotation allowlist


def test_annotation_naming_an_unlisted_prometheus_is_refused() -> None:
    evil = {PROMETHEUS_URL_ANNOTATION: "https://attacker.example.com"}
    with pytest.raises(ValueError, match=r"edgemodel\.dev/prometheus-url.*not in the operator"):
        allowed_prometheus_url(evil, CONFIGURED, ())
    with pytest.raises(ValueError, match="attacker"):
        allowed_prometheus_url(evil, CONFIGURED, ("https://prom.team-a:9090",))


def test_annotation_naming_an_allowlisted_or_the_configured_prometheus_is_honoured() -> None:
    team = {PROMETHEUS_URL_ANNOTATION: "https://prom.team-a:9090/"}
    assert allowed_prometheus_url(team, CONFIGURED, ("https://prom.team-a:9090",)) == (
        "https://prom.team-a:9090"
    )
    own = {PROMETHEUS_URL_ANNOTATION: CONFIGURED}
    assert allowed_prometheus_url(own, CONFIGURED, ()) == CONFIGURED
    assert allowed_prometheus_url({}, CONFIGURED, ()) == CONFIGURED
    assert allowed_prometheus_url({}, CONFIGURED + "/", ()) == CONFIGURED + "/"


def test_allowlist_entries_must_be_urls() -> None:
    with pytest.raises(ValueError, match="allowed Prometheus URL 'prom:9090'"):
        Settings(prometheus_allowed_urls=("prom:9090",))


# ------------------------------------------------------------------ where credentials go


def test_operator_token_is_never_sent_to_an_annotated_prometheus(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str | None], list[str | None]]:
        async with Recorder() as configured, Recorder() as annotated:
            runtime = Runtime(
                settings=Settings(
                    prometheus_url=configured.url,
                    prometheus_token_file=str(_token(tmp_path)),
                    prometheus_allowed_urls=(annotated.url,),
                )
            )
            url = allowed_prometheus_url(
                {PROMETHEUS_URL_ANNOTATION: annotated.url},
                runtime.settings.prometheus_url,
                runtime.settings.prometheus_allowed_urls,
            )
            reading = await runtime.prometheus_client(url).p95_ms("ns", "m", None, "a", 60, SLO_)
            assert reading.outcome is Outcome.SUCCESSFUL
            own = runtime.prometheus_client(configured.url)
            assert (await own.p95_ms("ns", "m", None, "a", 60, SLO_)).outcome is Outcome.SUCCESSFUL
            return configured.seen, annotated.seen

    configured_seen, annotated_seen = asyncio.run(scenario())
    assert annotated_seen == [None]
    assert configured_seen == [f"Bearer {SECRET}"]


def test_redirect_does_not_carry_the_token_elsewhere(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str | None], list[str | None], str | None]:
        async with Recorder() as elsewhere:

            async def redirect(_: web.Request) -> web.StreamResponse:
                raise web.HTTPTemporaryRedirect(f"{elsewhere.url}/api/v1/query")

            async with Recorder(redirect) as configured:
                client = PrometheusClient(configured.url, token_file=_token(tmp_path))
                result = await client.query("up")
                return configured.seen, elsewhere.seen, result.error

    configured_seen, elsewhere_seen, error = asyncio.run(scenario())
    assert configured_seen == [f"Bearer {SECRET}"]
    assert elsewhere_seen == []
    assert error is not None and "307" in error


# ------------------------------------------------------------------ what reaches status


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (
            400,
            json.dumps({"status": "error", "errorType": "bad_data", "error": "LEAK-1 pwned"}),
            "application/json",
        ),
        (
            503,
            json.dumps({"status": "error", "errorType": "LEAK-2 <script>", "error": "x"}),
            "application/json",
        ),
        (502, "<html>LEAK-3 internal host db.corp:5432</html>", "text/html"),
        (200, json.dumps({"status": "success", "data": {"resultType": "LEAK-4"}}), None),
        (
            200,
            json.dumps(
                {
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"value": [0, "LEAK-5"]}]},
                }
            ),
            None,
        ),
    ],
    ids=["error-message", "error-type", "html-body", "result-type", "sample-value"],
)
def test_prometheus_response_text_never_reaches_status(
    status: int, body: str, content_type: str | None
) -> None:
    async def answer(_: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status, text=body, content_type=content_type or "application/json"
        )

    async def scenario() -> list[str]:
        async with Recorder(answer) as prometheus:
            client = PrometheusClient(prometheus.url)
            p95 = await client.p95_ms("ns", "m", None, "a", 60, SLO_)
            errors = await client.error_rate("ns", "m", None, "a", 60, SLO_)
            assert p95.outcome is Outcome.ERROR and errors.outcome is Outcome.ERROR
            return [p95.detail, errors.detail]

    for detail in asyncio.run(scenario()):
        assert "LEAK" not in detail
        assert detail.startswith("Prometheus ") and len(detail) <= 80, detail
