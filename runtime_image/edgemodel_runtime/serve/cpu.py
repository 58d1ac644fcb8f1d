"""Owns sizing onnxruntime's thread pool from the container's CPU limit.

A pod limited to 2 CPUs on a 64-core node must not start 64 intra-op threads: they would be
throttled by the CFS quota and inflate tail latency. The limit is read from cgroup v2
(`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`); parsing is pure so it can be
tested on every format without a cgroup, and the reader only gathers the file contents.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def parse_cpu_limit(
    cpu_max: str | None, cfs_quota_us: str | None = None, cfs_period_us: str | None = None
) -> float | None:
    """The CPU limit in cores from cgroup file contents, or None when unlimited or unreadable.

    `cpu_max` is cgroup v2's "QUOTA PERIOD" ("max 100000" when unlimited); the v1 pair is used
    only when v2 says nothing. Garbage yields None rather than an error: a wrong guess here must
    not stop the server from starting.
    """
    if cpu_max is not None:
        fields = cpu_max.split()
        if len(fields) >= 1 and fields[0] == "max":
            return None
        if len(fields) == 2:
            return _ratio(fields[0], fields[1])
        if len(fields) == 1:  # period omitted: the kernel default is 100 ms
            return _ratio(fields[0], "100000")
        return None
    if cfs_quota_us is not None and cfs_period_us is not None:
        return _ratio(cfs_quota_us.strip(), cfs_period_us.strip())
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_value, period_value = int(quota), int(period)
    except ValueError:
        return None
    if quota_value <= 0 or period_value <= 0:  # v1 writes -1 for "no limit"
        return None
    return quota_value / period_value


def threads_for(limit: float | None, available: int) -> int:
    """Intra-op threads: the whole cores of the limit (at least 1), never more than we may run on.

    Rounding down because a fractional core used by a full thread gets throttled every period.
    """
    available = max(1, available)
    if limit is None:
        return available
    return max(1, min(available, math.floor(limit)))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU limit of this process's cgroup (v2 first, then v1), None when unlimited."""
    return parse_cpu_limit(
        _read(root / "cpu.max"),
        _read(root / "cpu" / "cpu.cfs_quota_us") or _read(root / "cpu.cfs_quota_us"),
        _read(root / "cpu" / "cpu.cfs_period_us") or _read(root / "cpu.cfs_period_us"),
    )


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not every platform has affinity
        return os.cpu_count() or 1


def default_intra_op_threads(root: Path = CGROUP_ROOT) -> int:
    return threads_for(read_cpu_limit(root), available_cpus())
