"""The pod runner's termination messages, read as the kubelet reads them, and its probes
against real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.runner import plan
from edgemodel_sandbox.runner.probes import run_probe
from edgemodel_sandbox.runner.processes import termination_message
from edgemodel_sandbox.runner.records import parse_time


def test_file_message_wins_and_is_capped(tmp_path: Path) -> None:
    file, log = tmp_path / "term", tmp_path / "log"
    file.write_text("x" * 5000)
    log.write_text("log line\n")
    assert termination_message(file, log, 1, fallback_to_logs=True) == "x" * 4096


@pytest.mark.parametrize(
    ("code", "fallback", "expected"),
    [(1, True, "tail"), (0, True, ""), (1, False, "")],
)
def test_fallback_to_logs_only_on_error(
    tmp_path: Path, code: int, fallback: bool, expected: str
) -> None:
    file, log = tmp_path / "term", tmp_path / "log"
    file.write_text("")
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    message = termination_message(file, log, code, fallback)
    if expected == "tail":
        lines = message.splitlines()
        assert len(lines) <= 80 and lines[-1] == "line 199"
        assert len(message.encode()) <= 2048
    else:
        assert message == ""


def test_missing_files_give_no_message(tmp_path: Path) -> None:
    assert termination_message(tmp_path / "a", tmp_path / "b", 1, True) == ""


def test_parse_time_round_trips() -> None:
    assert parse_time("2026-11-25T12:00:00Z") == 1795608000.0
    assert parse_time(None) is None and parse_time("yesterday") is None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_http_and_tcp_probes(server: int, tmp_path: Path) -> None:
    def http(path: str) -> plan.Probe:
        return plan.Probe(kind="http", host="127.0.0.1", port=server, path=path)

    assert run_probe(http("/ok"), {}, str(tmp_path))
    assert not run_probe(http("/not-ready"), {}, str(tmp_path))
    assert run_probe(plan.Probe(kind="tcp", host="127.0.0.1", port=server), {}, str(tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert not run_probe(plan.Probe(kind="tcp", host="127.0.0.1", port=closed), {}, str(tmp_path))


def test_exec_probe(tmp_path: Path) -> None:
    (tmp_path / "healthy").write_text("")
    ok = plan.Probe(kind="exec", command=("test", "-e", "healthy"))
    bad = plan.Probe(kind="exec", command=("test", "-e", "missing"))
    assert run_probe(ok, {"PATH": "/usr/bin:/bin"}, str(tmp_path))
    assert not run_probe(bad, {"PATH": "/usr/bin:/bin"}, str(tmp_path))
    assert not run_probe(plan.Probe(kind="exec", command=("/no/such",)), {}, str(tmp_path))
