"""Owns `make image`: assembling the runtime and pause images as reproducible OCI archives.

The runtime image per platform is three layers over nothing from Docker Hub:
  1. the Debian bookworm minbase rootfs (`base`), clamped to a fixed epoch;
  2. the third-party wheels of the lock (`lock`), installed with `pip --target` for that
     platform into /usr/local/lib/python3.11/dist-packages, set to the same fixed epoch;
  3. the project (its wheel, built from pyproject), /usr/local/bin/edgemodel, the edgemodel
     user (uid/gid 10001) and its home, at the commit's time (SOURCE_DATE_EPOCH).
Layers 1-2 do not depend on the commit, so they stay byte-identical across commits and cache
hits (keyed by their inputs) make a warm build a re-check and a copy. The platforms meet in one
OCI index (`oci`), written as an oci-archive into build/image/. `ensure_runtime_image()` and
`ensure_pause_image()` are the API for tests and fixtures. See docs/architecture.md ("Images
without Docker").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemodel_sandbox.image import lock, oci, spec
from edgemodel_sandbox.image.base import (
    ImageBuildError,
    cache_root,
    ensure_base,
    heartbeat,
    log,
    require_tools,
    run_step,
)

ROOT = Path(__file__).resolve().parents[3]
OUTPUT_DIR = ROOT / "build" / "image"
RUNTIME_ARCHIVE = OUTPUT_DIR / "edgemodel-runtime.oci.tar"
GPU_ARCHIVE = OUTPUT_DIR / "edgemodel-runtime-gpu.oci.tar"
PAUSE_ARCHIVE = OUTPUT_DIR / "pause.oci.tar"
PAUSE_SOURCE = Path(__file__).with_name("pause")
# What the project's wheel is built from (pyproject's packages.find roots and its readme).
PROJECT_INPUTS = ("pyproject.toml", "README.md", "operator", "runtime_image", "sandbox")
# Layers that do not depend on the commit (the base, the wheels, pause) use this epoch, so their
# bytes do not change from one commit to the next: 2024-01-01T00:00:00Z.
STABLE_EPOCH = 1704067200
# mmdebstrap leaves the build host's copies of these in the rootfs; the image ships them empty
# (the container runtime bind-mounts its own).
SCRUBBED = ("etc/hostname", "etc/resolv.conf")
# Files of the base rootfs that layer 3 edits to add the user.
ACCOUNT_FILES = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")
ENTRY_SCRIPT = f"""{spec.SHEBANG}
import sys

from edgemodel_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
"""
VARIANTS: dict[str, dict[str, Any]] = {
    "cpu": {
        "archive": RUNTIME_ARCHIVE,
        "repository": spec.REPOSITORY,
        "title": spec.IMAGE_TITLE,
        "arches": spec.DEFAULT_ARCHES,
    },
    "gpu": {
        "archive": GPU_ARCHIVE,
        "repository": spec.REPOSITORY + "-gpu",
        "title": spec.IMAGE_TITLE + "-gpu",
        "arches": lock.GPU_ARCHES,
    },
}


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image inside the index: its manifest, config and layers."""

    arch: str
    manifest_digest: str
    config_digest: str
    layers: tuple[oci.Layer, ...]

    @property
    def compressed_size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def uncompressed_size(self) -> int:
        return sum(layer.uncompressed_size for layer in self.layers)


@dataclass(frozen=True)
class BuiltImage:
    """A finished oci-archive: where it is, its ref, its index digest and its platforms."""

    path: Path
    ref: str
    index_digest: str
    platforms: tuple[PlatformImage, ...]
    info: spec.ImageInfo

    @property
    def refs(self) -> list[str]:
        return [self.ref]


def _git(*args: str, root: Path = ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageBuildError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def project_info(root: Path = ROOT) -> spec.ImageInfo:
    """Version from pyproject; revision = HEAD (+ '-dirty' when the project's inputs have
    uncommitted changes); SOURCE_DATE_EPOCH from the environment or HEAD's commit time."""
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    require_tools(["git"])
    head = _git("rev-parse", "HEAD", root=root).strip()
    dirty = bool(_git("status", "--porcelain", "--", *PROJECT_INPUTS, root=root).strip())
    epoch_text = os.environ.get("SOURCE_DATE_EPOCH") or _git(
        "log", "-1", "--format=%ct", "HEAD", root=root
    )
    try:
        epoch = int(epoch_text.strip())
    except ValueError as error:
        raise ImageBuildError(f"SOURCE_DATE_EPOCH is not an integer: {epoch_text!r}") from error
    return spec.ImageInfo(
        version=version, revision=head + ("-dirty" if dirty else ""), source_date_epoch=epoch
    )


def project_files(root: Path = ROOT) -> list[str]:
    """The project's input files: tracked plus untracked-but-not-ignored, sorted."""
    listed = _git("ls-files", "-z", "-co", "--exclude-standard", "--", *PROJECT_INPUTS, root=root)
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


@dataclass(frozen=True)
class Source:
    """A snapshot of the project's input files and the values taken from git with them.

    Every build works from a snapshot, so files edited while it runs cannot mix into it; tests
    build twice from one snapshot to check reproducibility."""

    root: Path
    files: tuple[str, ...]
    info: spec.ImageInfo

    @property
    def digest(self) -> str:
        return files_digest(self.root, self.files)


def snapshot(destination: Path, root: Path = ROOT) -> Source:
    """Copies the project's input files (tracked + untracked-not-ignored) into `destination`."""
    info = project_info(root)
    files = project_files(root)
    for name in files:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination / name)
    return Source(destination, tuple(files), info)


def files_digest(root: Path, names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        digest.update(name.encode() + b"\0" + oct(path.stat().st_mode & 0o111).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def pip_command(*args: str) -> list[str]:
    cache = cache_root() / "pip"
    return [
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "--no-input",
        "--cache-dir",
        str(cache),
        *args,
    ]


def normalise_site_packages(root: Path) -> None:
    """Makes a `pip install --target` tree reproducible and Debian-python friendly.

    Drops byte code and the per-install records (RECORD, INSTALLER, REQUESTED, direct_url.json:
    they embed paths and hashes of this machine's install), and moves console scripts from the
    target's bin/ to /usr/local/bin with a `#!/usr/bin/python3` shebang.
    """
    site = root / spec.SITE_PACKAGES
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    for compiled in site.rglob("*.py[co]"):
        compiled.unlink()
    for record in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
        for path in site.glob(f"*.dist-info/{record}"):
            path.unlink()
    scripts = site / "bin"
    if scripts.is_dir():
        target = root / "usr" / "local" / "bin"
        target.mkdir(parents=True, exist_ok=True)
        for script in sorted(scripts.iterdir()):
            data = script.read_bytes()
            if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
                data = spec.SHEBANG.encode() + b"\n" + data.split(b"\n", 1)[1]
            (target / script.name).write_bytes(data)
            (target / script.name).chmod(0o755)
        shutil.rmtree(scripts)


def installed_distributions(site_names: Sequence[str]) -> dict[str, str]:
    """{canonical name: version} from the `*.dist-info` folder names in a listing of layer paths."""
    found: dict[str, str] = {}
    prefix = spec.SITE_PACKAGES + "/"
    for name in site_names:
        if not name.startswith(prefix):
            continue
        top = name[len(prefix) :].split("/", 1)[0]
        if top.endswith(".dist-info"):
            dist, _, version = top[: -len(".dist-info")].rpartition("-")
            found[lock.canonical(dist)] = version
    return found


def _layer(
    cache: oci.LayerCache, what: str, key: str, entries: Callable[[], Iterator[oci.Entry]]
) -> oci.Layer:
    """The cached layer for `key`; on a miss it is written with a heartbeat (big layers take
    minutes to compress)."""
    cached = cache.get(key)
    if cached is not None:
        return cached
    with heartbeat(f"{what} (tar + gzip)"):
        layer = cache.build(key, entries)
    log(
        f"{what}: {layer.size / (1 << 20):.1f} MiB compressed, "
        f"{layer.uncompressed_size / (1 << 20):.1f} MiB uncompressed"
    )
    return layer


def _base_entries(rootfs: Path) -> Iterator[oci.Entry]:
    """Layer 1: the cached rootfs tar, normalised, with the host-specific files emptied."""
    for entry in oci.entries_from_tar(rootfs, STABLE_EPOCH):
        if entry.info.name in SCRUBBED:
            entry.info.size, entry.info.mode = 0, 0o644
            yield oci.Entry(entry.info)
        else:
            yield entry


def _stage_wheels(arch: str, lock_file: Path) -> Iterator[oci.Entry]:
    """Layer 2: the lock's wheels for `arch`, downloaded once into a per-platform wheelhouse of
    the cache (pip download keeps files whose hash already matches), installed from there."""
    target = spec.platform(arch)
    wheelhouse = cache_root() / "wheelhouse" / target.machine
    run_step(
        f"{arch} wheels (pip download into {wheelhouse})",
        pip_command(
            "download", "--quiet", "--no-deps", "--require-hashes", "--dest", str(wheelhouse),
            *spec.pip_platform_args(target.machine), "-r", str(lock_file),
        ),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"edgemodel-wheels-{arch}-") as temp:
        root = Path(temp)
        site = root / spec.SITE_PACKAGES
        command = pip_command(
            "install", "--quiet", "--no-deps", "--no-compile", "--require-hashes", "--no-index",
            "--find-links", str(wheelhouse), *spec.pip_target_args(str(site), target.machine),
            "-r", str(lock_file),
        )  # fmt: skip
        run_step(f"{arch} wheels (pip install --target, {lock_file.name})", command)
        normalise_site_packages(root)
        yield from oci.entries_from_dir(root, STABLE_EPOCH)


def _read_account_files(rootfs: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """The base's account files (data, uid, gid, mode), remembered beside the cached rootfs."""
    remembered = rootfs.with_name("accounts.json")
    if remembered.exists() and remembered.stat().st_mtime >= rootfs.stat().st_mtime:
        saved = json.loads(remembered.read_text())
        return {k: (bytes.fromhex(v[0]), v[1], v[2], v[3]) for k, v in saved.items()}
    found: dict[str, tuple[bytes, int, int, int]] = {}
    with tarfile.open(rootfs) as tar:
        for member in tar:
            name = oci.normalise_name(member.name)
            if name in ACCOUNT_FILES and member.isreg():
                handle = tar.extractfile(member)
                if handle is not None:
                    found[name] = (handle.read(), member.uid, member.gid, member.mode & 0o7777)
    missing = sorted(set(ACCOUNT_FILES) - set(found))
    if missing:
        raise ImageBuildError(f"base rootfs {rootfs} lacks {', '.join(missing)}")
    remembered.write_text(json.dumps({k: [v[0].hex(), *v[1:]] for k, v in found.items()}))
    return found


def account_lines() -> dict[str, str]:
    """The lines layer 3 appends to the base's account files for the non-root user."""
    return {
        "etc/passwd": f"{spec.USER_NAME}:x:{spec.UID}:{spec.GID}::{spec.HOME}:/usr/sbin/nologin\n",
        "etc/group": f"{spec.USER_NAME}:x:{spec.GID}:\n",
        "etc/shadow": f"{spec.USER_NAME}:!:::::::\n",
        "etc/gshadow": f"{spec.USER_NAME}:!::\n",
    }


def _build_project_wheel(source: Source, wheel_dir: Path) -> Path:
    cached = sorted(wheel_dir.glob("edgemodel-*.whl"))
    if cached:
        return cached[0]
    wheel_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgemodel-src-") as temp:
        # pip builds in the tree (build/, *.egg-info): a copy keeps the snapshot clean.
        tree = Path(temp) / "src"
        for name in source.files:
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.root / name, tree / name)
        out = Path(tempfile.mkdtemp(dir=wheel_dir.parent, suffix=".partial"))
        try:
            run_step(
                "project wheel (pip wheel, from pyproject)",
                pip_command("wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(tree)),
                quiet=True,
            )
            with contextlib.suppress(OSError):  # another build may have finished it first
                out.rename(wheel_dir)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    wheels = sorted(wheel_dir.glob("edgemodel-*.whl"))
    if len(wheels) != 1:
        raise ImageBuildError(f"expected one edgemodel wheel in {wheel_dir}, found {wheels}")
    return wheels[0]


def _stage_project(
    project_wheel: Callable[[], Path], accounts: dict[str, tuple[bytes, int, int, int]], epoch: int
) -> Iterator[oci.Entry]:
    with tempfile.TemporaryDirectory(prefix="edgemodel-project-") as temp:
        root = Path(temp)
        site = root / spec.SITE_PACKAGES
        command = pip_command(
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--no-index",
            *spec.pip_target_args(str(site), "x86_64"),
            str(project_wheel()),
        )
        run_step("project layer (pip install --target edgemodel wheel)", command)
        normalise_site_packages(root)
        script = root / spec.CONSOLE_SCRIPT
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(ENTRY_SCRIPT)
        script.chmod(0o755)
        overrides: dict[str, tuple[int, int, int]] = {}
        for name, line in account_lines().items():
            data, uid, gid, mode = accounts[name]
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data + line.encode())
            overrides[name] = (uid, gid, mode)
        home = root / spec.HOME.lstrip("/")
        home.mkdir(parents=True)
        overrides[spec.HOME.lstrip("/")] = (spec.UID, spec.GID, 0o750)
        yield from oci.entries_from_dir(root, epoch, overrides)


def build_runtime(
    arches: Sequence[str] | None = None,
    variant: str = "cpu",
    output: Path | None = None,
    layer_cache: Path | None = None,
    source: Source | None = None,
) -> BuiltImage:
    """Builds (or re-assembles from cache) the runtime image index for `arches`.

    `source` is a project snapshot to build from (default: a fresh one of the working tree);
    `output` and `layer_cache` default to build/image/ and the user cache."""
    if variant not in VARIANTS:
        raise spec.SpecError(
            f"unknown image variant {variant!r}: choose from {', '.join(VARIANTS)}"
        )
    settings = VARIANTS[variant]
    targets = [spec.platform(arch) for arch in (arches or settings["arches"])]
    if variant == "gpu" and any(t.debian_arch not in lock.GPU_ARCHES for t in targets):
        raise spec.SpecError(f"the gpu variant is built for {', '.join(lock.GPU_ARCHES)} only")
    cache = oci.LayerCache(layer_cache or cache_root() / "oci")
    archive = output or settings["archive"]
    if source is not None:
        return _assemble(source, targets, variant, archive, cache)
    with tempfile.TemporaryDirectory(prefix="edgemodel-snapshot-") as temp:
        return _assemble(snapshot(Path(temp)), targets, variant, archive, cache)


def _assemble(
    source: Source,
    targets: list[spec.Platform],
    variant: str,
    archive: Path,
    cache: oci.LayerCache,
) -> BuiltImage:
    settings = VARIANTS[variant]
    started = time.monotonic()
    info = source.info
    lock_file = source.root / lock.LOCKS[variant].relative_to(lock.ROOT)
    if not lock_file.exists():
        raise ImageBuildError(f"{lock_file.name} is missing: run `make image-lock`")
    lock_digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()
    source_digest = source.digest
    wheel_dir = cache_root() / "project-wheels" / source_digest[:24]
    built_wheels: list[Path] = []

    def project_wheel() -> Path:
        """Built on the first cache miss only (a warm build never runs pip wheel)."""
        if not built_wheels:
            built_wheels.append(_build_project_wheel(source, wheel_dir))
        return built_wheels[0]

    inputs = _BuildInputs(
        source, source_digest, lock_file, lock_digest, cache, project_wheel, settings
    )
    platforms: list[PlatformImage] = []
    manifests: list[tuple[oci.Descriptor, dict[str, str]]] = []
    for target in targets:
        platform, manifest_desc = _platform_image(inputs, target)
        manifests.append((manifest_desc, target.oci))
        platforms.append(platform)
    index_desc = cache.blobs.put_json(oci.image_index(manifests), oci.INDEX_TYPE)
    ref = f"{settings['repository']}:{spec.image_tag(info.version, info.revision)}"
    oci.write_archive(archive, cache.blobs, index_desc, ref, info.source_date_epoch)
    built = BuiltImage(archive, ref, index_desc.digest, tuple(platforms), info)
    log(
        f"{archive.relative_to(ROOT) if archive.is_relative_to(ROOT) else archive}: "
        f"{ref} index {index_desc.digest} in {time.monotonic() - started:.0f}s"
    )
    return built


@dataclass(frozen=True)
class _BuildInputs:
    """What every platform's image of one build shares."""

    source: Source
    source_digest: str  # source.digest, hashed once per build
    lock_file: Path
    lock_digest: str
    cache: oci.LayerCache
    project_wheel: Callable[[], Path]
    settings: Mapping[str, Any]


def _platform_image(
    inputs: _BuildInputs, target: spec.Platform
) -> tuple[PlatformImage, oci.Descriptor]:
    """One platform's layers (each from the cache when its key matches), config and manifest."""
    source, lock_file, lock_digest = inputs.source, inputs.lock_file, inputs.lock_digest
    cache, project_wheel, settings = inputs.cache, inputs.project_wheel, inputs.settings
    info, source_digest = source.info, inputs.source_digest
    arch = target.debian_arch
    rootfs, meta = ensure_base(arch)
    base_meta = {k: v for k, v in meta.items() if k != "created"}
    base_key = oci.key_of("base", base_meta, rootfs.stat().st_size, STABLE_EPOCH, SCRUBBED)
    base_layer = _layer(
        cache,
        f"{arch} base layer",
        base_key,
        functools.partial(_base_entries, rootfs),
    )
    wheels_key = oci.key_of(
        "wheels", arch, lock_digest, spec.pip_platform_args(target.machine), STABLE_EPOCH
    )
    wheels_layer = _layer(
        cache,
        f"{arch} wheels layer",
        wheels_key,
        functools.partial(_stage_wheels, arch, lock_file),
    )
    accounts = _read_account_files(rootfs)
    accounts_digest = hashlib.sha256(
        json.dumps({k: [v[0].hex(), *v[1:]] for k, v in sorted(accounts.items())}).encode()
    ).hexdigest()
    project_key = oci.key_of(
        "project",
        source_digest,
        accounts_digest,
        info.source_date_epoch,
        ENTRY_SCRIPT,
        account_lines(),
    )
    project_layer = _layer(
        cache,
        "project layer",
        project_key,
        functools.partial(_stage_project, project_wheel, accounts, info.source_date_epoch),
    )
    layers = (base_layer, wheels_layer, project_layer)
    history = [
        f"mmdebstrap --variant={spec.DEBIAN_VARIANT} --include="
        f"{','.join(sorted(spec.DEBIAN_PACKAGES))} {spec.DEBIAN_SUITE}",
        f"pip install --target /{spec.SITE_PACKAGES} --require-hashes "
        f"-r runtime_image/{lock_file.name}",
        f"edgemodel {info.version} ({info.revision}), user {spec.UID}:{spec.GID}",
    ]
    config = spec.runtime_config(
        target, info, [layer.diff_id for layer in layers], history, settings["title"]
    )
    config_desc = cache.blobs.put_json(config, oci.CONFIG_TYPE)
    manifest_desc = cache.blobs.put_json(oci.manifest(config_desc, list(layers)), oci.MANIFEST_TYPE)
    platform = PlatformImage(arch, manifest_desc.digest, config_desc.digest, layers)
    return platform, manifest_desc


def _go_build(arch: str, out_dir: Path) -> Path:
    """The static pause binary for `arch`, cached by (source, Go version, arch)."""
    require_tools(["go"])
    go_version = subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True
    ).stdout.strip()
    names = sorted(p.name for p in PAUSE_SOURCE.iterdir() if p.is_file())
    key = oci.key_of("pause", files_digest(PAUSE_SOURCE, names), go_version, arch)[:24]
    binary = out_dir / f"pause-{arch}-{key}"
    if binary.exists():
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        CGO_ENABLED="0",
        GOOS="linux",
        GOARCH=arch,
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
    )
    partial = binary.with_suffix(".partial")
    result = subprocess.run(
        [
            "go",
            "build",
            "-trimpath",
            "-buildvcs=false",
            "-ldflags=-s -w -buildid=",
            "-o",
            str(partial),
            ".",
        ],
        cwd=PAUSE_SOURCE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ImageBuildError(f"go build of the pause image ({arch}) failed:\n{result.stderr}")
    partial.rename(binary)
    return binary


def _stage_pause(binary: Path) -> Iterator[oci.Entry]:
    with tempfile.TemporaryDirectory(prefix="edgemodel-pause-") as temp:
        root = Path(temp)
        shutil.copy(binary, root / "pause")
        (root / "pause").chmod(0o755)
        yield from oci.entries_from_dir(root, STABLE_EPOCH)


def build_pause(
    arches: Sequence[str] = spec.DEFAULT_ARCHES,
    output: Path | None = None,
    layer_cache: Path | None = None,
) -> BuiltImage:
    """The pause image (a static Go program that sleeps until SIGTERM/SIGINT and reaps children)."""
    targets = [spec.platform(arch) for arch in arches]
    cache = oci.LayerCache(layer_cache or cache_root() / "oci")
    info = spec.ImageInfo(version=spec.PAUSE_TAG, revision="", source_date_epoch=STABLE_EPOCH)
    manifests: list[tuple[oci.Descriptor, dict[str, str]]] = []
    platforms: list[PlatformImage] = []
    for target in targets:
        binary = _go_build(target.debian_arch, cache_root() / "pause")
        layer = cache.build(
            oci.key_of("pause-layer", binary.name, STABLE_EPOCH),
            functools.partial(_stage_pause, binary),
        )
        config = {
            "created": info.created,
            "architecture": target.oci_arch,
            "os": "linux",
            **({"variant": target.variant} if target.variant else {}),
            "config": {
                "User": "65535:65535",
                "Entrypoint": ["/pause"],
                "Labels": {
                    "org.opencontainers.image.title": "edgemodel-pause",
                    "org.opencontainers.image.version": spec.PAUSE_TAG,
                },
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        config_desc = cache.blobs.put_json(config, oci.CONFIG_TYPE)
        manifest_desc = cache.blobs.put_json(oci.manifest(config_desc, [layer]), oci.MANIFEST_TYPE)
        manifests.append((manifest_desc, target.oci))
        platforms.append(
            PlatformImage(target.debian_arch, manifest_desc.digest, config_desc.digest, (layer,))
        )
    index_desc = cache.blobs.put_json(oci.image_index(manifests), oci.INDEX_TYPE)
    ref = f"{spec.PAUSE_REPOSITORY}:{spec.PAUSE_TAG}"
    archive = output or PAUSE_ARCHIVE
    oci.write_archive(archive, cache.blobs, index_desc, ref, STABLE_EPOCH)
    return BuiltImage(archive, ref, index_desc.digest, tuple(platforms), info)


def ensure_runtime_image(arches: Sequence[str] | None = None, variant: str = "cpu") -> BuiltImage:
    """The API for tests and fixtures: builds or re-assembles build/image/edgemodel-runtime."""
    return build_runtime(arches, variant)


def ensure_pause_image() -> BuiltImage:
    return build_pause()


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def report(built: BuiltImage, pause: BuiltImage | None) -> str:
    """The summary `make image` prints: sizes per platform, how to push and side-load."""
    relative = built.path.relative_to(ROOT) if built.path.is_relative_to(ROOT) else built.path
    repository, tag = built.ref.rsplit(":", 1)
    name = repository.rsplit("/", 1)[1]
    lines = [f"{relative}: {built.ref}", f"  index {built.index_digest}"]
    for image in built.platforms:
        lines.append(
            f"  linux/{image.arch}: {_mib(image.compressed_size)} compressed, "
            f"{_mib(image.uncompressed_size)} uncompressed ({image.manifest_digest})"
        )
    if pause is not None:
        lines.append(f"{pause.path.relative_to(ROOT)}: {pause.ref} index {pause.index_digest}")
    lines += [
        "push (any OCI registry):",
        f"  skopeo copy --all oci-archive:{relative} docker://REGISTRY/edgemodel/{name}:{tag}",
        "side-load on an air-gapped K3s node (k3s imports every *.tar there at start, all "
        "platforms, named by the archive's io.containerd.image.name annotation):",
        f"  scp {relative} NODE:/var/lib/rancher/k3s/agent/images/edgemodel-{name}.tar",
        f"  or on a running node: k3s ctr images import --all-platforms edgemodel-{name}.tar",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgemodel_sandbox.image.build")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="cpu")
    parser.add_argument("--arch", action="append", help="amd64 and/or arm64 (default: all)")
    parser.add_argument("--no-pause", action="store_true", help="skip the pause image")
    args = parser.parse_args(argv)
    try:
        built = build_runtime(args.arch, args.variant)
        pause = None if args.no_pause or args.variant != "cpu" else build_pause()
    except (ImageBuildError, spec.SpecError, lock.LockError, oci.OciError) as error:
        print(f"make image: {error}", file=sys.stderr)
        return 1
    print(report(built, pause))
    return 0


if __name__ == "__main__":
    sys.exit(main())
