"""The qemu-aarch64 binfmt context manager: aarch64 binaries run inside the block, and the
machine's previous state comes back after it, also when holders overlap across processes
(an image build and a containerd test may hold it at once)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgemodel_sandbox.image import binfmt

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="binfmt_misc needs root")
HANDLER = binfmt.BINFMT_DIR / binfmt.HANDLER


def registered() -> bool:
    return HANDLER.exists()


def test_registration_line_follows_debians_description() -> None:
    line = binfmt.registration_line(binfmt.DESCRIPTION.read_text())
    fields = line.split(":")
    assert fields[1:4] == ["qemu-aarch64", "M", "0"]
    assert fields[4].startswith(r"\x7f\x45\x4c\x46\x02")  # a 64-bit ELF ...
    assert fields[6] == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert fields[7] == "PF"  # preserve argv[0], interpreter fixed at registration
    with pytest.raises(binfmt.BinfmtError, match="lacks 'magic'"):
        binfmt.registration_line("interpreter /usr/bin/qemu-aarch64-static\n")


def test_state_is_restored_and_nesting_keeps_the_handler() -> None:
    before = registered()
    with binfmt.qemu_aarch64():
        assert registered()
        assert "enabled" in HANDLER.read_text()
        with binfmt.qemu_aarch64():
            assert registered()
        assert registered()  # the inner holder left; the outer one still needs it
    assert registered() == before


def test_a_holder_in_another_process_keeps_it_registered(tmp_path: Path) -> None:
    before = registered()
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from edgemodel_sandbox.image import binfmt\n"
            "with binfmt.qemu_aarch64():\n"
            f"    pathlib.Path({str(ready)!r}).touch()\n"
            "    sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        with binfmt.qemu_aarch64():
            assert registered()
        assert registered()  # the other process still holds it
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert registered() == before
