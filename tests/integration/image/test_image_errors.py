"""Bad input to the image build fails at once with a message naming what is wrong: an unknown
architecture or variant, a GPU variant for arm64, a required tool that is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgemodel_sandbox.image import build, spec


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(spec.SpecError, match=r"unknown architecture 'riscv64'.*amd64, arm64"):
        build.build_runtime(["amd64", "riscv64"])


def test_unknown_variant_and_gpu_on_arm64_are_refused() -> None:
    with pytest.raises(spec.SpecError, match="unknown image variant 'tpu'"):
        build.build_runtime(variant="tpu")
    with pytest.raises(spec.SpecError, match="gpu variant is built for amd64 only"):
        build.build_runtime(["arm64"], variant="gpu")


def test_cli_reports_an_unknown_architecture_and_exits_1() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgemodel_sandbox.image.build", "--arch", "s390x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "make image: unknown architecture 's390x'" in result.stderr


def test_missing_mmdebstrap_is_named_with_where_to_get_it(tmp_path: Path) -> None:
    # A PATH with git alone and an empty cache: the build needs mmdebstrap for the base.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)
    env = dict(os.environ, PATH=str(bin_dir), EDGEMODEL_IMAGE_CACHE=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-m", "edgemodel_sandbox.image.build", "--arch", "amd64", "--no-pause"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 1
    assert "missing tool(s): mmdebstrap, arch-test" in result.stderr
    assert "make system-deps" in result.stderr
