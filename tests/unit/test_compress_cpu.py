"""Which int8 range the compressing CPU needs: VNNI read from /proc/cpuinfo."""

from __future__ import annotations

import pytest

from edgemodel_runtime.compress.cpu import cpu_flags, has_vnni

X86_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
X86_AVX_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx_vnni\n"
X86_PLAIN = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp\n"


def test_flags_are_read_from_every_processor() -> None:
    assert cpu_flags(X86_PLAIN) == {"fpu", "sse2", "avx2", "fma"}
    assert "asimddp" in cpu_flags(ARM)


@pytest.mark.parametrize(
    ("cpuinfo", "machine", "expected"),
    [
        (X86_VNNI, "x86_64", True),
        (X86_AVX_VNNI, "x86_64", True),
        (X86_PLAIN, "x86_64", False),
        ("", "x86_64", False),
        (ARM, "aarch64", True),  # arm64 int8 kernels never saturate: no reduced range
    ],
)
def test_vnni_decides_the_reduced_range(cpuinfo: str, machine: str, expected: bool) -> None:
    assert has_vnni(cpuinfo, machine) is expected
