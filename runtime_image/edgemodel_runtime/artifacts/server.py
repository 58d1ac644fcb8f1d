"""Owns the artifact server's HTTP API (aiohttp) over an `ArtifactStore`.

    GET  /healthz                      200 {"status": "ok"}
    PUT  /v1/artifacts/{sha256}        body = blob; 201 stored, 200 already there,
                                       400 bad name or digest mismatch, 413 too large,
                                       507 over the store's quota
    GET  /v1/artifacts/{sha256}        the blob (also HEAD), Content-Length + X-Content-Sha256
    PUT  /v1/records/{namespace}/{uid}/{digest}/{variant}
                                       {"artifactSha256": ..., "report": {...}, ...}; 201 new,
                                       200 the same record already there, 409 a different one
                                       there (write-once) or artifact absent, 400 bad JSON/name
    GET  /v1/records/{namespace}/{uid}/{digest}/{variant}   the record, or 404

Writes (PUT) need `Authorization: Bearer <token>` (see `auth`): none or an unknown token is 401,
a token whose identity may not write that EdgeModel's records is 403, an authenticator that
cannot reach the API server is 503. Reads stay anonymous: readers verify the digest.
Errors are JSON `{"error": "<one line>"}`: handlers raise domain errors and one middleware
(`edgemodel_runtime.http_errors`, shared with the serve runtime) maps them to a status, once
(`failure_of`). Blob bodies are streamed to disk while hashed (never
held in memory); disk writes and hashing run in a worker thread so one large upload does not
stall downloads on the event loop. With a Kubernetes API, a collector deletes blobs and records
no EdgeModel references any more (`store.plan_collection`) every `gc_interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from edgemodel_runtime.artifacts.auth import (
    Authenticator,
    AuthError,
    Identity,
    KubeAPI,
    bearer,
)
from edgemodel_runtime.artifacts.store import (
    MAX_RECORD_BYTES,
    ArtifactStore,
    BadRecord,
    Conflict,
    DigestMismatch,
    InvalidName,
    MissingArtifact,
    QuotaExceeded,
    RecordKey,
    TooLarge,
    Upload,
    parse_record,
    plan_collection,
    references_from,
    validate_sha256,
)
from edgemodel_runtime.http_errors import HttpFailure, error_middleware

log = logging.getLogger(__name__)

SHA256_HEADER = "X-Content-Sha256"
_BLOCK = 1 << 20  # buffer this much before each thread hop; per-chunk hops would dominate
STORE_KEY: web.AppKey[ArtifactStore] = web.AppKey("store", ArtifactStore)
AUTH_KEY: web.AppKey[Authenticator | None] = web.AppKey("auth")
EDGEMODELS_PATH = "/apis/edgemodel.dev/v1alpha1/edgemodels"


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edgemodel-artifacts"'}


class Unauthorized(Exception):
    """No bearer token, or one the authenticator does not accept: 401 with a challenge."""


class Forbidden(Exception):
    """An authenticated writer that may not write this record: 403."""


class NotFound(Exception):
    """No such blob or record: 404."""


class ClientGone(Exception):
    """The client went away before the whole body arrived."""


class StorageFailed(Exception):
    """The disk refused the write (full, read-only): the server's problem, said plainly."""


# Domain error -> status, in the order they are matched (docs/architecture.md, "Artifact store").
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidName, 400),
    (DigestMismatch, 400),
    (BadRecord, 400),
    (ClientGone, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (MissingArtifact, 409),
    (Conflict, 409),
    (TooLarge, 413),
    (AuthError, 503),
    (QuotaExceeded, 507),
    (StorageFailed, 507),
)


def failure_of(exc: Exception) -> HttpFailure | None:
    """How a handler's exception reads on the wire; None for anything else (a real bug)."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return HttpFailure(413, f"record is larger than the limit of {MAX_RECORD_BYTES} bytes")
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            message = str(exc)
            if isinstance(exc, AuthError):
                message = f"cannot check the token now: {exc}"
            return HttpFailure(status, message, CHALLENGE if status == 401 else {})
    return None


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
    identity = await _authorize(request)
    sha256 = validate_sha256(request.match_info["sha256"])
    announced = request.content_length
    if announced is not None and announced > store.max_bytes:
        raise TooLarge(f"{announced} bytes is larger than the limit of {store.max_bytes} bytes")
    if announced is not None and not store.has(sha256):
        store.check_room(announced)
    upload = await asyncio.to_thread(store.begin)
    try:
        await _receive(request, upload)
        created = await asyncio.to_thread(store.commit, upload, sha256)
    except (DigestMismatch, QuotaExceeded) as exc:
        log.warning("upload refused sha256=%s reason=%s", sha256, type(exc).__name__)
        raise
    except ConnectionError:
        # The client went away mid-body (aiohttp raises ConnectionResetError): nobody to answer.
        log.warning("upload aborted by the client sha256=%s", sha256)
        raise ClientGone("connection lost before the whole body arrived") from None
    except OSError as exc:
        log.error("upload failed sha256=%s error=%s", sha256, exc)
        raise StorageFailed(f"cannot store the artifact: {exc.strerror or exc}") from None
    finally:
        # Covers a client that disconnects mid-body (the read raises): no temp file survives.
        await asyncio.to_thread(upload.discard)
    log.info(
        "artifact stored sha256=%s bytes=%d created=%s subject=%s",
        sha256,
        upload.size,
        created,
        identity.subject,
    )
    return web.json_response(
        {"sha256": sha256, "sizeBytes": upload.size, "created": created},
        status=201 if created else 200,
    )


async def get_artifact(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE_KEY]
    sha256 = validate_sha256(request.match_info["sha256"])
    path = store.blob_path(sha256)
    if not path.is_file():
        raise NotFound(f"artifact {sha256} not found")
    # FileResponse streams with sendfile, sets Content-Length and answers HEAD and Range.
    return web.FileResponse(
        path, headers={SHA256_HEADER: sha256, "Content-Type": "application/octet-stream"}
    )


async def _authorize(request: web.Request) -> Identity:
    """The writer's Identity; raises Unauthorized (401) or AuthError (503) instead."""
    authenticator = request.app[AUTH_KEY]
    token = bearer(request.headers.get("Authorization"))
    if authenticator is None:
        return Identity("anonymous", ("*", "*"))  # --insecure-allow-anonymous-writes
    if token is None:
        raise Unauthorized("writes need 'Authorization: Bearer <token>'")
    try:
        identity = await authenticator.authenticate(token)
    except AuthError as exc:
        log.error("cannot authenticate a writer: %s", exc)
        raise
    if identity is None:
        log.warning("write refused: token not accepted path=%s", request.path)
        raise Unauthorized("the bearer token is not accepted for writing")
    return identity


def _record_key(request: web.Request) -> RecordKey:
    info = request.match_info
    return RecordKey.parse(info["namespace"], info["uid"], info["digest"], info["variant"])


async def put_record(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    identity = await _authorize(request)
    key = _record_key(request)
    if not identity.may_write_record(key.namespace, key.uid):
        log.warning("record write refused subject=%s key=%s", identity.subject, key.path)
        raise Forbidden(
            f"{identity.subject} may not write records of EdgeModel {key.namespace}/{key.uid}"
        )
    body = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    record = parse_record(body)
    created = await asyncio.to_thread(store.put_record, key, record)
    log.info(
        "record stored key=%s sha256=%s created=%s subject=%s",
        key.path,
        record["artifactSha256"],
        created,
        identity.subject,
    )
    return web.json_response(record, status=201 if created else 200)


async def get_record(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    key = _record_key(request)
    record = await asyncio.to_thread(store.get_record, key)
    if record is None:
        raise NotFound(f"record {key.path} not found")
    return web.json_response(record)


def make_app(store: ArtifactStore, authenticator: Authenticator | None) -> web.Application:
    """The application over an opened store (see ArtifactStore.open).

    `authenticator` None accepts anonymous writes: only for `--insecure-allow-anonymous-writes`.
    """
    app = web.Application(
        client_max_size=MAX_RECORD_BYTES, middlewares=[error_middleware(failure_of)]
    )
    app[STORE_KEY] = store
    app[AUTH_KEY] = authenticator
    app.router.add_get("/healthz", healthz)
    app.router.add_put("/v1/artifacts/{sha256}", put_artifact)
    app.router.add_get("/v1/artifacts/{sha256}", get_artifact)  # HEAD comes with GET
    record_route = "/v1/records/{namespace}/{uid}/{digest}/{variant}"
    app.router.add_put(record_route, put_record)
    app.router.add_get(record_route, get_record)
    return app


def collect_once(store: ArtifactStore, api: KubeAPI, grace_s: float) -> int:
    """One collection pass: list every EdgeModel, delete what none references; bytes freed."""
    listing = api.call("GET", EDGEMODELS_PATH)
    items = listing.get("items")
    if not isinstance(items, list):
        raise AuthError(f"GET {EDGEMODELS_PATH}: no item list (is the CRD installed?)")
    refs = references_from(items)
    blobs, records = store.inventory()
    doomed_blobs, doomed_records = plan_collection(
        blobs, records, refs, now=time.time(), grace_s=grace_s
    )
    freed = store.delete(doomed_blobs, doomed_records)
    if doomed_blobs or doomed_records:
        log.info(
            "collected blobs=%d records=%d bytes=%d",
            len(doomed_blobs),
            len(doomed_records),
            freed,
        )
    return freed


async def _collect_forever(store: ArtifactStore, api: KubeAPI, options: ServeOptions) -> None:
    while True:
        await asyncio.sleep(options.gc_interval_s)
        try:
            await asyncio.to_thread(collect_once, store, api, options.gc_grace_s)
        except (AuthError, OSError) as exc:  # keep everything when the references are unknown
            log.error("collection skipped: %s", exc)


@dataclass(frozen=True)
class ServeOptions:
    """How `serve` runs: limits, who may write, and collection."""

    max_bytes: int
    quota_bytes: int = 0
    authenticator: Authenticator | None = None
    kube: KubeAPI | None = None
    gc_interval_s: float = 0.0  # 0: no collection
    gc_grace_s: float = 3600.0


async def serve(root: Path, host: str, port: int, options: ServeOptions) -> None:
    """Open the store, listen, announce the bound address on stderr, run until cancelled."""
    store = ArtifactStore(root, max_bytes=options.max_bytes, quota_bytes=options.quota_bytes)
    removed = store.open()
    if removed:
        log.warning("removed leftovers of interrupted uploads count=%d", len(removed))
    runner = web.AppRunner(make_app(store, options.authenticator), access_log=None)
    await runner.setup()
    collector = None
    if options.kube is not None and options.gc_interval_s > 0:
        collector = asyncio.create_task(_collect_forever(store, options.kube, options))
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = _bound_port(runner) or port
        log.info(
            "artifact server listening host=%s port=%d root=%s used=%d quota=%d",
            host,
            bound,
            root,
            store.used,
            options.quota_bytes,
        )
        await asyncio.Event().wait()
    finally:
        if collector is not None:
            collector.cancel()
        await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int | None:
    """The real port when `--port 0` asked the kernel to choose (tests rely on this)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
