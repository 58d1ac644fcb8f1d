"""Test sessions sharing the tests' sandbox: only the last one to leave takes it down.

Helpers and CI jobs run several pytest sessions at once on one machine; a session that ends
first must not stop the control plane another one is still using (tests/conftest.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import SandboxLease


def test_the_last_session_of_a_started_sandbox_takes_it_down(tmp_path: Path) -> None:
    lease = SandboxLease(tmp_path / "users")
    lease.join(started=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "users" / str(other.pid)).touch()  # another live session
        assert lease.others() == [other.pid]
        assert lease.leave() is False  # the other session still uses it
    finally:
        other.kill()
        other.wait()
    # The other session is gone (without leaving): the next one to leave is the last.
    lease.join(started=False)
    assert lease.others() == []
    assert not (tmp_path / "users" / str(other.pid)).exists()
    assert lease.leave() is True
    # Nothing left to say it was started: a later reuse does not take it down.
    lease.join(started=False)
    assert lease.leave() is False


def test_a_sandbox_no_session_started_is_left_running(tmp_path: Path) -> None:
    lease = SandboxLease(tmp_path / "users")
    lease.join(started=False)  # e.g. kept by EDGEMODEL_KEEP_SANDBOX=1 earlier
    assert lease.leave() is False
