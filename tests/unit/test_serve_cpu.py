"""Sizing onnxruntime threads from the container CPU limit (cgroup v2 and v1 file formats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemodel_runtime.serve.cpu import parse_cpu_limit, read_cpu_limit, threads_for


@pytest.mark.parametrize(
    ("cpu_max", "quota", "period", "expected"),
    [
        ("max 100000\n", None, None, None),  # v2, unlimited
        ("200000 100000\n", None, None, 2.0),  # v2, 2 CPUs
        ("150000 100000", None, None, 1.5),
        ("50000 100000", None, None, 0.5),
        ("300000", None, None, 3.0),  # v2 with the period omitted
        ("garbage here", None, None, None),
        ("", None, None, None),
        ("0 100000", None, None, None),
        (None, "-1\n", "100000\n", None),  # v1, unlimited
        (None, "400000\n", "100000\n", 4.0),  # v1, 4 CPUs
        (None, "x", "100000", None),
        (None, "100000", None, None),
        (None, None, None, None),
        ("max 100000", "200000", "100000", None),  # v2 wins when present
    ],
)
def test_parse_cpu_limit(
    cpu_max: str | None, quota: str | None, period: str | None, expected: float | None
) -> None:
    assert parse_cpu_limit(cpu_max, quota, period) == expected


@pytest.mark.parametrize(
    ("limit", "available", "expected"),
    [
        (None, 8, 8),  # no limit: every CPU we may run on
        (2.0, 64, 2),  # a 2-CPU pod on a 64-core node
        (1.5, 64, 1),  # a fractional core would be throttled
        (0.5, 64, 1),  # never zero threads
        (16.0, 4, 4),  # never more than the affinity mask allows
        (None, 0, 1),
    ],
)
def test_threads_for(limit: float | None, available: int, expected: int) -> None:
    assert threads_for(limit, available) == expected


def test_read_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert read_cpu_limit(tmp_path) == 2.5


def test_read_cgroup_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert read_cpu_limit(tmp_path) == 3.0


def test_read_no_cgroup(tmp_path: Path) -> None:
    assert read_cpu_limit(tmp_path) is None
