"""Owns the node-local artifact cache and laying a cached artifact out for a model server.

Cache layout (a hostPath shared by every runtime pod on the node):

    <cache>/<sha256>/model.onnx    verified blob
    <cache>/<sha256>/.*            downloads in flight (or killed), removed once stale

An entry is trusted only after its sha256 is recomputed, so a disconnected edge site restarts
from the cache without the server, and a corrupt entry (bad disk, partial copy by hand) is
removed and fetched again. Downloads land under a private dot-name and are renamed into place
after verification, so concurrent fetchers of the same blob on one node never see a partial
file; the last rename wins, with identical bytes.

Size bound: every use (`lookup` hit, `fill`) touches the entry's directory mtime, which is the
cache's LRU clock (atime is unreliable under noatime/relatime). `evict` removes whole entries,
least recently used first, until the cache is within a byte bound; it never removes the entries
it is told to keep (the one just fetched) nor one with a download in flight. A running pod is
unaffected by eviction: its layout is a hard link (or a copy), not a path into the cache.

Layouts: plain -> `<dest>/model.onnx`; triton -> `<dest>/<name>/1/model.onnx` and
`<dest>/<name>/config.pbtxt` (a Triton model repository). Files are hard-linked from the cache
when the filesystem allows, copied otherwise, and always replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind
from edgemodel_runtime.sources import fetch_to_file, sha256_file

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
TRITON_VERSION = "1"
# Downloads rewrite their temp file continuously, so an hour without a write means its owner
# is gone (init containers of other pods do not share a PID namespace, so no PID check).
STALE_TMP_S = 3600.0
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
ENTRY_RE = re.compile(r"[0-9a-f]{64}")
DEFAULT_CACHE_MAX_BYTES = 20 << 30


class CacheError(EdgeModelRuntimeError, ValueError):
    """A permanent failure: the source holds other bytes than the digest names."""

    failure = FailureKind.CONFLICT


def validate_model_name(name: str) -> str:
    """A Triton model name that is also a safe single directory name."""
    if not MODEL_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"invalid model name {name!r}: letters, digits, '_', '.', '-' (at most 128), "
            "starting with a letter, digit or '_'"
        )
    return name


class NodeCache:
    """Verified blobs by sha256 under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, sha256: str) -> Path:
        return self.root / sha256 / MODEL_FILE

    def lookup(self, sha256: str) -> Path | None:
        """The verified cached file, or None (a corrupt entry is removed on the way)."""
        path = self.entry(sha256)
        try:
            digest = sha256_file(path)
        except FileNotFoundError:
            return None
        if digest == sha256:
            self.touch(sha256)
            return path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None

    def touch(self, sha256: str, when: float | None = None) -> None:
        """Mark the entry used now (its directory's mtime is the LRU clock)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.root / sha256, None if when is None else (when, when))

    def entries(self) -> list[tuple[float, int, str]]:
        """(last used, bytes, sha256) of every entry, least recently used first."""
        found: list[tuple[float, int, str]] = []
        if not self.root.is_dir():
            return found
        for directory in self.root.iterdir():
            if not ENTRY_RE.fullmatch(directory.name) or not directory.is_dir():
                continue
            with contextlib.suppress(FileNotFoundError):
                size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
                found.append((directory.stat().st_mtime, size, directory.name))
        return sorted(found)

    def evict(
        self, max_bytes: int, keep: frozenset[str] = frozenset(), now: float | None = None
    ) -> list[str]:
        """Remove least-recently-used entries until the cache holds at most `max_bytes`;
        returns the sha256s removed. Entries in `keep`, or with a download in flight (a fresh
        dot-file), stay even if the bound cannot be met."""
        now = time.time() if now is None else now
        entries = self.entries()
        total = sum(size for _used, size, _sha in entries)
        removed: list[str] = []
        for _used, size, sha in entries:
            if total <= max_bytes:
                break
            directory = self.root / sha
            if sha in keep or self._in_flight(directory, now):
                continue
            shutil.rmtree(directory, ignore_errors=True)
            if not directory.exists():
                total -= size
                removed.append(sha)
        return removed

    @staticmethod
    def _in_flight(directory: Path, now: float) -> bool:
        for entry in directory.glob(".*"):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime <= STALE_TMP_S:
                    return True
        return False

    def clean_stale(self, sha256: str, now: float | None = None) -> list[Path]:
        directory = self.root / sha256
        now = time.time() if now is None else now
        removed: list[Path] = []
        if not directory.is_dir():
            return removed
        for entry in directory.glob(".*"):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > STALE_TMP_S:
                    entry.unlink()
                    removed.append(entry)
        return removed

    def fill(self, sha256: str, uri: str, *, max_bytes: int, timeout_s: float) -> Path:
        """Download `uri` into the cache as `sha256`; raises SourceError or CacheError."""
        directory = self.root / sha256
        directory.mkdir(parents=True, exist_ok=True)
        self.clean_stale(sha256)
        incoming = directory / f".incoming-{uuid.uuid4().hex}"
        try:
            # No expected digest here: a mismatch must be told apart from a network failure
            # (it is permanent, not worth retrying), so the comparison is ours.
            digest = fetch_to_file(uri, incoming, max_bytes=max_bytes, timeout_s=timeout_s)
            if digest != sha256:
                raise CacheError(f"{uri}: sha256 mismatch: expected {sha256}, got {digest}")
            target = self.entry(sha256)
            os.replace(incoming, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                incoming.unlink()
        self.touch(sha256)
        return target


def place(source: Path, dest: Path) -> None:
    """Put `source` at `dest` atomically, hard-linked when possible, else copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            # Another filesystem (EXDEV), or protected_hardlinks refusing a file we do not own.
            shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(dest: Path, text: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
    try:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def layout_plain(cached: Path, dest: Path, file_name: str | None = None) -> Path:
    target = dest / (file_name or MODEL_FILE)
    place(cached, target)
    return target


def layout_triton(cached: Path, dest: Path, name: str, config_text: str) -> Path:
    """A one-model Triton repository under `dest`; returns the model's directory."""
    model_dir = dest / validate_model_name(name)
    place(cached, model_dir / TRITON_VERSION / MODEL_FILE)
    write_text(model_dir / CONFIG_FILE, config_text)
    return model_dir
