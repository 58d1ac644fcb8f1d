"""The operator queries every Prometheus through one HTTP session, closed on shutdown.

`Runtime.prometheus_client(url)` hands out one client per URL (each with its own credentials,
docs/security.md), all sharing the runtime's single aiohttp session instead of opening one per
query; `close_http` (kopf cleanup) closes it, and a later query opens a fresh one.
"""

from __future__ import annotations

import asyncio

from edgemodel_operator.handlers import Runtime
from edgemodel_operator.settings import Settings


def test_all_prometheus_clients_share_one_session_until_cleanup() -> None:
    async def scenario() -> None:
        runtime = Runtime(Settings(prometheus_url="http://127.0.0.1:9/"))
        own = runtime.prometheus_client("http://127.0.0.1:9")
        other = runtime.prometheus_client("http://127.0.0.1:10")
        assert own is runtime.prometheus_client("http://127.0.0.1:9")
        session = own._session
        assert session is not None and session is other._session and not session.closed

        await runtime.close_http()
        assert session.closed
        fresh = runtime.prometheus_client("http://127.0.0.1:9")._session
        assert fresh is not None and fresh is not session and not fresh.closed
        await runtime.close_http()

    asyncio.run(scenario())
