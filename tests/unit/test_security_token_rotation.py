"""Attack on availability: the operator's ServiceAccount token expires under it.

A projected ServiceAccount token is bound and short-lived; the kubelet rewrites the file
before it expires. An operator that read it once stops working after an hour (every call
401). Against a real HTTP server on 127.0.0.1 that accepts only the token currently valid,
the client re-reads the token file, and on a 401 re-reads it once more and retries the
request once (never more: a revoked token fails fast, it does not loop). See
docs/security.md and kube.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edgemodel_operator.kube import Credentials, Kube, KubeError
from tests.local_http import LocalHTTPServer


class ApiServer(LocalHTTPServer):
    """A real HTTP server accepting `Bearer <valid>` only; `reject_next` 401s regardless."""

    def __init__(self, valid: str) -> None:
        super().__init__()
        self.valid = valid
        self.reject_next = 0
        self.seen: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.seen.append(auth)
        if self.reject_next > 0:
            self.reject_next -= 1
            return web.json_response({"message": "Unauthorized"}, status=401)
        if auth != f"Bearer {self.valid}":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"kind": "Namespace", "metadata": {"name": "default"}})


def _run(token_file: Path, scenario: Any) -> Any:
    async def main() -> Any:
        async with ApiServer(valid=token_file.read_text().strip()) as server:
            kube = Kube(Credentials(server=server.url, token_path=str(token_file)), attempts=3)
            try:
                return await scenario(server, kube)
            finally:
                await kube.close()

    return asyncio.run(main())


def test_rotated_token_is_used_without_a_restart(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")

    async def scenario(server: ApiServer, kube: Kube) -> list[str | None]:
        assert await kube.get("v1", "Namespace", None, "default") is not None
        # The kubelet rotates the token; the old one is no longer accepted.
        token.write_text("second\n")
        server.valid = "second"
        assert await kube.get("v1", "Namespace", None, "default") is not None
        return server.seen

    assert _run(token, scenario) == ["Bearer first", "Bearer second"]


def test_a_401_rereads_the_token_and_retries_once(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("current\n")

    async def scenario(server: ApiServer, kube: Kube) -> list[str | None]:
        server.reject_next = 1  # the token expired between the read and the request
        assert await kube.get("v1", "Namespace", None, "default") is not None
        return server.seen

    assert _run(token, scenario) == ["Bearer current", "Bearer current"]


def test_a_token_that_stays_refused_fails_after_one_retry(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("revoked\n")

    async def scenario(server: ApiServer, kube: Kube) -> list[str | None]:
        server.valid = "something-else"
        with pytest.raises(KubeError) as refused:
            await kube.get("v1", "Namespace", None, "default")
        assert refused.value.status == 401
        return server.seen

    assert _run(token, scenario) == ["Bearer revoked", "Bearer revoked"]
