"""The pod runner's container processes, on the real operating system: a run's log and
termination message, its exit code (128 + N for a signal), stopping with a grace period,
what a container leaves behind in its session, and the runner-wide table that stops them all.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from edgemodel_sandbox.runner.processes import (
    Containers,
    Exit,
    Launch,
    ProcessTable,
    SpawnError,
    exit_code_of,
)

# Ignores SIGTERM: only SIGKILL ends it.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "print('up', flush=True); time.sleep(60)"
)


def launch(tmp_path: Path, name: str, code: str, fallback: bool = False) -> Launch:
    return Launch(
        name=name,
        argv=[sys.executable, "-c", code],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=str(tmp_path / name / "cwd"),
        log_file=tmp_path / name / "logs" / "0.log",
        termination_file=tmp_path / name / "termination-log",
        fallback_to_logs=fallback,
    )


def start(containers: Containers, run: Launch) -> int:
    Containers.prepare(run)
    return containers.start(run)


def wait_exits(containers: Containers, count: int = 1, timeout: float = 30.0) -> list[Exit]:
    exits: list[Exit] = []
    deadline = time.monotonic() + timeout
    while len(exits) < count:
        assert time.monotonic() < deadline, "the processes did not exit"
        exits += containers.reap()
        time.sleep(0.02)
    return exits


def wait_for_line(file: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (file.read_text() if file.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {file}"
        time.sleep(0.02)


@pytest.fixture
def table() -> ProcessTable:
    return ProcessTable()


def test_exit_codes_are_the_kubelets() -> None:
    assert exit_code_of(0) == 0 and exit_code_of(3) == 3
    assert exit_code_of(-signal.SIGKILL) == 137 and exit_code_of(-signal.SIGTERM) == 143


def test_a_run_logs_and_leaves_its_message(tmp_path: Path, table: ProcessTable) -> None:
    exited = threading.Event()
    containers = Containers(table, exited.set)
    code = (
        "import sys; print('to stdout'); print('to stderr', file=sys.stderr);"
        "open('../termination-log', 'w').write('why it ended'); sys.exit(3)"
    )
    run = launch(tmp_path, "c", code)
    pid = start(containers, run)
    assert containers.running() == ["c"] and bool(containers)
    assert exited.wait(30), "the exit was not signalled"
    assert wait_exits(containers) == [Exit(name="c", pid=pid, exit_code=3, message="why it ended")]
    assert "to stdout" in run.log_file.read_text() and "to stderr" in run.log_file.read_text()
    assert containers.running() == [] and not containers
    assert pid not in table.groups()


def test_a_new_run_starts_with_an_empty_termination_file(
    tmp_path: Path, table: ProcessTable
) -> None:
    containers = Containers(table, lambda: None)
    run = launch(tmp_path, "c", "import sys; sys.exit(1)")
    run.termination_file.parent.mkdir(parents=True)
    run.termination_file.write_text("left by the last run")
    start(containers, run)
    assert wait_exits(containers)[0].message == ""


def test_logs_stand_in_for_the_message_on_error_when_asked(
    tmp_path: Path, table: ProcessTable
) -> None:
    containers = Containers(table, lambda: None)
    start(
        containers, launch(tmp_path, "c", "print('last words'); raise SystemExit(2)", fallback=True)
    )
    assert wait_exits(containers)[0].message == "last words"


def test_stop_gives_sigterm_then_sigkill_after_the_grace(
    tmp_path: Path, table: ProcessTable
) -> None:
    containers = Containers(table, lambda: None)
    polite = launch(tmp_path, "polite", "import time; print('up', flush=True); time.sleep(60)")
    stubborn = launch(tmp_path, "stubborn", STUBBORN)
    start(containers, polite)
    start(containers, stubborn)
    wait_for_line(polite.log_file, "up")
    wait_for_line(stubborn.log_file, "up")
    containers.stop("polite", grace=10)
    containers.stop("stubborn", grace=0.2)
    codes = {e.name: e.exit_code for e in wait_exits(containers, 2)}
    assert codes == {"polite": 143, "stubborn": 137}


def test_the_container_session_goes_with_its_main_process(
    tmp_path: Path, table: ProcessTable
) -> None:
    containers = Containers(table, lambda: None)
    code = (
        "import subprocess, sys, time;"
        "child = subprocess.Popen(['sleep', '60']);"
        "open('child', 'w').write(str(child.pid)); sys.exit(0)"
    )
    run = launch(tmp_path, "c", code)
    start(containers, run)
    wait_exits(containers)
    child = int((Path(run.cwd) / "child").read_text())
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the container's child outlived it"
        time.sleep(0.02)


def test_kill_all_ends_every_run(tmp_path: Path, table: ProcessTable) -> None:
    containers = Containers(table, lambda: None)
    runs = [launch(tmp_path, name, STUBBORN) for name in ("a", "b")]
    for run in runs:
        start(containers, run)
    for run in runs:
        wait_for_line(run.log_file, "up")
    containers.kill_all(grace=0.1)
    assert sorted((e.name, e.exit_code) for e in containers.reap()) == [("a", 137), ("b", 137)]


def test_a_missing_binary_is_a_spawn_error(tmp_path: Path, table: ProcessTable) -> None:
    containers = Containers(table, lambda: None)
    run = Launch(
        name="c",
        argv=["/no/such/binary"],
        env={},
        cwd=str(tmp_path),
        log_file=tmp_path / "0.log",
        termination_file=tmp_path / "termination-log",
    )
    with pytest.raises(SpawnError, match="/no/such/binary"):
        containers.start(run)
    assert containers.running() == [] and table.groups() == []


def test_the_table_stops_every_group_it_holds(tmp_path: Path, table: ProcessTable) -> None:
    containers = Containers(table, lambda: None)
    run = launch(tmp_path, "c", STUBBORN)
    pid = start(containers, run)
    wait_for_line(run.log_file, "up")
    assert table.groups() == [pid]
    table.stop_all(grace=0.2)
    assert wait_exits(containers)[0].exit_code == 137


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead; only its parent (init, here) has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False
