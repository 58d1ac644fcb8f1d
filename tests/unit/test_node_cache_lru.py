"""The node cache stays within its size bound: least-recently-used artifacts go first, never the
one being fetched, never one another pod is downloading, and a pod's layout outlives its entry.
Real files on disk; `edgemodel fetch --cache-max-bytes` end to end with file:// sources."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from edgemodel_runtime.artifacts.cache import NodeCache, layout_plain


def _entry(cache: NodeCache, data: bytes, used_at: float) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (cache.root / sha).mkdir(parents=True)
    cache.entry(sha).write_bytes(data)
    cache.touch(sha, used_at)
    return sha


def test_a_full_cache_evicts_the_least_recently_used_first(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    oldest = _entry(cache, b"a" * 1000, 100.0)
    middle = _entry(cache, b"b" * 1000, 200.0)
    newest = _entry(cache, b"c" * 1000, 300.0)
    assert cache.lookup(oldest) is not None  # a verified hit is a use: now the newest
    assert cache.evict(2000) == [middle]
    assert cache.evict(1000) == [newest]
    assert [sha for _used, _size, sha in cache.entries()] == [oldest]
    assert cache.evict(1000) == []  # within the bound: nothing more goes


def test_the_artifact_being_fetched_is_never_evicted(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    current = _entry(cache, b"a" * 5000, 100.0)  # the oldest, and larger than the bound
    other = _entry(cache, b"b" * 1000, 200.0)
    assert cache.evict(1000, keep=frozenset({current})) == [other]
    assert cache.lookup(current) is not None


def test_an_entry_another_pod_is_downloading_is_not_evicted(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    busy = _entry(cache, b"a" * 1000, 100.0)
    (cache.root / busy / ".incoming-123").write_bytes(b"partial")  # fresh: in flight
    idle = _entry(cache, b"b" * 1000, 200.0)
    assert cache.evict(0) == [idle]
    assert cache.entry(busy).exists()


def test_a_running_pods_layout_survives_the_eviction_of_its_entry(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    sha = _entry(cache, b"model bytes" * 100, 100.0)
    placed = layout_plain(cache.entry(sha), tmp_path / "pod")
    assert cache.evict(0) == [sha]
    assert placed.read_bytes() == b"model bytes" * 100


def test_fetch_keeps_the_cache_within_its_bound(tmp_path: Path) -> None:
    sources, cache = tmp_path / "sources", tmp_path / "cache"
    sources.mkdir()
    shas = []
    for index in range(3):
        data = bytes([index]) * 4000
        (sources / f"m{index}.onnx").write_bytes(data)
        shas.append(hashlib.sha256(data).hexdigest())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for index, sha in enumerate(shas):
        result = subprocess.run(
            [
                sys.executable, "-m", "edgemodel_cli.main", "fetch", "--sha256", sha,
                "--uri", f"file://{sources}/m{index}.onnx", "--cache", str(cache),
                "--dest", str(tmp_path / f"pod{index}"), "--cache-max-bytes", "9000",
            ],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["sha256"] == sha
        # Entries are distinguished by use order; filesystems with coarse mtimes need a nudge.
        NodeCache(cache).touch(sha, 1000.0 + index)
    # Three 4000-byte artifacts under a 9000-byte bound: the least recently used went.
    assert sorted(p.name for p in cache.iterdir()) == sorted(shas[1:])
    assert (tmp_path / "pod0" / "model.onnx").read_bytes() == bytes([0]) * 4000
