"""The pod runner's status writer: one merge patch per change of status and none otherwise,
conditions that keep their transition times (also across a runner restart) and others'
conditions kept, a failed write tried again, a vanished pod noticed, and the deletion
confirmed only for this very pod. The API is a fake sink; the clock is a fake.
"""

from __future__ import annotations

from typing import Any

import pytest

from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.runner.lifecycle import RUNNING, Record, rfc3339
from edgemodel_sandbox.runner.statuswriter import StatusWriter, Written, render_status

START = 1_800_000_000.0
PATH = "/api/v1/namespaces/ns/pods/p"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class FakeSink:
    """Records every write; raises what `fail_with` holds instead, while it holds something."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.deletes: list[tuple[str, dict[str, Any] | None]] = []
        self.fail_with: Exception | None = None

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail_with is not None:
            raise self.fail_with
        self.patches.append((path, body))
        return body

    def delete(self, path: str, body: dict[str, Any] | None = None) -> bool:
        if self.fail_with is not None:
            raise self.fail_with
        self.deletes.append((path, body))
        return True


def pod(conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"conditions": conditions or []},
    }


def records(ready: bool = False) -> dict[str, Record]:
    return {"c": Record("c", "i", state=RUNNING, started_at=START, started=True, ready=ready)}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def writer(sink: FakeSink, clock: Clock) -> StatusWriter:
    return StatusWriter(sink, pod(), clock)


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"]["conditions"]}


def test_a_status_is_written_once_until_it_changes(
    writer: StatusWriter, sink: FakeSink, clock: Clock
) -> None:
    assert writer.publish(pod(), records(), "10.0.0.5", START) is Written.WRITTEN
    clock.now += 30
    assert writer.publish(pod(), records(), "10.0.0.5", START) is Written.UNCHANGED
    assert writer.publish(pod(), records(ready=True), "10.0.0.5", START) is Written.WRITTEN
    assert [p for p, _ in sink.patches] == [PATH + "/status"] * 2
    body = sink.patches[-1][1]
    assert body["status"]["phase"] == "Running" and body["status"]["podIP"] == "10.0.0.5"
    assert writer.published == body["status"]


def test_conditions_keep_their_transition_times(
    writer: StatusWriter, sink: FakeSink, clock: Clock
) -> None:
    writer.publish(pod(), records(), "10.0.0.5", START)
    clock.now += 60
    writer.publish(pod(), records(ready=True), "10.0.0.5", START)
    first, second = (conditions(body) for _, body in sink.patches)
    assert second["PodScheduled"]["lastTransitionTime"] == rfc3339(START)
    assert second["Ready"]["lastTransitionTime"] == rfc3339(START + 60)
    assert first["Ready"]["status"] == "False" and second["Ready"]["status"] == "True"


def test_an_earlier_runners_conditions_are_adopted(sink: FakeSink, clock: Clock) -> None:
    earlier = START - 3600
    before = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc3339(earlier)}]
    writer = StatusWriter(sink, pod(before), clock)
    writer.adopt({"conditions": before})
    writer.publish(pod(before), records(), "10.0.0.5", START)
    assert conditions(sink.patches[0][1])["PodScheduled"]["lastTransitionTime"] == rfc3339(earlier)


def test_others_conditions_are_kept() -> None:
    gate = {"type": "example.com/gate", "status": "True"}
    status = render_status(
        pod([gate]), records(), pod_ip="10.0.0.5", start_time=START, conditions=[], now=START
    )
    assert gate in status["conditions"]


@pytest.mark.parametrize("error", [KubeError(500, "etcd"), ConnectionResetError("reset")])
def test_a_failed_write_is_tried_again(
    writer: StatusWriter, sink: FakeSink, error: Exception
) -> None:
    sink.fail_with = error
    assert writer.publish(pod(), records(), "10.0.0.5", START) is Written.FAILED
    assert writer.published is None
    sink.fail_with = None
    assert writer.publish(pod(), records(), "10.0.0.5", START) is Written.WRITTEN


def test_a_vanished_pod_is_gone(writer: StatusWriter, sink: FakeSink) -> None:
    sink.fail_with = KubeError(404, "not found")
    assert writer.publish(pod(), records(), "10.0.0.5", START) is Written.GONE


def test_the_deletion_is_confirmed_for_this_pod_only(writer: StatusWriter, sink: FakeSink) -> None:
    assert writer.confirm_deletion()
    assert sink.deletes == [
        (
            PATH,
            {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "u-1"},
            },
        )
    ]
    sink.fail_with = KubeError(500, "etcd")
    assert not writer.confirm_deletion()
