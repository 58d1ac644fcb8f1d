"""Owns the content-addressed artifact store under `--output DIR`.

Layout: `DIR/<key>/report.json` always, plus `DIR/<key>/model.onnx` only when the gate passed.
A run builds everything in `DIR/.tmp-<key prefix>-<host>-<pid>-<random>/` and publishes it with
one os.rename, so `DIR/<key>` either does not exist or is complete: a killed run leaves only a
temp dir, which later runs delete once its owner process is gone (or, for another host, once
it is a day old). Readers must ignore names starting with a dot.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgemodel_runtime.sources import sha256_file

MODEL_FILE = "model.onnx"
REPORT_FILE = "report.json"
TMP_PREFIX = ".tmp-"
FOREIGN_STALE_S = 24 * 3600


def _host() -> str:
    return socket.gethostname().replace("-", "_")[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class ArtifactStore:
    """`DIR/<key>` directories, published atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The stored report for `key`, or None when absent or damaged (then it is removed)."""
        directory = self.path(key)
        report_path = directory / REPORT_FILE
        if not report_path.is_file():
            return None
        try:
            report: dict[str, Any] = json.loads(report_path.read_text())
            artifact = report.get("artifact") or {}
            model = directory / MODEL_FILE
            if report.get("result") == "passed" and sha256_file(model) != artifact.get("sha256"):
                raise ValueError("artifact digest mismatch")
        except (OSError, ValueError):
            # Damaged by something outside this tool: drop it so this run rebuilds it.
            shutil.rmtree(directory, ignore_errors=True)
            return None
        return report

    def clean_stale(self) -> list[Path]:
        """Remove temp dirs whose run is gone; returns what was removed."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for entry in self.root.iterdir():
            if not entry.name.startswith(TMP_PREFIX) or not entry.is_dir():
                continue
            parts = entry.name[len(TMP_PREFIX) :].split("-")
            stale = False
            if len(parts) >= 3 and parts[1] == _host() and parts[2].isdigit():
                stale = int(parts[2]) != os.getpid() and not _alive(int(parts[2]))
            else:
                with contextlib.suppress(OSError):
                    stale = now - entry.stat().st_mtime > FOREIGN_STALE_S
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    @contextlib.contextmanager
    def staging(self, label: str) -> Iterator[Path]:
        """A private temp dir under DIR, removed on exit unless it was published."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(
                prefix=f"{TMP_PREFIX}{label[:16]}-{_host()}-{os.getpid()}-", dir=self.root
            )
        )
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, staged: Path, key: str) -> Path:
        """Rename a finished staging dir to DIR/<key> (a concurrent identical run may win)."""
        target = self.path(key)
        for leftover in staged.iterdir():
            if leftover.name not in (MODEL_FILE, REPORT_FILE):
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        os.chmod(staged, 0o755)  # mkdtemp makes it 0700; servers read artifacts as another user
        try:
            os.rename(staged, target)
        except OSError:
            if not (target / REPORT_FILE).is_file():
                raise
            # Same key, same content: the other run's copy is as good as ours.
        return target
