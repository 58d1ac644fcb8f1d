"""Owns the load generator of the e2e tests and benchmarks: real tritonclient requests spread
over a Service's ready endpoints (refreshed from its EndpointSlices every half second, as
kube-proxy would), counting every success and failure. Bounded: it stops when told, or at its
own deadline. Traffic goes only to the sandbox's own pod addresses."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KubectlFn = Callable[..., Any]  # kubectl(*args) -> CompletedProcess with .stdout


@dataclass
class Load:
    """`workers` threads sending requests to the ready endpoints of one Service."""

    kubectl: KubectlFn
    namespace: str
    service: str
    model: str
    batch: np.ndarray
    workers: int = 4
    pause_s: float = 0.0  # between a worker's requests
    max_seconds: float = 600.0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _endpoints: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self._refresh()
        self._threads = [threading.Thread(target=self._watch, daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _refresh(self) -> None:
        selector = f"kubernetes.io/service-name={self.service}"
        out = self.kubectl(
            "get", "endpointslices", "-n", self.namespace, "-l", selector, "-o", "json"
        ).stdout
        found = []
        for item in json.loads(out or '{"items": []}')["items"]:
            port = next(
                (p["port"] for p in item.get("ports") or [] if p.get("name") == "http"), None
            )
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") and port:
                    found += [f"{a}:{port}" for a in endpoint["addresses"]]
        with self._lock:
            self._endpoints = sorted(found)

    def _watch(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.wait(0.5) and time.monotonic() < deadline:
            self._refresh()
        self._stop.set()

    def _turns(self, index: int) -> Iterator[tuple[int, str]]:
        """A worker's (turn, endpoint) round robin over the ready endpoints, from `index` on,
        until stopped; it waits while there are none. Subclasses' workers loop over it too."""
        turn = index
        while not self._stop.is_set():
            with self._lock:
                endpoints = list(self._endpoints)
            if not endpoints:
                time.sleep(0.1)
                continue
            yield turn, endpoints[turn % len(endpoints)]
            turn += 1

    def _work(self, index: int) -> None:
        import tritonclient.http as httpclient

        clients: dict[str, Any] = {}
        for _, address in self._turns(index):
            client = clients.get(address)
            if client is None:
                client = clients[address] = httpclient.InferenceServerClient(
                    address, connection_timeout=5, network_timeout=10
                )
            inp = httpclient.InferInput("input", list(self.batch.shape), "FP32")
            inp.set_data_from_numpy(self.batch, binary_data=True)
            try:
                client.infer(self.model, [inp])
            except Exception as exc:  # every failure counts; the test decides what is allowed
                with self._lock:
                    self.failed += 1
                    self.errors.append(f"{address}: {exc}"[:300])
                clients.pop(address, None)
            else:
                with self._lock:
                    self.ok += 1
            if self.pause_s:
                time.sleep(self.pause_s)
