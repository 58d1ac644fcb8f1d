"""The node cache's prepare step decides what to change on the folder (pure part).

Owned by the pods' user already: nothing, so restarts need no privilege. Root-owned (what the
kubelet creates): chmod first while root owns it, then chown, which needs CAP_CHOWN only.
Someone else's: chown only (chmod of another user's folder would need CAP_FOWNER).
"""

from __future__ import annotations

import stat

from edgemodel_runtime.prepare_cache_cli import Change, plan

DIR = stat.S_IFDIR


def test_a_folder_the_user_owns_is_left_as_it_is() -> None:
    assert plan(10001, 10001, DIR | 0o700, 10001, 10001, 0o750) == Change()
    assert plan(10001, 0, DIR | 0o755, 10001, 10001, 0o750) == Change()


def test_a_root_owned_folder_gets_the_mode_then_the_owner() -> None:
    assert plan(0, 0, DIR | 0o755, 10001, 10001, 0o750) == Change(mode=0o750, owner=(10001, 10001))
    assert plan(0, 0, DIR | 0o750, 10001, 10001, 0o750) == Change(owner=(10001, 10001))


def test_another_users_folder_only_changes_owner() -> None:
    assert plan(500, 500, DIR | 0o700, 10001, 10001, 0o750) == Change(owner=(10001, 10001))
