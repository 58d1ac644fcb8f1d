"""Owns the pod network: the address range pod IPs come from and the network namespace they
live in, reachable from this host over a veth pair.

The API server refuses loopback addresses in EndpointSlices ("may not be in the loopback
range"), so pods cannot live in 127.0.0.0/8 if Services are to point at them. Pods therefore
get addresses from a private /17 (10.200.0.0 upwards, skipping ranges already routed here)
inside a network namespace of the sandbox's own — the project's own test host, in the
workplace's terms — so traffic to pod IPs never leaves this machine or its namespaces:

    host netns                         sandbox netns (em-<id>)
    emh<id> 10.N.128.1/32  <--veth-->  emp<id> 10.N.128.2/32, default via 10.N.128.1
    route 10.N.0.0/17 dev emh<id>      local route 10.N.0.0/17 dev lo (every pod IP is local)
    route 10.N.128.2/32 dev emh<id>    10.96.0.1/32 on lo (the `kubernetes` Service)

Every pod process is started inside that namespace (setns before exec) and binds its pod IP;
the operator, Prometheus and tests on the host reach it through the veth. That needs
CAP_NET_ADMIN; without it the runner falls back to 127.1.0.0/16 in the host namespace (pods
run and serve, but the EndpointSlice controller cannot publish them). `release` deletes the
namespace, which takes the veth pair and both routes with it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import subprocess
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("edgemodel.runner.network")

LOOPBACK_FALLBACK = "127.1.0.0/16"
CANDIDATES = tuple(f"10.{n}.0.0/16" for n in range(200, 240))
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class PodNetwork:
    """The range pods get addresses from, and the namespace they run in (None: host)."""

    cidr: str
    netns: str | None = None

    @property
    def netns_path(self) -> str | None:
        return f"/run/netns/{self.netns}" if self.netns else None


def free_candidates(candidates: Sequence[str], routed: Iterable[str]) -> list[str]:
    """Candidates that overlap no range already routed on this machine (pure)."""
    taken = []
    for text in routed:
        try:
            taken.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    return [
        c
        for c in candidates
        if not any(ipaddress.ip_network(c).overlaps(t) for t in taken if t.prefixlen > 0)
    ]


def routed_prefixes(output: str) -> list[str]:
    """The destination of each route in `ip -4 route show table all` output (pure)."""
    prefixes = []
    for line in output.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] in ("local", "broadcast", "unicast", "blackhole", "unreachable"):
            words = words[1:]
        if words and words[0] != "default":
            prefixes.append(words[0])
    return prefixes


@dataclass(frozen=True)
class Plumbing:
    """Names and addresses of one sandbox's pod network (pure: derived from range and id)."""

    block: str  # the /16 claimed on the host
    ident: str

    @property
    def netns(self) -> str:
        return f"em-{self.ident}"

    @property
    def host_if(self) -> str:
        return f"emh{self.ident}"

    @property
    def pod_if(self) -> str:
        return f"emp{self.ident}"

    @property
    def pods(self) -> str:
        network = ipaddress.ip_network(self.block)
        return str(next(network.subnets(new_prefix=17)))

    @property
    def host_ip(self) -> str:
        return str(ipaddress.ip_network(self.block).network_address + 128 * 256 + 1)

    @property
    def pod_side_ip(self) -> str:
        return str(ipaddress.ip_network(self.block).network_address + 128 * 256 + 2)

    def commands(self) -> list[list[str]]:
        """The `ip` commands that build the network, in order."""
        ns = ["ip", "netns", "exec", self.netns, "ip"]
        return [
            ["ip", "netns", "add", self.netns],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.pod_if],
            ["ip", "link", "set", self.pod_if, "netns", self.netns],
            ["ip", "addr", "add", f"{self.host_ip}/32", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            ["ip", "route", "add", self.pods, "dev", self.host_if],
            # Replies to connections the pods open to this host (from the veth's far end).
            ["ip", "route", "add", f"{self.pod_side_ip}/32", "dev", self.host_if],
            [*ns, "link", "set", "lo", "up"],
            [*ns, "addr", "add", f"{self.pod_side_ip}/32", "dev", self.pod_if],
            [*ns, "link", "set", self.pod_if, "up"],
            [*ns, "route", "add", f"{self.host_ip}/32", "dev", self.pod_if],
            [*ns, "route", "add", "default", "via", self.host_ip, "dev", self.pod_if],
            [*ns, "route", "add", "local", self.pods, "dev", "lo", "table", "local"],
            # The `kubernetes` Service's address, served in the namespace by runner.apiproxy.
            [*ns, "addr", "add", "10.96.0.1/32", "dev", "lo"],
        ]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)


def ident(state: Path) -> str:
    return f"{zlib.crc32(str(state).encode()) & 0xFFFFFF:06x}"


def _exists(netns: str) -> bool:
    return Path(f"/run/netns/{netns}").exists()


def _build(plumbing: Plumbing) -> str:
    """'' when the network is in place, else the error (and nothing is left behind)."""
    for argv in plumbing.commands():
        try:
            result = _run(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            _teardown(plumbing.netns)
            return str(exc)
        if result.returncode != 0:
            _teardown(plumbing.netns)
            return f"{' '.join(argv)}: {result.stderr.strip()}"
    return ""


def _teardown(netns: str) -> None:
    try:
        _run(["ip", "netns", "del", netns])
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("deleting network namespace %s failed: %s", netns, exc)


def claim(state: Path, explicit: str | None = None) -> PodNetwork:
    """The pod network of the runner whose state folder is `state` (made once, then reused)."""
    remembered = state / "pod-cidr"
    ident_ = ident(state)
    wanted = explicit
    if wanted is None and remembered.exists():
        wanted = remembered.read_text().strip() or None
    if wanted is not None and ipaddress.ip_network(wanted).is_loopback:
        return _remember(remembered, PodNetwork(wanted))
    if wanted is not None:
        block = str(ipaddress.ip_network(wanted).supernet(new_prefix=16))
        plumbing = Plumbing(block, ident_)
        if _exists(plumbing.netns):
            return _remember(remembered, PodNetwork(plumbing.pods, plumbing.netns))
        candidates = [block]
    else:
        try:
            routes = _run(["ip", "-4", "route", "show", "table", "all"]).stdout
        except (OSError, subprocess.SubprocessError):
            routes = ""
        candidates = free_candidates(CANDIDATES, routed_prefixes(routes))[:3]
    for block in candidates:
        plumbing = Plumbing(block, ident_)
        error = _build(plumbing)
        if not error:
            return _remember(remembered, PodNetwork(plumbing.pods, plumbing.netns))
        log.warning("cannot build the pod network on %s: %s", block, error)
    log.warning(
        "no pod network namespace: pods get loopback addresses, which EndpointSlices refuse"
    )
    return _remember(remembered, PodNetwork(LOOPBACK_FALLBACK))


def _remember(path: Path, network: PodNetwork) -> PodNetwork:
    path.write_text(network.cidr + "\n")
    return network


def release(network: PodNetwork) -> None:
    if network.netns and _exists(network.netns):
        _teardown(network.netns)


_libc = ctypes.CDLL(None, use_errno=True)


def enter(netns_path: str) -> None:
    """Moves the calling thread (or a child between fork and exec) into a network namespace."""
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        enter_fd(fd)
    finally:
        os.close(fd)


def enter_fd(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
