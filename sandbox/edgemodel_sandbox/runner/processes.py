"""Owns the operating-system side of containers: their processes, logs and termination files.

A container run is one process in its own session (so its whole process group can be
signalled), with the parent-death signal set (so nothing outlives the runner) and, for pods
on the pod network, moved into the pod network namespace between fork and exec. Its stdout
and stderr go to one log file per run. `Containers` holds one pod's live processes;
`ProcessTable` is the runner-wide set of process groups its shutdown stops. Nothing here
reads or writes the API or a container record: the supervisor turns `Exit`s into records
(docs/architecture.md, "The pod runner").
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgemodel_sandbox.errors import EdgeModelSandboxError
from edgemodel_sandbox.runner import network

log = logging.getLogger("edgemodel.runner")

TERMINATION_MESSAGE_MAX = 4096
LOG_TAIL_BYTES = 2048
LOG_TAIL_LINES = 80
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Runs in the child between fork and exec: if the runner dies, even by SIGKILL, so does
    the container, so no process outlives the sandbox."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def preexec(netns: str | None) -> Callable[[], None]:
    """Between fork and exec: die with the runner, and join the pod network namespace."""

    def prepare() -> None:
        die_with_parent()
        if netns is not None:
            network.enter(netns)

    return prepare


def exit_code_of(returncode: int) -> int:
    """The exit code the kubelet reports: a death by signal N is 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


def termination_message(file: Path, log_file: Path, exit_code: int, fallback_to_logs: bool) -> str:
    """The container's termination message, as the kubelet reads it."""
    try:
        with file.open("rb") as handle:
            message = handle.read(TERMINATION_MESSAGE_MAX).decode(errors="replace")
    except OSError:
        message = ""
    if message or not fallback_to_logs or exit_code == 0:
        return message
    try:
        with log_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(tail.splitlines()[-LOG_TAIL_LINES:])


def signal_group(pgid: int, signum: int) -> None:
    """Signal a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class ProcessTable:
    """Every container process group the runner started, so its exit can stop them all."""

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._lock = threading.Lock()

    def register(self, pid: int) -> None:
        with self._lock:
            self._groups.add(pid)

    def unregister(self, pid: int) -> None:
        with self._lock:
            self._groups.discard(pid)

    def groups(self) -> list[int]:
        with self._lock:
            return sorted(self._groups)

    def stop_all(self, grace: float) -> None:
        """SIGTERM every container's process group, then SIGKILL what is left after `grace`."""
        groups = self.groups()
        for pgid in groups:
            signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(group_alive(g) for g in groups):
            time.sleep(0.1)
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)


@dataclass(frozen=True)
class Launch:
    """One run of a container: its command line and the files it writes."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    log_file: Path
    termination_file: Path
    fallback_to_logs: bool = False
    netns: str | None = None  # the pod network namespace; None: the host's


@dataclass(frozen=True)
class Exit:
    """A container run that ended: its exit code and termination message."""

    name: str
    pid: int
    exit_code: int
    message: str


class SpawnError(EdgeModelSandboxError):
    """The container's process could not be started (no such binary, bad folder...)."""


class Containers:
    """The live processes of one pod's containers.

    `start` spawns a run and a thread that waits for its exit, unregisters it and calls
    `on_exit` (the pod's wake-up); `reap` collects the runs that ended. The table is guarded
    by its own lock; the waiter threads touch only the runner-wide `ProcessTable`.
    """

    def __init__(self, table: ProcessTable, on_exit: Callable[[], None]) -> None:
        self._table = table
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._procs: dict[str, tuple[subprocess.Popen[bytes], Launch]] = {}

    def running(self) -> list[str]:
        """Names of the containers with a process not yet reaped, in start order."""
        with self._lock:
            return list(self._procs)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._procs)

    @staticmethod
    def prepare(launch: Launch) -> None:
        """The run's folders, and an empty termination file (the message of this run only)."""
        launch.log_file.parent.mkdir(parents=True, exist_ok=True)
        launch.termination_file.parent.mkdir(parents=True, exist_ok=True)
        launch.termination_file.write_bytes(b"")
        Path(launch.cwd).mkdir(parents=True, exist_ok=True)

    def start(self, launch: Launch) -> int:
        """Spawn the run (its folders made by `prepare`); its pid. SpawnError when exec fails."""
        handle: IO[bytes] = launch.log_file.open("ab")
        try:
            process = subprocess.Popen(
                list(launch.argv),
                env=dict(launch.env),
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec(launch.netns),  # noqa: PLW1509 - two syscalls, no locks taken
            )
        except OSError as exc:
            raise SpawnError(str(exc)) from exc
        finally:
            handle.close()
        self._table.register(process.pid)
        with self._lock:
            self._procs[launch.name] = (process, launch)
        threading.Thread(
            target=self._await_exit, args=(process,), name=f"wait {launch.name}", daemon=True
        ).start()
        return process.pid

    def _await_exit(self, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self._table.unregister(process.pid)
        self._on_exit()

    def reap(self) -> list[Exit]:
        """The runs that ended since the last call; what they left in their group is killed."""
        with self._lock:
            ended = [(n, p, la) for n, (p, la) in self._procs.items() if p.poll() is not None]
            for name, _, _ in ended:
                del self._procs[name]
        exits: list[Exit] = []
        for name, process, launch in ended:
            # The kubelet tears the whole container down when its main process exits.
            signal_group(process.pid, signal.SIGKILL)
            code = exit_code_of(process.returncode)
            message = termination_message(
                launch.termination_file, launch.log_file, code, launch.fallback_to_logs
            )
            exits.append(Exit(name=name, pid=process.pid, exit_code=code, message=message))
        return exits

    def stop(self, name: str, grace: float) -> None:
        """SIGTERM one container's group, SIGKILL after `grace`; `reap` then reports it."""
        with self._lock:
            entry = self._procs.get(name)
        if entry is None:
            return
        process = entry[0]
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
        # Children the container left in its session go with it.
        signal_group(process.pid, signal.SIGKILL)

    def kill_all(self, grace: float) -> None:
        """SIGTERM every container, SIGKILL each after `grace`; `reap` then reports them."""
        with self._lock:
            processes = [p for p, _ in self._procs.values()]
        for process in processes:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
