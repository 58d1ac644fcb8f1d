"""Owns pod IP allocation: unique addresses from the pod range, lowest free first.

Every address of the range reaches this machine (see `network`), so each pod's processes
bind to their own address and every IP the cluster hands out (EndpointSlices, Prometheus
targets) is a live socket. Addresses ending in .0 or .255 are skipped; freed ones are reused.
"""

from __future__ import annotations

import heapq
import ipaddress
import threading

NETWORK = ipaddress.IPv4Network("127.1.0.0/16")  # the fallback range; `network` picks the real one


class PoolExhausted(RuntimeError):
    """Every address of the range is taken."""


def _usable(index: int) -> bool:
    return index % 256 not in (0, 255)


class Allocator:
    """Thread-safe allocator of pod IPs, keyed by pod uid."""

    def __init__(self, network: ipaddress.IPv4Network = NETWORK) -> None:
        self._network = network
        self._lock = threading.Lock()
        self._by_owner: dict[str, int] = {}
        self._taken: set[int] = set()
        self._free: list[int] = []  # heap of released indexes
        self._next = 1

    def contains(self, ip: str) -> bool:
        try:
            return ipaddress.IPv4Address(ip) in self._network
        except ValueError:
            return False

    def allocate(self, owner: str, wanted: str | None = None) -> str:
        """The owner's IP: the one it has, else `wanted` when free, else the lowest free."""
        with self._lock:
            if owner in self._by_owner:
                return self._address(self._by_owner[owner])
            index = self._index(wanted) if wanted else None
            if index is None or index in self._taken or not _usable(index):
                index = self._take_lowest()
            self._taken.add(index)
            self._by_owner[owner] = index
            return self._address(index)

    def release(self, owner: str) -> None:
        with self._lock:
            index = self._by_owner.pop(owner, None)
            if index is not None:
                self._taken.discard(index)
                heapq.heappush(self._free, index)

    def owned(self) -> dict[str, str]:
        with self._lock:
            return {owner: self._address(i) for owner, i in self._by_owner.items()}

    def _index(self, ip: str) -> int | None:
        if not self.contains(ip):
            return None
        return int(ipaddress.IPv4Address(ip)) - int(self._network.network_address)

    def _address(self, index: int) -> str:
        return str(self._network.network_address + index)

    def _take_lowest(self) -> int:
        # Skip what was handed out by request (a previous runner's addresses) on the way up.
        size = self._network.num_addresses
        while self._next < size and (not _usable(self._next) or self._next in self._taken):
            self._next += 1
        while self._free and self._free[0] in self._taken:
            heapq.heappop(self._free)
        if self._free and (self._next >= size or self._free[0] < self._next):
            return heapq.heappop(self._free)
        if self._next < size:
            self._next += 1
            return self._next - 1
        raise PoolExhausted(f"no free address left in {self._network}")
