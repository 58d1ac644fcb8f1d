"""Owns finding a ready endpoint for each Service a container names, at its start.

`dns` decides (pure) which endpoint of a Service and its EndpointSlices a name stands for;
`ServiceResolver` reads them and waits, within `timeout` and until told to stop, for a
Service to get a ready endpoint: the container may start before its backend is ready, as in
a cluster where kube-proxy would route the connection later (docs/architecture.md, "The
pod runner").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from edgemodel_operator import labels
from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.runner import dns
from edgemodel_sandbox.runner.credentials import ApiReader

log = logging.getLogger("edgemodel.runner")
RETRY_EVERY = 1.0


class ServiceResolver:
    """Service names -> ready endpoints, read from the API.

    `stopping` says when to give up waiting (the pod or the runner is going away); `pause`
    waits between attempts (the runner's shutdown event's `wait`, so shutdown cuts it short).
    """

    def __init__(
        self,
        api: ApiReader,
        timeout: float,
        stopping: Callable[[], bool],
        pause: Callable[[float], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._timeout = timeout
        self._stopping = stopping
        self._pause = pause
        self._clock = clock

    def resolve(self, refs: Sequence[dns.ServiceRef], who: str) -> dict[dns.ServiceRef, str]:
        """A ready endpoint per Service; those still without one at the deadline are left out."""
        resolved: dict[dns.ServiceRef, str] = {}
        deadline = self._clock() + self._timeout
        for ref in refs:
            while True:
                target = self.resolve_one(ref)
                if target is not None:
                    resolved[ref] = target
                    break
                if self._clock() > deadline or self._stopping():
                    log.warning(
                        "no ready endpoint pod=%s service=%s.%s", who, ref.name, ref.namespace
                    )
                    break
                # Not the pod's wake event: pod updates would turn this into a busy loop.
                self._pause(RETRY_EVERY)
        return resolved

    def resolve_one(self, ref: dns.ServiceRef) -> str | None:
        """One look at the Service and its EndpointSlices."""
        try:
            service = self._api.get(f"/api/v1/namespaces/{ref.namespace}/services/{ref.name}")
            if service is None:
                return None
            slices = self._api.request(
                "GET",
                f"/apis/discovery.k8s.io/v1/namespaces/{ref.namespace}/endpointslices",
                query={"labelSelector": f"{labels.SERVICE_NAME}={ref.name}"},
            )
        except (KubeError, OSError) as exc:
            log.warning("service lookup failed service=%s error=%s", ref.name, exc)
            return None
        return dns.resolve(service, slices.get("items") or [], ref)
