"""Owns what one pod's runner writes to the API: its status, and the confirmation of its deletion.

The supervisor hands over the pod and its container records once per turn of its loop (so
everything a turn changed goes out as one write); `StatusWriter` renders the status with
`lifecycle.pod_status`, skips the write when nothing changed since the last successful one,
and otherwise sends one merge patch on pods/status. It keeps the pod's own conditions (their
transition times) between writes. A 404 means the pod is gone. The sink is any object with
`merge_patch` and `delete` (the API client, or a fake in tests) (docs/architecture.md,
"The pod runner").
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.runner import lifecycle
from edgemodel_sandbox.runner.lifecycle import Record

log = logging.getLogger("edgemodel.runner")


class StatusSink(Protocol):
    """The two writes a pod's runner makes (`kube.SyncKube` is one)."""

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def delete(self, path: str, body: dict[str, Any] | None = None) -> bool: ...


class Written(enum.Enum):
    """The outcome of one `publish`."""

    WRITTEN = "written"
    UNCHANGED = "unchanged"  # same status as the last write: nothing sent
    GONE = "gone"  # the pod no longer exists
    FAILED = "failed"  # the API did not take it; the next turn tries again


def own_conditions(conditions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conditions the kubelet owns, out of a pod's conditions."""
    return [dict(c) for c in conditions if c.get("type") in lifecycle.OWN_CONDITIONS]


def render_status(
    pod: Mapping[str, Any],
    records: Mapping[str, Record],
    *,
    pod_ip: str,
    start_time: float,
    conditions: Sequence[Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    """The pod's status from its spec (names, restart policy), its records and the
    conditions written before (others' conditions, such as readiness gates, are kept)."""
    spec = pod.get("spec") or {}
    foreign = [
        c
        for c in (pod.get("status") or {}).get("conditions") or []
        if c.get("type") not in lifecycle.OWN_CONDITIONS
    ]
    return lifecycle.pod_status(
        policy=str(spec.get("restartPolicy") or "Always"),
        init_names=[c["name"] for c in spec.get("initContainers") or []],
        names=[c["name"] for c in spec.get("containers") or []],
        records=records,
        pod_ip=pod_ip,
        start_time=start_time,
        previous_conditions=[*foreign, *conditions],
        now=now,
    )


def deletion_options(uid: str) -> dict[str, Any]:
    """The body confirming a graceful deletion: now, and only of this very pod."""
    return {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": uid},
    }


class StatusWriter:
    """The one writer of one pod's status; deduplicates writes by the last one that landed."""

    def __init__(
        self,
        sink: StatusSink,
        pod: Mapping[str, Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        meta = pod["metadata"]
        self._sink = sink
        self._path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self._uid = str(meta["uid"])
        self._who = f"{meta['namespace']}/{meta['name']}"
        self._clock = clock
        self._lock = threading.Lock()
        self._published: dict[str, Any] | None = None
        self._conditions: list[dict[str, Any]] = []

    def adopt(self, status: Mapping[str, Any]) -> None:
        """Carry the conditions of a status written before (by an earlier runner) over."""
        with self._lock:
            self._conditions = own_conditions(status.get("conditions") or [])

    @property
    def published(self) -> dict[str, Any] | None:
        """The last status that was written."""
        with self._lock:
            return self._published

    def publish(
        self,
        pod: Mapping[str, Any],
        records: Mapping[str, Record],
        pod_ip: str,
        start_time: float,
    ) -> Written:
        """Write the status the records render to, unless it is the one last written."""
        with self._lock:
            status = render_status(
                pod,
                records,
                pod_ip=pod_ip,
                start_time=start_time,
                conditions=self._conditions,
                now=self._clock(),
            )
            if status == self._published:
                return Written.UNCHANGED
            try:
                self._sink.merge_patch(self._path + "/status", {"status": status})
            except KubeError as exc:
                if exc.status == 404:
                    return Written.GONE
                log.warning("status write failed pod=%s: %s", self._who, exc)
                return Written.FAILED
            except OSError as exc:
                log.warning("status write failed pod=%s: %s", self._who, exc)
                return Written.FAILED
            self._published = status
            self._conditions = own_conditions(status["conditions"])
            return Written.WRITTEN

    def confirm_deletion(self) -> bool:
        """Delete the pod for good once its containers stopped; False when the API failed."""
        try:
            self._sink.delete(self._path, deletion_options(self._uid))
        except (KubeError, OSError) as exc:
            log.warning("confirming deletion failed pod=%s: %s", self._who, exc)
            return False
        return True
