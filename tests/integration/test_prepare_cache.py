"""`edgemodel prepare-cache` on a real folder, with exactly the privilege the pod grants it.

A kubelet creates a missing hostPath (`DirectoryOrCreate`) as root, mode 0755, and hostPath
ignores fsGroup, so the runtime pod's `fetch` (uid 10001) cannot write its node cache. The
builders put this step first in the pod, as root with every capability dropped but CHOWN and
no privilege escalation; `setpriv` reproduces that here (bounding set = {CHOWN},
no_new_privs) and a real uid-10001 process then writes into the folder.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import cli_env

if os.geteuid() != 0:
    pytest.skip("needs root: it changes file ownership", allow_module_level=True)

PREPARE = [sys.executable, "-m", "edgemodel_cli.main", "prepare-cache"]


def as_pod_root(*caps: str) -> list[str]:
    """A command prefix: root with only `caps` (the container's securityContext)."""
    bounding = ",".join(["-all", *(f"+{c}" for c in caps)])
    return ["setpriv", "--no-new-privs", f"--bounding-set={bounding}", "--inh-caps=-all"]


def as_user(uid: int = 10001) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=cli_env(), check=False
    )


@pytest.fixture
def kubelet_dir() -> Iterator[Path]:
    """A folder as the kubelet makes it, reachable by other users (unlike pytest's tmp)."""
    base = Path(tempfile.mkdtemp(prefix="edgemodel-cache-test-"))
    base.chmod(0o755)
    cache = base / "cache"
    cache.mkdir(mode=0o755)
    os.chown(cache, 0, 0)
    yield cache
    shutil.rmtree(base)


def writable_by_user(folder: Path) -> bool:
    return run([*as_user(), "touch", str(folder / "artifact")]).returncode == 0


def test_the_pods_user_cannot_write_what_the_kubelet_made(kubelet_dir: Path) -> None:
    assert not writable_by_user(kubelet_dir)


def test_with_chown_only_the_folder_becomes_the_users(kubelet_dir: Path) -> None:
    result = run([*as_pod_root("chown"), *PREPARE, str(kubelet_dir)])
    assert result.returncode == 0, result.stderr
    info = kubelet_dir.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (10001, 10001, 0o750)
    assert writable_by_user(kubelet_dir)
    # A restart finds it prepared and needs no capability at all.
    again = run([*as_pod_root(), *PREPARE, str(kubelet_dir)])
    assert again.returncode == 0, again.stderr


def test_without_chown_it_fails_saying_what_it_needs(kubelet_dir: Path) -> None:
    result = run([*as_pod_root(), *PREPARE, str(kubelet_dir)])
    assert result.returncode == 1
    assert "CAP_CHOWN" in result.stderr
    assert kubelet_dir.stat().st_uid == 0


def test_nothing_below_the_folder_and_no_symlink_is_followed(kubelet_dir: Path) -> None:
    inside = kubelet_dir / "old"
    inside.mkdir()
    link = kubelet_dir.parent / "link"
    link.symlink_to(kubelet_dir)
    assert run([*as_pod_root("chown"), *PREPARE, str(link)]).returncode == 2  # not a folder
    assert kubelet_dir.stat().st_uid == 0
    assert run([*as_pod_root("chown"), *PREPARE, str(kubelet_dir)]).returncode == 0
    assert inside.stat().st_uid == 0


def test_a_missing_path_is_bad_input(tmp_path: Path) -> None:
    result = run([*PREPARE, str(tmp_path / "absent")])
    assert result.returncode == 2 and "absent" in result.stderr
