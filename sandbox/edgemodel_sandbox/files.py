"""Owns the sandbox's file helpers: user cache folders, atomic writes, file locks, digests.

Every cache the sandbox keeps (built tools, containerd's init, image bases, fixture models, the
zoo) lives under `${XDG_CACHE_HOME:-~/.cache}/edgemodel/<name>`, unless the variable that
overrides that one folder is set, so a fresh clone on the same machine reuses them. The file
digest is the runtime's (`edgemodel_runtime.sources.sha256_file`): the sandbox may import the
runtime, so it is not written again (docs/architecture.md, "One convention each").
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from edgemodel_runtime.sources import sha256_file

__all__ = ["atomic_write", "cache_dir", "locked", "sha256_file"]


def cache_dir(name: str, override: str | None = None) -> Path:
    """`$<override>` when set, else `${XDG_CACHE_HOME:-~/.cache}/edgemodel/<name>`."""
    explicit = os.environ.get(override) if override else None
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(xdg) / "edgemodel" / name


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (made, with its folder, when absent) for the block:
    one process at a time, across processes, released however the block ends."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
