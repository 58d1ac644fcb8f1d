"""Helpers for the artifact store tests: a real `edgemodel artifact-server` process, the CLI in a
subprocess, and a compression output as `edgemodel compress` leaves it.

Servers bind 127.0.0.1 with `--port 0` and announce the port they got on stderr, so parallel
test runs never race for a port. Writes need credentials: by default a server accepts the
static `WRITER_TOKEN` (any record) and `request` sends it with every PUT; `auth=False` sends none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemodel_runtime.sources import sha256_file

_LISTENING = re.compile(r"artifact server listening host=\S+ port=(\d+)")
WRITER_TOKEN = "test-writer-token-0123456789abcdef"


@dataclass
class ArtifactServer:
    """One `edgemodel artifact-server` subprocess over `root`."""

    root: Path
    max_bytes: int = 1 << 20
    writers: list[str] = field(default_factory=list)  # default: a token file with WRITER_TOKEN
    token: str | None = WRITER_TOKEN
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ArtifactServer:
        writers = self.writers
        if not writers:
            tokens = self.root.parent / f"{self.root.name}.tokens"
            tokens.write_text(f"{WRITER_TOKEN}\n")
            writers = ["--write-token-file", str(tokens)]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgemodel_cli.main",
                "artifact-server",
                "--root",
                str(self.root),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--max-bytes",
                str(self.max_bytes),
                *writers,
            ],
            env={**os.environ, **self.env},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise AssertionError(f"artifact server exited: {''.join(self.log)}")
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                return self
        raise AssertionError("artifact server did not announce its port in 20 s")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=20)
        if self.process.stderr is not None:
            self.log.append(self.process.stderr.read())
            self.process.stderr.close()
        return code

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        all_headers = dict(headers or {})
        if auth and method == "PUT" and self.token:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()


@dataclass(frozen=True)
class Digits:
    """The digits classifier and its digest."""

    path: Path
    sha256: str


def compress_output(directory: Path, model: Path, *, key: str = "a" * 64) -> Path:
    """What `edgemodel compress --output DIR` leaves for a passed run (report trimmed to the
    fields publish reads, in the shape edgemodel_runtime.compress.pipeline writes)."""
    artifact = directory / key
    artifact.mkdir(parents=True)
    shutil.copyfile(model, artifact / "model.onnx")
    size = model.stat().st_size
    report: dict[str, Any] = {
        "schema": "edgemodel.dev/compress-report/v1",
        "result": "passed",
        "key": key,
        "cache_hit": False,
        "input": {"source": "file:///in.onnx", "sha256": "b" * 64, "bytes": size * 3},
        "settings": {"mode": "dynamic-int8", "target": "arm64", "prune_sparsity": 0.0},
        "artifact": {
            "file": "model.onnx",
            "sha256": sha256_file(model),
            "bytes": size,
            "zstd_bytes": size // 2,
            "kept": True,
        },
        "sizes": {
            "input_bytes": size * 3,
            "artifact_bytes": size,
            "ratio": 0.3333,
            "wire_bytes": size // 2,
            "wire_ratio": 0.1667,
            "wire_codec": "zstd-10",
        },
        "accuracy": {
            "output": "probabilities",
            "rows": 540,
            "agreement": 0.9963,
            "accuracy_original": 97.78,
            "accuracy_compressed": 97.59,
            "accuracy_drop": 0.19,
            "cosine": 0.9999,
            "max_abs_error": 0.01,
            "relative_error": 0.002,
        },
        "gate": {"evaluated": True, "passed": True, "reasons": []},
    }
    (artifact / "report.json").write_text(json.dumps(report, indent=2))
    return artifact


def edgemodel(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "edgemodel_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
