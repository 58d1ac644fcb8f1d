"""One middleware turns domain errors into JSON HTTP answers; everything else passes through."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edgemodel_runtime.http_errors import HttpFailure, error_middleware
from edgemodel_runtime.serve.errors import ErrorKind, ServeError
from edgemodel_runtime.serve.protocol_http import http_failure


class Refused(Exception):
    """A domain error of the test app."""


def translate(exc: Exception) -> HttpFailure | None:
    if isinstance(exc, Refused):
        return HttpFailure(409, f"refused: {exc}", {"X-Why": "test"})
    return None


async def refused(_request: web.Request) -> web.Response:
    raise Refused("already there")


async def missing(_request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="aiohttp's own")


async def fine(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def fetch(path: str) -> tuple[int, str, dict[str, str]]:
    async def run() -> tuple[int, str, dict[str, str]]:
        app = web.Application(middlewares=[error_middleware(translate)])
        app.router.add_get("/refused", refused)
        app.router.add_get("/missing", missing)
        app.router.add_get("/fine", fine)
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path)
            return response.status, await response.text(), dict(response.headers)

    return asyncio.run(run())


def test_a_translated_error_is_a_json_answer_with_its_status_and_headers() -> None:
    status, body, headers = fetch("/refused")
    assert (status, json.loads(body)) == (409, {"error": "refused: already there"})
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Why"] == "test"


def test_unknown_exceptions_and_successes_pass_through() -> None:
    assert fetch("/missing")[:2] == (404, "aiohttp's own")
    assert fetch("/fine")[:2] == (200, "ok")


def test_serve_errors_map_to_their_kind_and_overload_asks_to_retry() -> None:
    overloaded = http_failure(ServeError(ErrorKind.OVERLOADED, "busy"))
    assert overloaded is not None
    assert (overloaded.status, overloaded.message) == (503, "busy")
    assert "Retry-After" in overloaded.headers
    invalid = http_failure(ServeError(ErrorKind.INVALID_ARGUMENT, "bad"))
    assert invalid == HttpFailure(400, "bad", {})
    assert http_failure(ValueError("not a ServeError")) is None
