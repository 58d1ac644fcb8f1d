"""One pod's worker, coordinating its units: it runs the pod's real processes, writes the
status they lead to, stops them on a graceful deletion and confirms it, and cleans up when
the pod is gone. The API is a fake that records writes; the runtime image's `edgemodel`
entrypoint is a shim that runs the rest of its command line with /bin/sh, so the processes
are real and cheap. The same pods in a running sandbox are in tests/integration/runner/.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.runner.ipam import Allocator
from edgemodel_sandbox.runner.processes import Exit
from edgemodel_sandbox.runner.supervisor import (
    Context,
    PodWorker,
    adopt,
    begin_run,
    end_run,
    new_records,
)

RUNTIME = "ghcr.io/edgemodel/runtime:0.1.0"


class FakeKube:
    """Answers reads with 404s and records every write."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: list[dict[str, Any]] = []
        self.deletes: list[tuple[str, dict[str, Any] | None]] = []

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        return None

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return {"items": []}

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.statuses.append(body["status"])
        return body

    def delete(self, path: str, body: dict[str, Any] | None = None) -> bool:
        with self.lock:
            self.deletes.append((path, body))
        return True

    def last(self) -> dict[str, Any]:
        with self.lock:
            return self.statuses[-1] if self.statuses else {}


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def ctx(tmp_path: Path, kube: FakeKube) -> Iterator[Context]:
    shim = tmp_path / "python"
    shim.write_text('#!/bin/sh\nshift 2\nexec /bin/sh -c "$*"\n')  # python -m edgemodel_cli.main
    shim.chmod(0o755)
    context = Context(
        kube=kube,  # type: ignore[arg-type]
        ipam=Allocator(),
        state=tmp_path / "state",
        python=str(shim),
        triton=None,
        base_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    yield context
    context.shutdown.set()
    context.stop_all(0.5)


def pod(*words: str, policy: str = "Never", **meta: Any) -> dict[str, Any]:
    """A pod whose container runs `words`, joined, with /bin/sh (a container path must be a
    word of its own to be rewritten to its host path, as for a real command line)."""
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "0123456789", **meta},
        "spec": {
            "nodeName": "node-1",
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": RUNTIME, "command": ["edgemodel", *words]},
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
        "status": {},
    }


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def main_state(kube: FakeKube) -> dict[str, Any]:
    statuses = kube.last().get("containerStatuses") or [{}]
    state: dict[str, Any] = statuses[0].get("state") or {}
    return state


def test_a_run_to_its_end_is_reported(ctx: Context, kube: FakeKube) -> None:
    worker = PodWorker(ctx, pod("echo bye >", "/dev/termination-log", "; exit 3"))
    worker.start()
    wait_for(lambda: kube.last().get("phase") == "Failed", "the pod to fail")
    terminated = main_state(kube)["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert terminated["message"] == "bye\n"
    assert kube.last()["podIP"] == ctx.ipam.owned()["0123456789"]
    assert kube.statuses[0]["phase"] == "Pending"  # the first write, before anything ran
    worker.gone()
    worker.join(10)
    assert not worker.alive


def test_a_graceful_deletion_stops_the_processes_and_is_confirmed(
    ctx: Context, kube: FakeKube
) -> None:
    worker = PodWorker(ctx, pod("echo up; exec sleep 60", policy="Always"))
    worker.start()
    wait_for(lambda: "running" in main_state(kube), "the container to run")
    [pgid] = ctx.processes.groups()
    deleting = pod("exec sleep 60", policy="Always", deletionTimestamp="2026-11-30T00:00:00Z")
    deleting["metadata"]["deletionGracePeriodSeconds"] = 1
    worker.update(deleting)
    wait_for(lambda: kube.deletes, "the deletion to be confirmed")
    assert kube.deletes == [
        (
            "/api/v1/namespaces/ns/pods/p",
            {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "0123456789"},
            },
        )
    ]
    wait_for(lambda: not ctx.processes.groups(), "the process to be gone")
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    worker.gone()
    worker.join(10)


def test_a_gone_pod_gives_back_its_address_and_volumes(ctx: Context, kube: FakeKube) -> None:
    worker = PodWorker(ctx, pod("exec sleep 60", policy="Always"))
    worker.start()
    wait_for(lambda: "running" in main_state(kube), "the container to run")
    scratch = worker.pod_dir / "volumes" / "scratch"
    assert scratch.is_dir() and ctx.ipam.owned()
    worker.gone()
    worker.join(10)
    assert not worker.alive
    assert not scratch.exists() and ctx.ipam.owned() == {}
    wait_for(lambda: not ctx.processes.groups(), "the process to be gone")


def test_a_failing_liveness_probe_restarts_the_container(ctx: Context, kube: FakeKube) -> None:
    spec = pod("exec sleep 60", policy="Always")
    spec["spec"]["containers"][0]["livenessProbe"] = {
        "exec": {"command": ["false"]},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    worker = PodWorker(ctx, spec)
    worker.start()

    def restarted() -> dict[str, Any] | None:
        statuses = kube.last().get("containerStatuses") or [{}]
        found: dict[str, Any] = statuses[0]
        return found if found.get("restartCount", 0) >= 1 else None

    status = wait_for(restarted, "a restart")
    assert status["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM, within the grace
    worker.gone()
    worker.join(10)


def test_a_rerun_moves_the_last_run_to_last_state() -> None:
    [record] = new_records({"containers": [{"name": "c", "image": "i"}]}).values()
    begin_run(record, 100.0, "0123456789")
    assert record.restart_count == 0 and record.container_id == "sandbox://01234567-c-0"
    end_run(record, Exit(name="c", pid=1, exit_code=1, message="oops"), 110.0)
    first = record.terminated
    assert first is not None and first.reason == "Error" and first.started_at == 100.0
    begin_run(record, 120.0, "0123456789")
    assert record.restart_count == 1 and record.last is first and record.terminated is None


def test_an_earlier_runners_runs_count_as_restarts() -> None:
    records = new_records(
        {"containers": [{"name": "c", "image": "i"}, {"name": "d", "image": "i"}]}
    )
    status = {
        "containerStatuses": [
            {"name": "c", "restartCount": 2, "state": {"running": {"startedAt": "x"}}},
            {"name": "d", "restartCount": 0, "state": {"waiting": {}}},
        ]
    }
    adopt(records, status, 500.0)
    assert records["c"].ever_ran and records["c"].restart_count == 2
    assert records["c"].last is not None and records["c"].last.reason == "Unknown"
    assert not records["d"].ever_ran
    begin_run(records["c"], 600.0, "u")
    assert records["c"].restart_count == 3
