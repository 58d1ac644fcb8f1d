"""`--log-format json` on the runtime's long-running commands: every line they log is one JSON
object with level, logger and message (the formatter itself: tests/unit/test_logs.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.artifacts.support import ArtifactServer


def _entries(stderr: str) -> list[dict[str, object]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    entries = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys()
    return entries


def test_serve_logs_one_json_object_a_line(tmp_path: Path) -> None:
    # A model that is not there: the server starts, logs why it cannot load it, and exits 2.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "edgemodel_cli.main", "serve", str(tmp_path / "none.onnx")),
            *("--name", "m", "--host", "127.0.0.1", "--log-format", "json"),
            *("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    entries = _entries(result.stderr)
    failed = [e for e in entries if e["level"] == "ERROR"]
    assert failed and failed[0]["logger"] == "edgemodel_runtime.serve.server"
    assert "cannot load model" in str(failed[0]["message"])


def test_the_artifact_server_logs_one_json_object_a_line(tmp_path: Path) -> None:
    server = ArtifactServer(
        tmp_path / "store", writers=["--insecure-allow-anonymous-writes", "--log-format", "json"]
    ).start()
    assert server.stop() == 0
    entries = _entries("".join(server.log))
    assert any(
        e["level"] == "WARNING" and e["message"] == "anonymous writes are allowed (insecure)"
        for e in entries
    )
    assert any(str(e["message"]).startswith("artifact server listening") for e in entries)
