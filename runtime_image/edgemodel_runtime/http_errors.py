"""Owns the one place an aiohttp app turns a domain error into an HTTP answer.

Handlers raise their own exceptions; `error_middleware(translate)` catches them once, asks
`translate` for the `HttpFailure` (status, message, extra headers) and answers with the JSON
body `{"error": "..."}` every edgemodel HTTP server uses. An exception `translate` does not
know (None) propagates unchanged, so aiohttp's own `HTTPException`s and real bugs are not
masked. Shared by the serve runtime and the artifact server (docs/architecture.md, "Serving
boundary").
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Translate = Callable[[Exception], "HttpFailure | None"]


@dataclass(frozen=True)
class HttpFailure:
    """How one failure reads on the wire: status, one-line message, extra headers."""

    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The JSON error answer `{"error": message}` with `status` (and any extra headers)."""
    response = web.Response(
        status=status, body=_DUMPS({"error": message}).encode(), content_type="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response


def error_middleware(translate: Translate) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware answering every exception `translate` maps with its JSON error."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            failure = translate(exc)
            if failure is None:
                raise
            return json_error(failure.status, failure.message, failure.headers)

    return middleware
