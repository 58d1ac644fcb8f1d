"""Owns `edgemodel prepare-cache`: hand the node cache folder to the pods' user.

A runtime pod's node cache is a hostPath that the kubelet creates root-owned (mode 0755) and
that `fsGroup` does not reach, so `edgemodel fetch` (uid 10001) could not write to it. This
command runs first in the pod, as root with only CAP_CHOWN, and sets the mode and owner of
the folder itself (never anything below it, never following a symlink). A folder already
owned by the user is left exactly as it is, so the step needs no privilege on every restart
after the first. Exit codes: 0 done, 2 bad input (not a folder, bad numbers), 1 the change
was refused (the capability missing). See docs/architecture.md.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from edgemodel_runtime.errors import FailureKind, exit_code

# The user (and group) the runtime image runs as: the image's `USER` and the operator's
# pods' runAsUser/runAsGroup (builders.POD_UID, the operator's side of the same contract).
POD_USER = 10001
EXIT_FAILED = exit_code(FailureKind.INTERNAL)
EXIT_BAD_INPUT = exit_code(FailureKind.INVALID_INPUT)


@dataclass(frozen=True)
class Change:
    """What to do to the folder: a new mode first (as its root owner), then a new owner."""

    mode: int | None = None
    owner: tuple[int, int] | None = None


def plan(
    current_uid: int, current_gid: int, current_mode: int, uid: int, gid: int, mode: int
) -> Change:
    """The change that makes a folder (uid, gid, mode) usable by `uid`; pure.

    Owned by `uid` already: nothing (a second run needs no privilege). Owned by root: chmod
    first, while root still owns it (no capability needed), then chown (CAP_CHOWN). Owned by
    someone else: chown only, because chmod of another user's folder would need CAP_FOWNER;
    the mode it keeps is reported by the caller if it leaves the owner without access.
    """
    if current_uid == uid:
        return Change()
    wanted_mode = None
    if current_uid == 0 and stat.S_IMODE(current_mode) != mode:
        wanted_mode = mode
    wanted_owner = (uid, gid) if (current_uid, current_gid) != (uid, gid) else None
    return Change(mode=wanted_mode, owner=wanted_owner)


def _octal_mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"not a file mode: {text!r}")
    return value


def _id(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="DIR", help="the cache folder (mounted)")
    parser.add_argument(
        "--uid", type=_id, default=POD_USER, help=f"owner to give it (default {POD_USER})"
    )
    parser.add_argument(
        "--gid", type=_id, default=POD_USER, help=f"group to give it (default {POD_USER})"
    )
    parser.add_argument(
        "--mode", type=_octal_mode, default=0o750, help="mode for a root-owned folder (0750)"
    )


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    try:
        info = os.lstat(path)
    except OSError as exc:
        print(f"edgemodel prepare-cache: {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not stat.S_ISDIR(info.st_mode):
        print(f"edgemodel prepare-cache: {path} is not a folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    change = plan(info.st_uid, info.st_gid, info.st_mode, args.uid, args.gid, args.mode)
    try:
        if change.mode is not None:
            os.chmod(path, change.mode, follow_symlinks=False)
        if change.owner is not None:
            os.chown(path, *change.owner, follow_symlinks=False)
    except PermissionError as exc:
        print(
            f"edgemodel prepare-cache: cannot hand {path} to {args.uid}:{args.gid} "
            f"({exc.strerror}): the container needs to run as root with CAP_CHOWN",
            file=sys.stderr,
        )
        return EXIT_FAILED
    after = os.lstat(path)
    print(
        f"edgemodel prepare-cache: {path} owner {after.st_uid}:{after.st_gid} "
        f"mode {stat.S_IMODE(after.st_mode):04o}",
        file=sys.stderr,
    )
    return 0
