"""A real HTTP server on 127.0.0.1 for tests that play the far side of a client (the API server,
Prometheus): a subclass answers every method and path in `handle`; the port is picked by the
kernel, so parallel runs never race for one."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalHTTPServer:
    """`async with Subclass(...) as server:` listens until the block ends; `server.url`."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
