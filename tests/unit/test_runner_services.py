"""Service names in a container's command line, resolved by the pod runner at its start: a
ready endpoint once there is one, waiting for it within the timeout, and giving up when told
to stop or when the API fails. The API, the clock and the pause between attempts are fakes.
"""

from __future__ import annotations

from typing import Any

from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.runner.dns import ServiceRef
from edgemodel_sandbox.runner.services import ServiceResolver

REF = ServiceRef("models", "ns", 80, "http")
SERVICE = {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8000}]}}
READY_SLICE = {
    "ports": [{"name": "http", "port": 8000}],
    "endpoints": [{"addresses": ["10.200.0.7"], "conditions": {"ready": True}}],
}


class FakeApi:
    """The Service, and its slices from the `ready_after`-th look on; `error` is raised."""

    def __init__(self, ready_after: int = 0, error: Exception | None = None) -> None:
        self.ready_after = ready_after
        self.error = error
        self.looks = 0

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        if self.error is not None:
            raise self.error
        return SERVICE if path == "/api/v1/namespaces/ns/services/models" else None

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.looks += 1
        assert kwargs["query"] == {"labelSelector": "kubernetes.io/service-name=models"}
        return {"items": [READY_SLICE] if self.looks > self.ready_after else []}


class Time:
    """A clock that moves only when the resolver pauses."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses = 0

    def clock(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses += 1
        self.now += seconds


def resolver(api: FakeApi, time: Time, stop: bool = False, timeout: float = 60) -> ServiceResolver:
    return ServiceResolver(api, timeout, lambda: stop, time.pause, time.clock)


def test_a_ready_endpoint_is_found_at_once() -> None:
    time = Time()
    assert resolver(FakeApi(), time).resolve([REF], "ns/p") == {REF: "10.200.0.7:8000"}
    assert time.pauses == 0


def test_an_endpoint_not_ready_yet_is_waited_for() -> None:
    time = Time()
    assert resolver(FakeApi(ready_after=3), time).resolve([REF], "ns/p") == {REF: "10.200.0.7:8000"}
    assert time.pauses == 3


def test_the_wait_ends_at_the_timeout() -> None:
    time = Time()
    assert resolver(FakeApi(ready_after=1000), time, timeout=5).resolve([REF], "ns/p") == {}
    assert time.pauses == 6  # looks at 0..5 s, gives up after the one past 5 s


def test_the_wait_ends_when_the_pod_stops() -> None:
    time = Time()
    assert resolver(FakeApi(ready_after=1000), time, stop=True).resolve([REF], "ns/p") == {}
    assert time.pauses == 0


def test_an_api_failure_is_no_endpoint() -> None:
    api = FakeApi(error=KubeError(500, "etcd"))
    assert resolver(api, Time()).resolve_one(REF) is None
    assert resolver(FakeApi(error=ConnectionRefusedError()), Time()).resolve_one(REF) is None
