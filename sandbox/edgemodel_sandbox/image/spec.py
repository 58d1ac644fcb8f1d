"""Owns the declaration of the runtime image: what it is made of and how it runs.

Pure data and pure functions. The builder (`build`) assembles exactly this; the Dockerfile test
holds runtime_image/Dockerfile to the same values, so the Docker path and the Docker-free path
describe one image. See docs/architecture.md ("Images without Docker").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgemodel_operator.timestamps import rfc3339
from edgemodel_sandbox.errors import EdgeModelSandboxError, FailureKind

DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"
# python3 in bookworm is 3.11: the wheels are resolved for exactly this interpreter.
DEBIAN_PACKAGES = ("ca-certificates", "python3")
PYTHON_VERSION = "3.11"
SITE_PACKAGES = f"usr/local/lib/python{PYTHON_VERSION}/dist-packages"
DEBIAN_MIRRORS = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
# Debian's documentation is not needed at run time (copyright files stay).
DPKG_PATH_EXCLUDES = (
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/doc/*",
    "/usr/share/lintian/*",
    "/usr/share/locale/*",
)
DPKG_PATH_INCLUDES = ("/usr/share/doc/*/copyright",)

USER_NAME = "edgemodel"
UID = 10001
GID = 10001
HOME = "/home/edgemodel"
ENTRYPOINT = ("edgemodel",)
CMD = ("--help",)
# Triton's default ports: HTTP, gRPC, metrics.
EXPOSED_PORTS = (8000, 8001, 8002)
ENV = (
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("PYTHONUNBUFFERED", "1"),
)
CONSOLE_SCRIPT = "usr/local/bin/edgemodel"
SHEBANG = "#!/usr/bin/python3"
LABEL_KEYS = (
    "org.opencontainers.image.source",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.version",
    "org.opencontainers.image.title",
    "org.opencontainers.image.licenses",
)
SOURCE_URL = "https://github.com/edgemodel/edgemodel"
IMAGE_TITLE = "edgemodel-runtime"
REPOSITORY = "edgemodel.local/runtime"
PAUSE_REPOSITORY = "edgemodel.local/pause"
PAUSE_TAG = "3.10"


@dataclass(frozen=True)
class Platform:
    """One target platform: its Debian, OCI, Go and manylinux names."""

    debian_arch: str
    oci_arch: str
    variant: str | None
    machine: str

    @property
    def oci(self) -> dict[str, str]:
        platform = {"architecture": self.oci_arch, "os": "linux"}
        if self.variant:
            platform["variant"] = self.variant
        return platform

    @property
    def name(self) -> str:
        return f"linux/{self.oci_arch}" + (f"/{self.variant}" if self.variant else "")


PLATFORMS: dict[str, Platform] = {
    "amd64": Platform("amd64", "amd64", None, "x86_64"),
    "arm64": Platform("arm64", "arm64", "v8", "aarch64"),
}
DEFAULT_ARCHES = ("amd64", "arm64")


class SpecError(EdgeModelSandboxError, ValueError):
    """A request the image spec cannot satisfy (unknown architecture, bad version...)."""

    failure = FailureKind.INVALID_INPUT


def platform(arch: str) -> Platform:
    """The platform for `arch` ('amd64', 'arm64', 'linux/arm64', 'aarch64' all accepted)."""
    name = arch.removeprefix("linux/").split("/")[0]
    for candidate in PLATFORMS.values():
        if name in (candidate.debian_arch, candidate.machine):
            return candidate
    raise SpecError(
        f"unknown architecture {arch!r}: the runtime image is built for {', '.join(PLATFORMS)}"
    )


def manylinux_tags(machine: str) -> list[str]:
    """pip --platform tags, newest first.

    The newer manylinux tags must be listed: with manylinux2014 alone pip silently resolves an
    old onnxruntime (1.16) for aarch64.
    """
    # bookworm's glibc is 2.36: every manylinux_2_N up to that runs on it.
    newer = [f"manylinux_2_{minor}_{machine}" for minor in (36, 35, 34, 31, 28, 27, 26, 24, 17)]
    return [*newer, f"manylinux2014_{machine}"]


def pip_platform_args(machine: str) -> list[str]:
    """Arguments that make `pip install`/`pip download` pick cp311 wheels for `machine`."""
    args = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    args += ["--abi", "cp" + PYTHON_VERSION.replace(".", ""), "--abi", "abi3", "--abi", "none"]
    for tag in manylinux_tags(machine):
        args += ["--platform", tag]
    return args


def pip_target_args(target: str, machine: str) -> list[str]:
    """Arguments that make `pip install` put cp311 wheels for `machine` into `target`."""
    return ["--target", target, *pip_platform_args(machine)]


def image_tag(version: str, revision: str) -> str:
    """`<version>-<12-char sha>`, with `-dirty` kept when the tree had uncommitted changes."""
    if not version:
        raise SpecError("project version is empty")
    sha = revision.removesuffix("-dirty")
    if not re.fullmatch(r"[0-9a-f]{12,64}", sha):
        raise SpecError(f"revision {revision!r} is not a git commit id")
    return f"{version}-{sha[:12]}" + ("-dirty" if revision.endswith("-dirty") else "")


@dataclass(frozen=True)
class ImageInfo:
    """The per-build values that go into labels and the config (version, commit, time)."""

    version: str
    revision: str
    source_date_epoch: int

    @property
    def created(self) -> str:
        return rfc3339(self.source_date_epoch)

    @property
    def ref(self) -> str:
        return f"{REPOSITORY}:{image_tag(self.version, self.revision)}"


def labels(info: ImageInfo, title: str = IMAGE_TITLE) -> dict[str, str]:
    return {
        "org.opencontainers.image.source": SOURCE_URL,
        "org.opencontainers.image.revision": info.revision,
        "org.opencontainers.image.version": info.version,
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }


def runtime_config(
    target: Platform, info: ImageInfo, diff_ids: list[str], history: list[str], title: str
) -> dict[str, Any]:
    """The OCI image config of the runtime image for one platform."""
    return {
        "created": info.created,
        "architecture": target.oci_arch,
        "os": "linux",
        **({"variant": target.variant} if target.variant else {}),
        "config": {
            "User": f"{UID}:{GID}",
            "Env": [f"{key}={value}" for key, value in ENV],
            "Entrypoint": list(ENTRYPOINT),
            "Cmd": list(CMD),
            "WorkingDir": HOME,
            "ExposedPorts": {f"{port}/tcp": {} for port in EXPOSED_PORTS},
            "Labels": labels(info, title),
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": info.created, "created_by": step} for step in history],
    }
