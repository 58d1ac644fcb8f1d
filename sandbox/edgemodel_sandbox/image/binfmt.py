"""Owns the kernel's qemu-aarch64 binfmt registration while arm64 code runs on an amd64 host.

`with qemu_aarch64(): ...` makes aarch64 ELF binaries runnable (under qemu-user-static) for the
body of the block, then puts the machine back as it was: it mounts binfmt_misc only if it was
not mounted and registers the handler only if it was not registered, and undoes only what it
did itself. Holders are counted across processes (one file per live holder under
``/run/edgemodel/binfmt``, guarded by a lock file), so an image build and a containerd test that
overlap never pull the handler out from under each other; the last holder restores the state.
See docs/architecture.md ("Images without Docker").
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from edgemodel_sandbox.errors import EdgeModelSandboxError
from edgemodel_sandbox.files import locked

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
HANDLER = "qemu-aarch64"
# Debian's qemu-user-static describes the handler here (binfmt-support format).
DESCRIPTION = Path("/usr/share/binfmts/qemu-aarch64")
STATE_DIR = Path(os.environ.get("EDGEMODEL_BINFMT_STATE", "/run/edgemodel/binfmt"))


class BinfmtError(EdgeModelSandboxError, RuntimeError):
    """The aarch64 handler could not be registered (not root, qemu-user-static missing...)."""


def registration_line(description: str) -> str:
    """The string written to binfmt_misc/register for a binfmt-support description file.

    Pure: `description` is the text of /usr/share/binfmts/qemu-aarch64. Flags: F (fix binary:
    the kernel opens the interpreter now, so it works inside chroots and containers) and P
    (preserve argv[0]) when the description asks for them.
    """
    fields: dict[str, str] = {}
    for raw in description.splitlines():
        key, _, value = raw.strip().partition(" ")
        if key:
            fields[key] = value.strip()
    for required in ("interpreter", "magic"):
        if not fields.get(required):
            raise BinfmtError(f"binfmt description lacks {required!r}")
    flags = ""
    if fields.get("preserve") == "yes":
        flags += "P"
    if fields.get("fix_binary") == "yes":
        flags += "F"
    if fields.get("credentials") == "yes":
        flags += "C"
    return ":".join(
        [
            "",
            HANDLER,
            "M",
            fields.get("offset", "0"),
            fields["magic"],
            fields.get("mask", ""),
            fields["interpreter"],
            flags,
        ]
    )


def _mounted() -> bool:
    return (BINFMT_DIR / "register").exists()


def _registered() -> bool:
    return (BINFMT_DIR / HANDLER).exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holders() -> list[Path]:
    """Live holder files; files of processes that died without cleaning up are removed."""
    live = []
    for path in sorted(STATE_DIR.glob("holder-*")):
        try:
            pid = int(path.name.split("-")[1])
        except (IndexError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if _alive(pid):
            live.append(path)
        else:
            path.unlink(missing_ok=True)
    return live


def _read_owned() -> dict[str, bool]:
    owned = STATE_DIR / "owned.json"
    if owned.exists():
        data = json.loads(owned.read_text())
        return {"mounted": bool(data.get("mounted")), "registered": bool(data.get("registered"))}
    return {"mounted": False, "registered": False}


def _write_owned(owned: dict[str, bool]) -> None:
    (STATE_DIR / "owned.json").write_text(json.dumps(owned))


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with locked(STATE_DIR / "lock"):
        yield


def _acquire(holder: Path) -> None:
    with _locked():
        # A record left by a holder that died keeps counting: the last holder still undoes it.
        owned = _read_owned()
        if not _mounted():
            subprocess.run(
                ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                check=True,
                capture_output=True,
            )
            owned["mounted"] = True
        if not _registered():
            if not DESCRIPTION.exists():
                raise BinfmtError(
                    f"{DESCRIPTION} not found: install qemu-user-static "
                    "(sandbox/install-system-deps.sh)"
                )
            (BINFMT_DIR / "register").write_text(registration_line(DESCRIPTION.read_text()))
            owned["registered"] = True
        _write_owned(owned)
        holder.write_text(str(os.getpid()))


def _release(holder: Path) -> None:
    with _locked():
        holder.unlink(missing_ok=True)
        if _holders():
            return
        owned = _read_owned()
        if owned["registered"] and _registered():
            (BINFMT_DIR / HANDLER).write_text("-1")
        if owned["mounted"] and _mounted():
            subprocess.run(["umount", str(BINFMT_DIR)], check=False, capture_output=True)
        (STATE_DIR / "owned.json").unlink(missing_ok=True)


@contextlib.contextmanager
def qemu_aarch64() -> Iterator[None]:
    """Makes aarch64 binaries runnable inside the block; restores the previous state after.

    Idempotent and nestable (also across processes): a handler that was registered before the
    first holder entered stays registered after the last one leaves.
    """
    if os.geteuid() != 0:
        raise BinfmtError("registering the qemu-aarch64 binfmt handler needs root")
    holder = STATE_DIR / f"holder-{os.getpid()}-{id(object())}"
    try:
        _acquire(holder)
    except (OSError, subprocess.CalledProcessError) as error:
        raise BinfmtError(f"could not register {HANDLER}: {error}") from error
    try:
        yield
    finally:
        _release(holder)
