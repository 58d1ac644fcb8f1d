"""Owns the artifact server's HTTP API (aiohttp) over an `ArtifactStore`.

    GET  /healthz                      200 {"status": "ok"}
    PUT  /v1/artifacts/{sha256}        body = blob; 201 stored, 200 already there,
                                       400 bad name or digest mismatch, 413 too large
    GET  /v1/artifacts/{sha256}        the blob (also HEAD), Content-Length + X-Content-Sha256
    PUT  /v1/revisions/{revision}      {"artifactSha256": ..., "report": {...}, ...}; 201 new,
                                       200 replaced, 400 bad JSON/name, 409 artifact absent
    GET  /v1/revisions/{revision}      the record, or 404

Errors are JSON `{"error": "<one line>"}`. Blob bodies are streamed to disk while hashed (never
held in memory); disk writes and hashing run in a worker thread so one large upload does not
stall downloads on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from edgemodel_runtime.artifacts.store import (
    MAX_RECORD_BYTES,
    ArtifactStore,
    BadRecord,
    DigestMismatch,
    InvalidName,
    MissingArtifact,
    TooLarge,
    Upload,
    parse_record,
    validate_revision,
    validate_sha256,
)

log = logging.getLogger(__name__)

SHA256_HEADER = "X-Content-Sha256"
_BLOCK = 1 << 20  # buffer this much before each thread hop; per-chunk hops would dominate
STORE_KEY: web.AppKey[ArtifactStore] = web.AppKey("store", ArtifactStore)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _receive(request: web.Request, upload: Upload) -> None:
    pending: list[bytes] = []
    buffered = 0
    async for chunk in request.content.iter_chunked(_BLOCK):
        pending.append(chunk)
        buffered += len(chunk)
        # Counted before the thread hop too, so an oversized body stops at the first excess MB.
        if upload.size + buffered > upload.max_bytes:
            raise TooLarge(f"body is larger than the limit of {upload.max_bytes} bytes")
        if buffered >= _BLOCK:
            await asyncio.to_thread(upload.write, b"".join(pending))
            pending, buffered = [], 0
    if pending:
        await asyncio.to_thread(upload.write, b"".join(pending))


async def put_artifact(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    try:
        sha256 = validate_sha256(request.match_info["sha256"])
    except InvalidName as exc:
        return _error(400, str(exc))
    announced = request.content_length
    if announced is not None and announced > store.max_bytes:
        return _error(413, f"{announced} bytes is larger than the limit of {store.max_bytes} bytes")
    upload = await asyncio.to_thread(store.begin)
    try:
        await _receive(request, upload)
        created = await asyncio.to_thread(store.commit, upload, sha256)
    except TooLarge as exc:
        return _error(413, str(exc))
    except DigestMismatch as exc:
        log.warning("upload refused sha256=%s reason=digest-mismatch", sha256)
        return _error(400, str(exc))
    except ConnectionError:
        # The client went away mid-body (aiohttp raises ConnectionResetError): nobody to answer.
        log.warning("upload aborted by the client sha256=%s", sha256)
        return _error(400, "connection lost before the whole body arrived")
    except OSError as exc:
        # Disk full or read-only: the server's problem, not the client's; tell it plainly.
        log.error("upload failed sha256=%s error=%s", sha256, exc)
        return _error(507, f"cannot store the artifact: {exc.strerror or exc}")
    finally:
        # Covers a client that disconnects mid-body (the read raises): no temp file survives.
        await asyncio.to_thread(upload.discard)
    log.info("artifact stored sha256=%s bytes=%d created=%s", sha256, upload.size, created)
    return web.json_response(
        {"sha256": sha256, "sizeBytes": upload.size, "created": created},
        status=201 if created else 200,
    )


async def get_artifact(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE_KEY]
    try:
        sha256 = validate_sha256(request.match_info["sha256"])
    except InvalidName as exc:
        return _error(400, str(exc))
    path = store.blob_path(sha256)
    if not path.is_file():
        return _error(404, f"artifact {sha256} not found")
    # FileResponse streams with sendfile, sets Content-Length and answers HEAD and Range.
    return web.FileResponse(
        path, headers={SHA256_HEADER: sha256, "Content-Type": "application/octet-stream"}
    )


async def put_revision(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    try:
        revision = validate_revision(request.match_info["revision"])
    except InvalidName as exc:
        return _error(400, str(exc))
    try:
        body = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"record is larger than the limit of {MAX_RECORD_BYTES} bytes")
    try:
        record = parse_record(body)
        created = await asyncio.to_thread(store.put_record, revision, record)
    except BadRecord as exc:
        return _error(400, str(exc))
    except MissingArtifact as exc:
        return _error(409, str(exc))
    log.info(
        "revision stored revision=%s sha256=%s created=%s",
        revision,
        record["artifactSha256"],
        created,
    )
    return web.json_response(record, status=201 if created else 200)


async def get_revision(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    try:
        revision = validate_revision(request.match_info["revision"])
    except InvalidName as exc:
        return _error(400, str(exc))
    record = await asyncio.to_thread(store.get_record, revision)
    if record is None:
        return _error(404, f"revision {revision} not found")
    return web.json_response(record)


def make_app(store: ArtifactStore) -> web.Application:
    """The application over an opened store (see ArtifactStore.open)."""
    app = web.Application(client_max_size=MAX_RECORD_BYTES)
    app[STORE_KEY] = store
    app.router.add_get("/healthz", healthz)
    app.router.add_put("/v1/artifacts/{sha256}", put_artifact)
    app.router.add_get("/v1/artifacts/{sha256}", get_artifact)  # HEAD comes with GET
    app.router.add_put("/v1/revisions/{revision}", put_revision)
    app.router.add_get("/v1/revisions/{revision}", get_revision)
    return app


async def serve(root: Path, host: str, port: int, max_bytes: int) -> None:
    """Open the store, listen, announce the bound address on stderr, run until cancelled."""
    store = ArtifactStore(root, max_bytes=max_bytes)
    removed = store.open()
    if removed:
        log.warning("removed leftovers of interrupted uploads count=%d", len(removed))
    runner = web.AppRunner(make_app(store), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = _bound_port(runner) or port
        log.info("artifact server listening host=%s port=%d root=%s", host, bound, root)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int | None:
    """The real port when `--port 0` asked the kernel to choose (tests rely on this)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
