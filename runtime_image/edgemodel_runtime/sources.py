"""Owns fetching a model (or any artifact) from a URI into a local file, sha256-verified.

Accepted sources: a plain filesystem path, ``file://``, ``http://`` and ``https://``. Remote
bodies are streamed (never held in memory), the size limit is enforced while streaming, and the
bytes land in a temp file next to ``dest`` that is renamed into place only after the digest
matches, so a reader of ``dest`` never sees a partial or unverified file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind

_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


# The largest model or data file fetched unless the caller says otherwise.
DEFAULT_MAX_BYTES = 4 << 30


class SourceError(EdgeModelRuntimeError, ValueError):
    """A source could not be fetched or verified; the message is one line naming the URI."""

    failure = FailureKind.INVALID_INPUT


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_sha256(value: str) -> str:
    """Lower-case a hex digest and reject anything that is not 64 hex characters."""
    digest = value.strip().lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise SourceError(f"invalid sha256 {value!r}: expected 64 hex characters")
    return digest


def local_path(uri: str) -> Path | None:
    """The filesystem path a URI names, or None when it is remote (http/https)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise SourceError(f"{uri}: file:// URIs must not name a host")
        return Path(urllib.request.url2pathname(parsed.path))
    # A single letter "scheme" is a Windows drive; anything else unknown is refused rather than
    # silently treated as a relative path.
    if parsed.scheme and len(parsed.scheme) > 1:
        raise SourceError(
            f"{uri}: unsupported scheme {parsed.scheme!r} (use a path, file://, http:// or https://)"
        )
    return Path(uri)


def _copy_limited(src: BinaryIO, dst: BinaryIO, uri: str, max_bytes: int) -> str:
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise SourceError(f"{uri}: larger than the limit of {max_bytes} bytes")
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest()


def _open_source(uri: str, timeout_s: float) -> tuple[BinaryIO, int | None]:
    """Open a source for streaming; returns the stream and its announced length if known."""
    path = local_path(uri)
    if path is not None:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise SourceError(f"{uri}: no such file") from None
        except IsADirectoryError:
            raise SourceError(f"{uri}: is a directory, not a file") from None
        except OSError as exc:
            raise SourceError(f"{uri}: cannot read ({exc.strerror or exc})") from None
        return handle, os.fstat(handle.fileno()).st_size
    request = urllib.request.Request(uri, headers={"User-Agent": "edgemodel"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{uri}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SourceError(f"{uri}: cannot connect ({exc.reason})") from None
    except (TimeoutError, OSError) as exc:
        raise SourceError(f"{uri}: fetch failed ({exc})") from None
    length = response.headers.get("Content-Length")
    announced = int(length) if length and length.isdigit() else None
    return response, announced


def display_uri(uri: str) -> str:
    """The URI without credentials or query string (pre-signed URLs carry tokens there)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return uri
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    shown = urllib.parse.urlunparse((parsed.scheme, host, parsed.path, "", "", ""))
    return shown + ("?..." if parsed.query else "")


def fetch_to_file(
    uri: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = 60.0,
) -> str:
    """Copy ``uri`` to ``dest`` atomically and return its sha256 hex digest.

    Raises SourceError (one line naming the URI) when the source is missing, unreachable, over
    ``max_bytes``, or does not match ``expected_sha256`` (the message names both digests).
    """
    try:
        return _fetch(uri, Path(dest), expected_sha256, max_bytes, timeout_s)
    except SourceError as exc:
        shown = display_uri(uri)
        if shown == uri:
            raise
        raise SourceError(str(exc).replace(uri, shown)) from None


def _fetch(
    uri: str, dest: Path, expected_sha256: str | None, max_bytes: int, timeout_s: float
) -> str:
    expected = normalize_sha256(expected_sha256) if expected_sha256 is not None else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    stream, announced = _open_source(uri, timeout_s)
    with contextlib.closing(stream):
        if announced is not None and announced > max_bytes:
            raise SourceError(
                f"{uri}: {announced} bytes is larger than the limit of {max_bytes} bytes"
            )
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    digest = _copy_limited(stream, out, uri, max_bytes)
                except (TimeoutError, OSError) as exc:
                    raise SourceError(f"{uri}: read failed ({exc})") from None
                if announced is not None and local_path(uri) is None and out.tell() != announced:
                    raise SourceError(
                        f"{uri}: truncated download ({out.tell()} of {announced} bytes)"
                    )
                out.flush()
                os.fsync(out.fileno())
            if expected is not None and digest != expected:
                raise SourceError(f"{uri}: sha256 mismatch: expected {expected}, got {digest}")
            # mkstemp creates 0600; artifacts are read by other users (the serving process).
            tmp.chmod(0o644)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    return digest


def copy_verified(src: Path, dest: Path) -> None:
    """Copy a local file atomically (temp file + rename); used for already-verified files."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp_name)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
