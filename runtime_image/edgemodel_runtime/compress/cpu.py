"""Owns what the compressing machine's CPU offers the int8 kernels (read from /proc/cpuinfo).

VNNI (AVX512-VNNI or AVX-VNNI) gives amd64 a u8*s8 dot product that accumulates in int32;
without it onnxruntime's u8s8 kernels go through an int16 intermediate that can saturate,
which is why onnxruntime recommends `reduce_range` (7-bit weights) there.
"""

from __future__ import annotations

import platform
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The union of every `flags`/`Features` line in a /proc/cpuinfo text (pure)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def has_vnni(cpuinfo: str, machine: str) -> bool:
    """True where int8 needs no reduced range: amd64 with VNNI, and every non-x86 CPU (pure)."""
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return bool(cpu_flags(cpuinfo) & set(VNNI_FLAGS))


def this_machine_has_vnni(path: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        text = path.read_text()
    except OSError:
        return False  # unknown: the conservative choice is the reduced range
    return has_vnni(text, platform.machine())
