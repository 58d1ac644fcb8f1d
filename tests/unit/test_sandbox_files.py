"""The sandbox's file helpers: where each cache lives, atomic writes, and cross-process locks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgemodel_sandbox import files, models, zoo
from edgemodel_sandbox.image.base import cache_root
from edgemodel_sandbox.tools import tools_dir


def test_every_cache_sits_under_the_user_cache_unless_its_variable_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("EDGEMODEL_FIXTURES_DIR", "EDGEMODEL_ZOO_DIR", "EDGEMODEL_IMAGE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("EDGEMODEL_TOOLS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / "edgemodel" / "fixtures"
    assert zoo.cache_dir() == tmp_path / "edgemodel" / "zoo"
    assert cache_root() == tmp_path / "edgemodel" / "image"
    assert tools_dir() == tmp_path / "edgemodel" / "tools"
    monkeypatch.setenv("EDGEMODEL_ZOO_DIR", str(tmp_path / "elsewhere"))
    assert zoo.cache_dir() == tmp_path / "elsewhere"


def test_an_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    files.atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def _try_lock(path: Path) -> bool:
    """Whether another process can take the lock right now."""
    code = (
        "import fcntl, sys\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    try:\n"
        "        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    except BlockingIOError:\n"
        "        sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(path)], check=False).returncode == 0


def test_a_lock_keeps_other_processes_out_until_the_block_ends(tmp_path: Path) -> None:
    lock = tmp_path / "deeper" / "lock"
    with files.locked(lock):
        assert lock.exists()
        assert not _try_lock(lock)
    assert _try_lock(lock)
