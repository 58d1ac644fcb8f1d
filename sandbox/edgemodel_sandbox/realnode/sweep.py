"""Owns what the real node leaves on the machine, finding it and removing it: container
processes and cgroups (kubepods), mounts under the node's folders and the pods' network
namespaces, the bridge and its veths, the iptables chains of kube-proxy, the kubelet and the
bridge CNI, the CNI result cache, and the fixed paths the kubelet creates.

`leftovers()` lists what is there (the test of `down` asserts it is empty); `sweep()` removes
it. The parsers of `iptables-save`, mountinfo and `ip` output are pure and unit-tested.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgemodel_sandbox.realnode.plan import BRIDGE, CNI_NETWORK

CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
CNI_CACHE = Path("/var/lib/cni")
MACHINE_KUBELET_DIR = Path("/var/lib/kubelet")
TABLES = ("filter", "nat", "mangle", "raw")
MNT_DETACH = 2


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)


# ---------------------------------------------------------------- iptables


@dataclass
class TablePlan:
    """What to remove from one iptables table: rules (as `-A ...` lines) then chains."""

    table: str
    rules: list[str] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)


def ours(chain: str, rule: str) -> bool:
    """Whether a chain or rule is the real node's: kube-proxy's and the kubelet's KUBE-* chains
    (one real node per machine, so every KUBE-* chain is ours), or the bridge CNI's rules and
    CNI-* chains for our network (commented with its name)."""
    return chain.startswith("KUBE-") or f'name: \\"{CNI_NETWORK}\\"' in rule


def plan_iptables(save_output: str) -> list[TablePlan]:
    """The rules and chains to delete, from `iptables-save` output (pure).

    Rules in other chains that jump into ours, or carry our CNI comment, are deleted first;
    then our chains are flushed and deleted."""
    plans: list[TablePlan] = []
    current: TablePlan | None = None
    chains: list[str] = []
    for line in save_output.splitlines():
        if line.startswith("*"):
            current = TablePlan(line[1:].strip())
            chains = []
            plans.append(current)
        elif line.startswith(":") and current is not None:
            chains.append(line[1:].split()[0])
        elif line.startswith("-A ") and current is not None:
            chain = line.split()[1]
            jump = re.search(r" -[jg] (\S+)", line)
            target = jump.group(1) if jump else ""
            if ours(chain, line):
                if chain.startswith("CNI-") and chain not in current.chains:
                    current.chains.append(chain)
                if not chain.startswith(("KUBE-", "CNI-")):
                    current.rules.append(line)
                if target.startswith("CNI-") and target not in current.chains:
                    current.chains.append(target)
            elif target.startswith("KUBE-"):
                current.rules.append(line)
        elif line.startswith("COMMIT") and current is not None:
            current.chains.extend(c for c in chains if c.startswith("KUBE-"))
    return [p for p in plans if p.rules or p.chains]


def _iptables_leftovers(binary: str) -> list[str]:
    if shutil.which(binary) is None:
        return []
    result = _run([f"{binary}-save"])
    return [
        f"{binary} {plan.table}: {name}"
        for plan in plan_iptables(result.stdout)
        for name in [*plan.chains, *(r[3:] for r in plan.rules)]
    ]


def _remove_iptables(binary: str) -> None:
    if shutil.which(binary) is None:
        return
    for plan in plan_iptables(_run([f"{binary}-save"]).stdout):
        for rule in plan.rules:
            _run([binary, "-w", "-t", plan.table, "-D", *shlex.split(rule)[1:]])
        for chain in plan.chains:
            _run([binary, "-w", "-t", plan.table, "-F", chain])
        for chain in plan.chains:
            _run([binary, "-w", "-t", plan.table, "-X", chain])


# ---------------------------------------------------------------- mounts


def mounts_under(mountinfo: str, roots: Iterable[Path]) -> list[str]:
    """Mount points at or under any of `roots`, deepest first (pure; mountinfo format)."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


_libc = ctypes.CDLL(None, use_errno=True)


def _unmount(point: str) -> None:
    if _libc.umount2(point.encode(), MNT_DETACH) != 0:
        _run(["umount", "-l", point])


# ---------------------------------------------------------------- network


def bridge_netns(link_output: str, netns_output: str) -> list[str]:
    """Network namespaces at the far end of the bridge's veths (pure): `ip -o link show master
    BRIDGE` gives `link-netnsid N` per veth, `ip netns list` gives `NAME (id: N)`."""
    ids = set(re.findall(r"link-netnsid (\d+)", link_output))
    names = []
    for line in netns_output.splitlines():
        match = re.match(r"(\S+) \(id: (\d+)\)", line.strip())
        if match and match.group(2) in ids:
            names.append(match.group(1))
    return names


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _bridge_ports() -> list[str]:
    if not _link_exists(BRIDGE):
        return []
    return [p.name for p in Path(f"/sys/class/net/{BRIDGE}/brif").iterdir()]


def _our_netns() -> list[str]:
    if not _link_exists(BRIDGE):
        return []
    links = _run(["ip", "-o", "link", "show", "master", BRIDGE]).stdout
    return bridge_netns(links, _run(["ip", "netns", "list"]).stdout)


# ---------------------------------------------------------------- cgroups


def kubepods_cgroups(root: Path = CGROUP_ROOT) -> list[Path]:
    """Every kubepods cgroup folder (each hierarchy, cgroup v1 or v2), deepest first."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    candidates = [root / KUBEPODS, *(h / KUBEPODS for h in root.iterdir() if h.is_dir())]
    for top in candidates:
        if top.is_dir():
            found.extend(Path(p) for p, _, _ in os.walk(top))
    return sorted(set(found), key=lambda p: (-len(p.parts), str(p)))


def _cgroup_pids(groups: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for group in groups:
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (group / "cgroup.procs").read_text().split())
    return pids


def _kill_pids(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        for pid in pids:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)


def shim_pids(socket_path: str) -> set[int]:
    """containerd-shim processes of the containerd listening on `socket_path`."""
    pids: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and socket_path.encode() in argv:
            pids.add(int(proc.name))
    return pids


# ---------------------------------------------------------------- the two entry points


@dataclass(frozen=True)
class Footprint:
    """Where one real node leaves things: its folders and containerd's socket."""

    roots: tuple[Path, ...]  # the node's folders (mounts under them are ours)
    containerd_socket: str
    machine_paths: tuple[Path, ...] = ()  # fixed paths that did not exist before `up`


def leftovers(footprint: Footprint) -> dict[str, list[str]]:
    """What of the real node is still on the machine, by kind (empty lists: nothing)."""
    mountinfo = Path("/proc/self/mountinfo").read_text()
    netns_roots = [Path("/run/netns") / n for n in _our_netns()]
    groups = kubepods_cgroups()
    return {
        "processes": sorted(
            map(str, _cgroup_pids(groups) | shim_pids(footprint.containerd_socket))
        ),
        "cgroups": [str(g) for g in groups],
        "mounts": mounts_under(mountinfo, [*footprint.roots, *netns_roots, MACHINE_KUBELET_DIR]),
        "netns": _our_netns(),
        "links": ([BRIDGE] if _link_exists(BRIDGE) else []) + _bridge_ports(),
        "iptables": _iptables_leftovers("iptables") + _iptables_leftovers("ip6tables"),
        "cni": sorted(str(p) for p in (CNI_CACHE / "results").glob(f"{CNI_NETWORK}-*")),
        "paths": [str(p) for p in footprint.machine_paths if p.exists()],
    }


def sweep(footprint: Footprint) -> None:
    """Removes everything `leftovers` would list. Call after the node's processes stopped."""
    groups = kubepods_cgroups()
    _kill_pids(_cgroup_pids(groups))
    _kill_pids(shim_pids(footprint.containerd_socket))
    for name in _our_netns():
        _run(["ip", "netns", "del", name])
    for port in _bridge_ports():
        _run(["ip", "link", "del", port])
    if _link_exists(BRIDGE):
        _run(["ip", "link", "del", BRIDGE])
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for point in mounts_under(mountinfo, [*footprint.roots, MACHINE_KUBELET_DIR]):
        _unmount(point)
    _remove_iptables("iptables")
    _remove_iptables("ip6tables")
    for group in kubepods_cgroups():
        with contextlib.suppress(OSError):
            group.rmdir()
    for path in (CNI_CACHE / "results").glob(f"{CNI_NETWORK}-*"):
        with contextlib.suppress(OSError):
            path.unlink()
    for path in footprint.machine_paths:
        shutil.rmtree(path, ignore_errors=True)
