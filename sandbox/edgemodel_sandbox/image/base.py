"""Owns the cached Debian root filesystems (one per architecture) the runtime image starts from.

`mmdebstrap --variant=minbase` makes a bookworm rootfs tar from Debian's own packages (arm64's
maintainer scripts run under qemu, see `binfmt`). The tar is cached per (arch, suite, package
list, options) under ``${XDG_CACHE_HOME:-~/.cache}/edgemodel/image/base/<key>/``, so a fresh
clone reuses it; the image's base layer is derived from it deterministically (`oci`). Debian's
archive moves on, so a rebuilt cache may hold newer packages: reproducibility is "same commit +
same cache gives the same digest". See docs/architecture.md ("Images without Docker").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgemodel_sandbox import files
from edgemodel_sandbox.errors import EdgeModelSandboxError
from edgemodel_sandbox.image import binfmt, spec

# Bump when the command line below changes in a way the key does not capture.
BASE_FORMAT = 1


class ImageBuildError(EdgeModelSandboxError, RuntimeError):
    """A step of the image build failed; the message names the step and the cause."""


def cache_root() -> Path:
    return files.cache_dir("image", "EDGEMODEL_IMAGE_CACHE")


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def require_tools(tools: Sequence[str]) -> None:
    """Fails with the names of the missing commands (and where they come from)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(
            f"missing tool(s): {', '.join(missing)}; install them with "
            "`make system-deps` (sandbox/install-system-deps.sh)"
        )


def base_inputs(arch: str) -> dict[str, Any]:
    """Everything that decides the content of one base rootfs (its cache key is their hash)."""
    target = spec.platform(arch)
    return {
        "format": BASE_FORMAT,
        "arch": target.debian_arch,
        "suite": spec.DEBIAN_SUITE,
        "variant": spec.DEBIAN_VARIANT,
        "packages": sorted(spec.DEBIAN_PACKAGES),
        "mirrors": list(spec.DEBIAN_MIRRORS),
        "path_excludes": list(spec.DPKG_PATH_EXCLUDES),
        "path_includes": list(spec.DPKG_PATH_INCLUDES),
    }


def input_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def mmdebstrap_command(arch: str, output: Path) -> list[str]:
    target = spec.platform(arch)
    command = [
        "mmdebstrap",
        f"--variant={spec.DEBIAN_VARIANT}",
        f"--architectures={target.debian_arch}",
        f"--include={','.join(sorted(spec.DEBIAN_PACKAGES))}",
        "--mode=root",
        "--format=tar",
        # /dev is the runtime's business; no device nodes in the layer.
        "--skip=output/dev",
    ]
    command += [f"--dpkgopt=path-exclude={path}" for path in spec.DPKG_PATH_EXCLUDES]
    command += [f"--dpkgopt=path-include={path}" for path in spec.DPKG_PATH_INCLUDES]
    command += [
        "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/* "
        "$1/var/cache/ldconfig/aux-cache $1/var/log/*.log $1/var/log/apt/*",
        spec.DEBIAN_SUITE,
        str(output),
        *spec.DEBIAN_MIRRORS,
    ]
    return command


@contextlib.contextmanager
def heartbeat(step: str, every: float = 30.0) -> Iterator[None]:
    """Prints `step` with the elapsed time every `every` seconds while the block runs."""
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            log(f"{step}: still running, {time.monotonic() - started:.0f}s elapsed")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        log(f"{step}: done in {time.monotonic() - started:.0f}s")


def run_step(
    step: str, command: list[str], env: dict[str, str] | None = None, *, quiet: bool = False
) -> None:
    """Runs a long command with a heartbeat. Its output goes to stderr, or, when `quiet`, is
    kept and shown only if the command fails."""
    log(f"{step}: {' '.join(command[:3])} ...")
    with heartbeat(step):
        result = subprocess.run(
            command,
            env=env,
            stdout=subprocess.PIPE if quiet else sys.stderr,
            stderr=subprocess.STDOUT if quiet else None,
            check=False,
        )
    if result.returncode != 0:
        if quiet and result.stdout:
            sys.stderr.buffer.write(result.stdout)
        raise ImageBuildError(f"{step} failed (exit {result.returncode}); see the output above")


def ensure_base(arch: str) -> tuple[Path, dict[str, Any]]:
    """The cached rootfs tar for `arch` and its metadata, running mmdebstrap on a miss."""
    inputs = base_inputs(arch)
    folder = cache_root() / "base" / f"{inputs['arch']}-{input_key(inputs)}"
    rootfs = folder / "rootfs.tar"
    meta_path = folder / "meta.json"
    if rootfs.exists() and meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        return rootfs, meta
    require_tools(["mmdebstrap", "arch-test"])
    with files.locked(folder / "lock"):
        # One mmdebstrap per base at a time; a build that waited here finds the result.
        if rootfs.exists() and meta_path.exists():
            return rootfs, json.loads(meta_path.read_text())
        return _make_base(arch, inputs, folder)


def _make_base(arch: str, inputs: dict[str, Any], folder: Path) -> tuple[Path, dict[str, Any]]:
    rootfs = folder / "rootfs.tar"
    partial = folder / "rootfs.tar.partial"
    # mmdebstrap stamps what it generates with the time the base is made; the base layer is
    # then clamped to a fixed epoch, so it stays byte-identical across commits
    # (docs/architecture.md).
    epoch = int(time.time())
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    step = f"{arch} base (mmdebstrap {spec.DEBIAN_SUITE} {spec.DEBIAN_VARIANT})"
    if arch != "amd64":
        log(
            f"{step}: maintainer scripts run under qemu; the first build takes 10-20 min on 2 cores"
        )
    foreign = spec.platform(arch).machine != os.uname().machine
    with binfmt.qemu_aarch64() if foreign else contextlib.nullcontext():
        run_step(step, mmdebstrap_command(arch, partial), env)
    partial.rename(rootfs)
    meta = {**inputs, "source_date_epoch": epoch, "created": time.time()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return rootfs, meta


if __name__ == "__main__":
    # `python -m edgemodel_sandbox.image.base ARCH...`: warm the base cache up front.
    for name in sys.argv[1:] or list(spec.DEFAULT_ARCHES):
        print(ensure_base(name)[0])
