"""Owns talking to the artifact server from a Job or an init container: calls and retries.

Synchronous (urllib): the callers are one-shot CLI processes. A failure is either `Transient`
(cannot connect, reset, timed out, 5xx, 408/429: the server may be starting or restarting, so
it is retried with capped exponential backoff until a deadline) or `Rejected` (any other 4xx:
retrying cannot help). Downloads go through `edgemodel_runtime.sources.fetch_to_file`.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from edgemodel_runtime.artifacts.store import RecordKey
from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind

T = TypeVar("T")

SHA256_HEADER = "X-Content-Sha256"
_TRANSIENT_STATUS = frozenset({408, 429})


class ClientError(EdgeModelRuntimeError):
    """Base of the client's failures; messages are one line."""

    failure = FailureKind.UNAVAILABLE


class Transient(ClientError):
    """Worth retrying: the server is unreachable or temporarily failing."""


class Rejected(ClientError):
    """The server refused the request (4xx); retrying cannot help."""

    failure = FailureKind.INVALID_INPUT

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(ClientError):
    """Transient failures lasted past the deadline."""


def normalize_server(url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash; ValueError otherwise."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"invalid server URL {url!r}: expected http://host:port or https://...")
    if parsed.query or parsed.fragment:
        raise ValueError(f"invalid server URL {url!r}: no query or fragment allowed")
    return url.rstrip("/")


def artifact_url(server: str, sha256: str) -> str:
    return f"{server}/v1/artifacts/{sha256}"


def record_url(server: str, key: RecordKey) -> str:
    return f"{server}/v1/records/{_record_path(key)}"


def _record_path(key: RecordKey) -> str:
    return f"{key.namespace}/{key.uid}/{key.digest}/{key.variant}"


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def backoff_delays(initial: float = 0.25, factor: float = 2.0, cap: float = 5.0) -> Iterator[float]:
    """0.25, 0.5, 1, 2, 4, 5, 5, ... seconds: quick while a server starts, gentle after."""
    delay = initial
    while True:
        yield delay
        delay = min(cap, delay * factor)


def retry(
    call: Callable[[], T],
    *,
    deadline_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[ClientError, float], None] | None = None,
) -> T:
    """Run `call` until it succeeds, retrying `Transient` failures until `deadline_s` passes.

    Raises `Unreachable` (naming the last failure) when time runs out, and anything that is not
    `Transient` at once. The call always runs at least once.
    """
    end = clock() + deadline_s
    delays = backoff_delays()
    while True:
        try:
            return call()
        except Transient as exc:
            remaining = end - clock()
            if remaining <= 0:
                raise Unreachable(f"gave up after {deadline_s:g} s: {exc}") from None
            delay = min(next(delays), remaining)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)


def _error_message(url: str, status: int, body: bytes) -> str:
    detail = body[:500].decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(detail)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            detail = parsed["error"]
    except json.JSONDecodeError:
        pass
    return f"{url}: HTTP {status}: {' '.join(detail.split()) or 'no detail'}"


def request(
    method: str,
    url: str,
    *,
    data: bytes | Path | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP exchange; returns (status, headers, body) for 2xx, raises Transient/Rejected.

    A Path body is streamed from disk with an explicit Content-Length (never read whole).
    """
    all_headers = {"User-Agent": "edgemodel", **(headers or {})}
    handle = None
    body: Any = data
    if isinstance(data, Path):
        handle = data.open("rb")
        body = handle
        all_headers["Content-Length"] = str(data.stat().st_size)
        all_headers.setdefault("Content-Type", "application/octet-stream")
    req = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            payload = b"" if method == "HEAD" else response.read()
            return response.status, dict(response.headers.items()), payload
    except urllib.error.HTTPError as exc:
        payload = exc.read() if method != "HEAD" else b""
        message = _error_message(url, exc.code, payload)
        if exc.code >= 500 or exc.code in _TRANSIENT_STATUS:
            raise Transient(message) from None
        raise Rejected(exc.code, message) from None
    except urllib.error.URLError as exc:
        raise Transient(f"{url}: cannot connect ({exc.reason})") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        raise Transient(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        if handle is not None:
            handle.close()


def has_artifact(server: str, sha256: str, *, timeout_s: float = 30.0) -> bool:
    """True when the server already holds the blob (a HEAD; saves re-sending a large body)."""
    try:
        _status, headers, _ = request("HEAD", artifact_url(server, sha256), timeout_s=timeout_s)
    except Rejected as exc:
        if exc.status == 404:
            return False
        raise
    return headers.get(SHA256_HEADER, sha256) == sha256


def upload_artifact(
    server: str, sha256: str, path: Path, *, token: str | None = None, timeout_s: float = 300.0
) -> bool:
    """PUT a blob; True if the server created it, False if it was already there."""
    status, _, _ = request(
        "PUT",
        artifact_url(server, sha256),
        data=path,
        headers=auth_headers(token),
        timeout_s=timeout_s,
    )
    return status == 201


def put_record(
    server: str,
    key: RecordKey,
    record: dict[str, Any],
    *,
    token: str | None = None,
    timeout_s: float = 30.0,
) -> bool:
    """PUT a revision record; True if new, False if the same one was there (409: another)."""
    body = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
    status, _, _ = request(
        "PUT",
        record_url(server, key),
        data=body,
        headers={"Content-Type": "application/json", **auth_headers(token)},
        timeout_s=timeout_s,
    )
    return status == 201


def get_record(server: str, key: RecordKey, *, timeout_s: float = 30.0) -> dict[str, Any] | None:
    try:
        _, _, body = request("GET", record_url(server, key), timeout_s=timeout_s)
    except Rejected as exc:
        if exc.status == 404:
            return None
        raise
    record: dict[str, Any] = json.loads(body)
    return record
