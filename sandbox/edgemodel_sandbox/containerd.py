"""Owns a containerd of the sandbox's own: its config, its process, and containers run in it.

Debian's containerd and runc, started with a config rendered here, so nothing is shared with a
system containerd: root, state, the gRPC socket and the log live under one directory the caller
gives. Two users: the image tests (import the runtime image's OCI archive, run it as the Helm
chart would: uid 10001, read-only root filesystem, no capabilities) and a real kubelet (the CRI
plugin is configured for it: cgroupfs, runc through `io.containerd.runc.v2`, a settable sandbox
image, CNI directories and registry credentials). See docs/architecture.md, "Real containers".

Decisions are pure functions returning dicts or text (the config, the OCI runtime spec, image
config lookups, the arm64 cpuinfo); `Containerd` drives `ctr` with them. Quirks of these
machines it encodes: no CAP_SYS_RESOURCE, so the CRI plugin must not lower oom_score_adj
(`restrict_oom_score_adj`) and specs carry no rlimits; containers of a foreign architecture
(arm64 under qemu-user through binfmt_misc) run under a small native init, because a qemu'd PID
1 does not act on signals, and see an arm64-looking /proc/cpuinfo, without which onnxruntime
crashes probing the CPU. Shim sockets land in /run/containerd/s whatever the config says:
`stop` removes only those of its own containers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform as host_platform
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemodel_sandbox import files
from edgemodel_sandbox.errors import EdgeModelSandboxError

SHIM_SOCKET_DIR = Path("/run/containerd/s")
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
DEFAULT_NAMESPACE = "edgemodel"
DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.6"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH = "/.edgemodel/init"
CPUINFO_PATH = "/.edgemodel/cpuinfo"
_CRI = 'plugins."io.containerd.grpc.v1.cri"'
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}
CONTAINER_NAME = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")  # containerd's own rule


class ContainerdError(EdgeModelSandboxError, RuntimeError):
    """containerd could not be started, stopped, or asked to do something."""


# --- the config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """A registry the CRI plugin pulls from: `host` is HOST:PORT, as image references name it."""

    host: str
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    plain_http: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", self.host):
            raise ValueError(f"registry host must be HOST or HOST:PORT, got {self.host!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError(f"registry {self.host}: give both username and password, or neither")
        if self.plain_http and (self.ca_file or self.insecure_skip_verify):
            raise ValueError(f"registry {self.host}: plain_http takes no TLS settings")


def _registry_config(registries: Sequence[Registry]) -> dict[str, Any] | None:
    """The CRI plugin's `registry` table (auth, TLS, endpoint per host); None without any."""
    configs: dict[str, Any] = {}
    mirrors: dict[str, Any] = {}
    for registry in registries:
        if registry.host in configs:
            raise ValueError(f"registry {registry.host} given twice")
        entry: dict[str, Any] = {}
        if registry.username is not None:
            entry["auth"] = {"username": registry.username, "password": registry.password}
        tls: dict[str, Any] = {}
        if registry.ca_file is not None:
            tls["ca_file"] = str(registry.ca_file)
        if registry.insecure_skip_verify:
            tls["insecure_skip_verify"] = True
        if tls:
            entry["tls"] = tls
        configs[registry.host] = entry
        scheme = "http" if registry.plain_http else "https"
        mirrors[registry.host] = {"endpoint": [f"{scheme}://{registry.host}"]}
    if not configs:
        return None
    return {"configs": configs, "mirrors": mirrors}


def containerd_config(
    directory: Path,
    *,
    snapshotter: str = "overlayfs",
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE,
    cni_bin_dir: str = CNI_BIN_DIR,
    cni_conf_dir: Path | None = None,
    registries: Sequence[Registry] = (),
    stream_server_port: int = 0,
) -> dict[str, Any]:
    """The config (version 2) of a containerd living under `directory`.

    Everything it writes is below `directory` (root, state, sockets, CRI network namespaces),
    except what runc's shim insists on (/run/containerd/s). The CRI plugin is set up for a
    kubelet with `cgroupDriver: cgroupfs` on a machine without CAP_SYS_RESOURCE.
    """
    if snapshotter not in ("overlayfs", "native"):
        raise ValueError(f"snapshotter must be overlayfs or native, got {snapshotter!r}")
    if not 0 <= stream_server_port <= 65535:
        raise ValueError(f"stream_server_port is not a TCP port: {stream_server_port}")
    if not directory.is_absolute():
        raise ValueError(f"containerd directory must be absolute, got {directory}")
    runc_options: dict[str, Any] = {
        "BinaryName": "runc",
        "SystemdCgroup": False,
        "Root": str(directory / "state" / "runc"),
    }
    cri: dict[str, Any] = {
        "sandbox_image": sandbox_image,
        "restrict_oom_score_adj": True,
        "disable_apparmor": True,
        "netns_mounts_under_state_dir": True,
        "stream_server_address": "127.0.0.1",
        "stream_server_port": str(stream_server_port),
        "enable_unprivileged_ports": False,
        "containerd": {
            "snapshotter": snapshotter,
            "default_runtime_name": "runc",
            "runtimes": {
                "runc": {"runtime_type": "io.containerd.runc.v2", "options": runc_options}
            },
        },
        "cni": {
            "bin_dir": cni_bin_dir,
            "conf_dir": str(cni_conf_dir or directory / "cni" / "net.d"),
        },
    }
    registry = _registry_config(registries)
    if registry:
        cri["registry"] = registry
    return {
        "version": 2,
        "root": str(directory / "root"),
        "state": str(directory / "state"),
        "oom_score": 0,
        "grpc": {"address": str(directory / "containerd.sock")},
        "ttrpc": {"address": str(directory / "containerd.sock.ttrpc")},
        "debug": {"address": str(directory / "debug.sock"), "level": "info"},
        "metrics": {"address": ""},
        "plugins": {
            "io.containerd.grpc.v1.cri": cri,
            "io.containerd.internal.v1.opt": {"path": str(directory / "opt")},
        },
    }


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for these characters
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise ValueError(f"{where}: cannot write {type(value).__name__} to TOML")


def render_toml(data: Mapping[str, Any]) -> str:
    """TOML text for nested dicts of str/int/float/bool/lists: scalars first, then tables.

    Tables are written with dotted headers (`[a."b.c".d]`); an empty table still gets its
    header, so that `{"auth": {}}` survives a round trip.
    """
    lines: list[str] = []

    def table(path: list[str], body: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in body.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in body.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        for key, value in scalars:
            if value is None:
                raise ValueError(f"{'.'.join([*path, key])}: None has no TOML form")
            lines.append(f"{_toml_key(key)} = {_toml_value(value, '.'.join([*path, key]))}")
        for key, value in tables:
            table([*path, key], value)

    table([], data)
    return "\n".join(lines) + "\n"


# --- images ----------------------------------------------------------------------------------


def host_arch() -> str:
    """The Go/OCI name of this machine's architecture (amd64, arm64)."""
    machine = host_platform.machine()
    if machine not in _GO_ARCH:
        raise ContainerdError(f"unsupported host architecture {machine!r}")
    return _GO_ARCH[machine]


def parse_platform(text: str) -> tuple[str, str]:
    """`linux/arm64` -> ("linux", "arm64"); a bare `arm64` means linux."""
    parts = text.split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    if len(parts) not in (2, 3) or parts[0] != "linux" or parts[1] not in ("amd64", "arm64"):
        raise ValueError(f"platform must be linux/amd64 or linux/arm64, got {text!r}")
    return parts[0], parts[1]


def select_manifest(index: Mapping[str, Any], platform: str) -> dict[str, Any]:
    """The descriptor in an OCI index (or Docker manifest list) for `platform`."""
    os_name, arch = parse_platform(platform)
    found = [
        m
        for m in index.get("manifests", [])
        if m.get("platform", {}).get("os") == os_name
        and m.get("platform", {}).get("architecture") == arch
    ]
    if not found:
        have = sorted(
            f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
            for m in index.get("manifests", [])
        )
        raise ContainerdError(f"image has no {os_name}/{arch} manifest (it has {have})")
    return dict(found[0])


def archive_ref_names(archive: Path) -> list[str]:
    """The names an OCI archive's index.json gives its images (`org.opencontainers...ref.name`)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ContainerdError(f"{archive}: no index.json (not an OCI archive)")
        index = json.load(member)
    names = [
        m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        for m in index.get("manifests", [])
    ]
    return [n for n in names if n]


def resolve_user(user: str, passwd: str, group: str) -> tuple[int, int]:
    """An image/pod `user` (`uid`, `uid:gid`, `name`, `name:group`) as numeric ids.

    Names are looked up in the rootfs's /etc/passwd and /etc/group text; a numeric uid that is
    not in /etc/passwd gets gid = uid's group from the file or 0, as runc does.
    """
    if not user:
        return 0, 0
    name, _, grp = user.partition(":")
    users = {}
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            users[fields[0]] = (int(fields[2]), int(fields[3]))
    groups = {}
    for line in group.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            groups[fields[0]] = int(fields[2])
    if name.isdigit():
        uid = int(name)
        gid = next((g for u, g in users.values() if u == uid), 0)
    elif name in users:
        uid, gid = users[name]
    else:
        raise ContainerdError(f"user {name!r} is not in the image's /etc/passwd")
    if grp:
        if grp.isdigit():
            gid = int(grp)
        elif grp in groups:
            gid = groups[grp]
        else:
            raise ContainerdError(f"group {grp!r} is not in the image's /etc/group")
    return uid, gid


def arm64_cpuinfo(cpus: int) -> str:
    """A /proc/cpuinfo as an arm64 (Cortex-A72-like) kernel writes it, one block per CPU.

    qemu-user passes the host's x86 /proc/cpuinfo through; onnxruntime >= 1.32 parses it to
    pick kernels on arm64 and crashes on x86 text. Bind-mounted over /proc/cpuinfo.
    """
    if cpus < 1:
        raise ValueError(f"cpus must be at least 1, got {cpus}")
    block = (
        "processor\t: {n}\n"
        "BogoMIPS\t: 108.00\n"
        "Features\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\n"
        "CPU architecture: 8\n"
        "CPU variant\t: 0x0\n"
        "CPU part\t: 0xd08\n"
        "CPU revision\t: 3\n"
    )
    return "\n".join(block.format(n=n) for n in range(cpus)) + "\n"


# --- the OCI runtime spec --------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path into the container (read-only unless said otherwise)."""

    source: Path
    destination: str
    read_only: bool = True

    def spec(self) -> dict[str, Any]:
        options = ["rbind", "ro" if self.read_only else "rw", "nosuid", "nodev"]
        return {
            "destination": self.destination,
            "type": "bind",
            "source": str(self.source),
            "options": options,
        }


MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _base_mounts() -> list[dict[str, Any]]:
    """/proc, /dev (pts, shm, mqueue) and a read-only /sys and cgroup, as runc's default spec."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]  # fmt: skip


def _join_network(
    network: str | Path, namespaces: list[dict[str, str]], spec_mounts: list[dict[str, Any]]
) -> None:
    """Add what `network` ("host", "none" or a namespace path) needs to the spec's lists."""
    if network == "host":
        for etc in ("/etc/hosts", "/etc/resolv.conf"):
            if Path(etc).exists():
                spec_mounts.append(Mount(Path(etc), etc).spec())
    elif network == "none":
        namespaces.append({"type": "network"})
    else:
        namespaces.append({"type": "network", "path": str(network)})


def container_spec(
    *,
    name: str,
    rootfs: Path,
    args: Sequence[str],
    env: Sequence[str],
    cwd: str,
    uid: int,
    gid: int,
    cgroups_path: str,
    read_only: bool = True,
    network: str | Path = "host",
    mounts: Sequence[Mount] = (),
    tmpfs: Sequence[str] = (),
    capabilities: Sequence[str] = (),
) -> dict[str, Any]:
    """An OCI runtime spec (the config.json runc reads) for one container.

    As the Helm chart runs the runtime image: no capabilities unless listed, no new
    privileges, no rlimits (this machine may not raise them, and lowering is no one's need),
    the default masked and read-only /proc paths. `network`: "host" (the host's network
    namespace, with its /etc/hosts and /etc/resolv.conf), "none" (a new, empty namespace), or
    the path of an existing namespace to join.
    """
    if not args:
        raise ValueError(f"container {name}: no command (the image has none and none was given)")
    if not cwd.startswith("/"):
        raise ValueError(f"container {name}: cwd must be absolute, got {cwd!r}")
    for cap in capabilities:
        if not re.fullmatch(r"CAP_[A-Z_]+", cap):
            raise ValueError(f"container {name}: not a capability name: {cap!r}")
    namespaces: list[dict[str, str]] = [
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
    ]  # fmt: skip
    spec_mounts = _base_mounts()
    _join_network(network, namespaces, spec_mounts)
    for path in tmpfs:
        spec_mounts.append(
            {"destination": path, "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=262144k"]}
        )  # fmt: skip
    spec_mounts.extend(m.spec() for m in mounts)
    caps = list(capabilities)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": list(args),
            "env": list(env),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": read_only},
        "hostname": name,
        "mounts": spec_mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }


def merge_env(image_env: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The image's environment with `env` laid over it (PATH defaulted as containerd does)."""
    merged: dict[str, str] = {"PATH": DEFAULT_PATH}
    for item in image_env:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.update(env)
    return [f"{k}={v}" for k, v in merged.items()]


def shim_socket(address: Path, namespace: str, container: str) -> Path:
    """Where containerd 1.6's runc v2 shim puts its socket for one container (fixed dir)."""
    digest = hashlib.sha256(f"{address}/{namespace}/{container}".encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


# --- the init for emulated containers --------------------------------------------------------

_INIT_GO = """\
// A minimal init: runs its arguments as a child, forwards signals to it, reaps every
// zombie, and exits as the child did. Native to the host, so it acts on signals as PID 1
// even when the child is an emulated (qemu-user) binary. Built by edgemodel_sandbox.containerd.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "init: no command")
		os.Exit(2)
	}
	signals := make(chan os.Signal, 32)
	signal.Notify(signals)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "init: %v\\n", err)
		os.Exit(127)
	}
	child := cmd.Process.Pid
	for sig := range signals {
		s, ok := sig.(syscall.Signal)
		if !ok || s == syscall.SIGURG {
			continue
		}
		if s != syscall.SIGCHLD {
			_ = syscall.Kill(child, s)
			continue
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if pid == child {
				if status.Signaled() {
					os.Exit(128 + int(status.Signal()))
				}
				os.Exit(status.ExitStatus())
			}
		}
	}
}
"""


def cache_dir() -> Path:
    return files.cache_dir("containerd")


def ensure_init() -> Path:
    """The static init binary for this host, built with Go on first use and cached."""
    tag = hashlib.sha256(_INIT_GO.encode()).hexdigest()[:12]
    binary = cache_dir() / f"init-{host_arch()}-{tag}"
    if binary.exists():
        return binary
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if Path(p).exists()), None
    )
    if go is None:
        raise ContainerdError("Go is needed to build the container init (go not on PATH)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgemodel-init-") as work:
        Path(work, "go.mod").write_text("module edgemodel.local/init\n\ngo 1.21\n")
        Path(work, "main.go").write_text(_INIT_GO)
        env = {**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": host_arch(),
               "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}  # fmt: skip
        tmp = binary.with_name(f".{binary.name}.{os.getpid()}")
        result = subprocess.run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."],
            cwd=work, env=env, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            raise ContainerdError(f"building the container init failed:\n{result.stderr}")
        os.replace(tmp, binary)
    return binary


# --- the daemon ------------------------------------------------------------------------------


def overlayfs_works(directory: Path) -> bool:
    """Whether an overlay mount can be made on the filesystem holding `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".overlay-probe-") as probe:
        base = Path(probe)
        for part in ("lower", "upper", "work", "merged"):
            (base / part).mkdir()
        (base / "lower" / "x").write_text("x")
        options = f"lowerdir={base / 'lower'},upperdir={base / 'upper'},workdir={base / 'work'}"
        made = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(base / "merged")],
            capture_output=True, check=False,
        ).returncode == 0  # fmt: skip
        if made:
            ok = (base / "merged" / "x").exists()
            subprocess.run(["umount", str(base / "merged")], check=False, capture_output=True)
            return ok
    return False


@dataclass(frozen=True)
class ContainerOptions:
    """How `Containerd.run` runs a container; the defaults are how the Helm chart runs ours.

    `user` (`uid`, `uid:gid` or names) overrides the image's. `network`: "host", "none" or a
    network namespace path. A foreign `platform` (linux/arm64 on amd64) runs emulated through
    binfmt_misc, which the caller registers: it gets the native init (unless `init=False`)
    and, for arm64, an arm64 /proc/cpuinfo.
    """

    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    platform: str | None = None
    read_only: bool = True
    network: str | Path = "host"
    mounts: Sequence[Mount] = ()
    tmpfs: Sequence[str] = ()
    capabilities: Sequence[str] = ()
    cwd: str | None = None
    init: bool | None = None


@dataclass
class Container:
    """A container run by `Containerd.run`: its name, bundle folder and log file."""

    name: str
    namespace: str
    bundle: Path
    log: Path
    platform: str
    cgroups_path: str

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"


@dataclass
class Containerd:
    """One containerd process with its root, state, socket and log under `directory`.

    `start()` renders the config, starts the daemon and waits for its socket; `stop()` removes
    every container it ran, stops the daemon and its shims, unmounts what is mounted below
    `directory` and removes root and state. Usable as a context manager.
    """

    directory: Path
    namespace: str = DEFAULT_NAMESPACE
    snapshotter: str = "auto"
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    cni_conf_dir: Path | None = None
    registries: Sequence[Registry] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    containers: dict[str, Container] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()

    @property
    def address(self) -> Path:
        return self.directory / "containerd.sock"

    @property
    def config_path(self) -> Path:
        return self.directory / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.directory / "containerd.log"

    def config(self) -> dict[str, Any]:
        snapshotter = self.snapshotter
        if snapshotter == "auto":
            snapshotter = "overlayfs" if overlayfs_works(self.directory) else "native"
            self.snapshotter = snapshotter
        return containerd_config(
            self.directory,
            snapshotter=snapshotter,
            sandbox_image=self.sandbox_image,
            cni_conf_dir=self.cni_conf_dir,
            registries=self.registries,
        )

    # -- lifecycle --

    def start(self, timeout: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if os.geteuid() != 0:
            raise ContainerdError("containerd needs root")
        if self.daemon_pids():  # left by a process that died: it would answer in our stead
            self.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_toml(self.config()))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["containerd", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ContainerdError(
                    f"containerd exited with {self.process.returncode}:\n{self._log_tail()}"
                )
            if self.address.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise ContainerdError(f"containerd not answering after {timeout}s:\n{self._log_tail()}")

    def __enter__(self) -> Containerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def ctr(
        self,
        *args: str,
        namespace: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `ctr` against this containerd; a failure raises with ctr's stderr."""
        command = ["ctr", "-a", str(self.address), "-n", namespace or self.namespace, *args]
        if not self.address.exists():  # ctr would wait 10 s to dial nothing
            if check:
                raise ContainerdError(f"{' '.join(command)}: containerd is not running")
            return subprocess.CompletedProcess(command, 1, "", "containerd is not running")
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise ContainerdError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        return result

    def stop(self, timeout: float = 20.0, purge: bool = True) -> None:
        """Leave nothing behind: containers, tasks, shims, mounts, cgroups, state and root.

        Also cleans up after an earlier process that died holding this directory: a daemon
        still running with this config is asked for its containers, then stopped.
        `purge=False` keeps root (content store and unpacked snapshots) for the next start:
        removing an unpacked runtime image for both platforms takes tens of seconds here.
        """
        known = {(c.namespace, c.name) for c in self.containers.values()}
        if self.address.exists() and self.ctr("version", check=False, timeout=10).returncode == 0:
            for namespace in self._namespaces():
                for name in self._container_names(namespace):
                    known.add((namespace, name))
                    with contextlib.suppress(ContainerdError, subprocess.TimeoutExpired):
                        self.delete(name, namespace=namespace)
        for container in list(self.containers.values()):
            self._release(container)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        _end_processes(self.daemon_pids(), timeout)
        self._kill_shims()
        for namespace, name in known:  # a killed shim leaves its socket and cgroup behind
            with contextlib.suppress(FileNotFoundError):
                shim_socket(self.address, namespace, name).unlink()
            _remove_cgroup(f"/{namespace}/{name}")
        self._unmount_below(self.directory)
        if self.mounts():  # never delete through a mount
            raise ContainerdError(f"still mounted below {self.directory}: {self.mounts()}")
        for part in ("state", "bundles", "opt", *(("root",) if purge else ())):
            shutil.rmtree(self.directory / part, ignore_errors=True)
        for name in ("containerd.sock", "containerd.sock.ttrpc", "debug.sock"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()

    def daemon_pids(self) -> list[int]:
        """containerd processes running with this directory's config (ours or a stale one)."""
        wanted = [b"containerd", b"--config", str(self.config_path).encode()]
        return [pid for pid, argv in _processes() if argv[:3] == wanted]

    def _namespaces(self) -> list[str]:
        result = self.ctr("namespaces", "ls", "-q", check=False)
        names = result.stdout.split() if result.returncode == 0 else []
        return sorted(set(names) | {self.namespace})

    def _container_names(self, namespace: str) -> list[str]:
        result = self.ctr("containers", "ls", "-q", namespace=namespace, check=False)
        return result.stdout.split() if result.returncode == 0 else []

    def _kill_shims(self) -> None:
        """SIGKILL the shims started for this containerd (their command line names its socket)."""
        for pid in self.shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.shim_pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def shim_pids(self) -> list[int]:
        """The shim processes serving this containerd (found by `-address SOCKET`)."""
        address = str(self.address).encode()
        pids = []
        for pid, argv in _processes():
            if argv[0].endswith(b"containerd-shim-runc-v2") and b"-address" in argv:
                at = argv.index(b"-address")
                if argv[at + 1 : at + 2] == [address]:
                    pids.append(pid)
        return pids

    def mounts(self) -> list[str]:
        """Mount points below this containerd's directory (from /proc/self/mountinfo)."""
        return _mounts_below(self.directory)

    @staticmethod
    def _unmount_below(directory: Path) -> None:
        for target in sorted(_mounts_below(directory), key=len, reverse=True):
            subprocess.run(["umount", target], check=False, capture_output=True)
        for target in sorted(_mounts_below(directory), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)

    # -- images --

    def import_image(
        self, archive: Path, all_platforms: bool = True, namespace: str | None = None
    ) -> list[str]:
        """Import an OCI (or docker-save) archive; returns the image names it brought.

        Into this containerd's namespace unless told otherwise (the CRI plugin, hence a
        kubelet, sees only namespace `k8s.io`).
        """
        if not archive.is_file():
            raise ContainerdError(f"no image archive at {archive}")
        before = set(self.image_names(namespace))
        args = ["images", "import"]
        if all_platforms:
            args.append("--all-platforms")
        self.ctr(*args, str(archive), namespace=namespace, timeout=900)
        after = self.image_names(namespace)
        with contextlib.suppress(tarfile.TarError, ContainerdError, KeyError):
            named = set(archive_ref_names(archive))
            return sorted(r for r in after if r not in before or r in named)
        return sorted(set(after) - before)

    def image_names(self, namespace: str | None = None) -> list[str]:
        return self.ctr("images", "ls", "-q", namespace=namespace).stdout.split()

    def _content(self, digest: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ctr("content", "get", digest).stdout)
        return data

    def image_config(self, ref: str, platform: str | None = None) -> dict[str, Any]:
        """The OCI image config (`{"architecture", "config": {Env, Entrypoint, ...}, ...}`)."""
        platform = platform or f"linux/{host_arch()}"
        rows = [line.split() for line in self.ctr("images", "ls").stdout.splitlines()[1:]]
        target = next((row[2] for row in rows if row and row[0] == ref), None)
        if target is None:
            raise ContainerdError(f"no image {ref!r} in namespace {self.namespace}")
        document = self._content(target)
        if "manifests" in document:
            document = self._content(select_manifest(document, platform)["digest"])
        return self._content(document["config"]["digest"])

    # -- containers --

    def run(self, name: str, ref: str, args: Sequence[str] | None = None, **how: Any) -> Container:
        """Run `ref` detached as container `name`; returns once its process started.

        Its output goes to `Container.log` (see `logs`). `how` is `ContainerOptions`' fields:
        env, user, platform, read_only, network, mounts, tmpfs, capabilities, cwd, init.
        """
        container, config = self._prepare(name, ref, args, ContainerOptions(**how))
        try:
            self.ctr(
                "run", "-d", "--config", str(config), *self._runc_flags(),
                "--log-uri", f"file://{container.log}", name,
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(Exception):
                self.delete(name)
            raise
        return container

    def call(
        self,
        name: str,
        ref: str,
        args: Sequence[str] | None = None,
        timeout: float = 300.0,
        **how: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run `ref` to completion (like `run`, in the foreground) and remove it after.

        Returns the container's exit status, stdout and stderr (as `ctr run` relays them).
        """
        _, config = self._prepare(name, ref, args, ContainerOptions(**how))
        try:
            return self.ctr(
                "run", "--config", str(config), *self._runc_flags(), name,
                check=False, timeout=timeout,
            )  # fmt: skip
        finally:
            self.delete(name)

    def _runc_flags(self) -> list[str]:
        state = self.directory / "state"
        return ["--runc-root", str(state / "runc"), "--fifo-dir", str(state / "fifo")]

    def _prepare(
        self, name: str, ref: str, args: Sequence[str] | None, how: ContainerOptions
    ) -> tuple[Container, Path]:
        """Mount the image's rootfs for `how.platform` and write the container's spec."""
        if not CONTAINER_NAME.fullmatch(name):
            raise ValueError(
                f"container name must be words of [A-Za-z0-9] joined by one of ._-, got {name!r}"
            )
        if name in self.containers:
            raise ContainerdError(f"container {name} already runs here")
        platform = how.platform or f"linux/{host_arch()}"
        _, arch = parse_platform(platform)
        foreign = arch != host_arch()
        image = self.image_config(ref, platform).get("config") or {}
        bundle = self.directory / "bundles" / name
        shutil.rmtree(bundle, ignore_errors=True)
        (bundle / "rootfs").mkdir(parents=True)
        container = Container(
            name, self.namespace, bundle, bundle / "output.log", platform,
            f"/{self.namespace}/{name}",
        )  # fmt: skip
        self.containers[name] = container
        try:
            self.ctr("images", "mount", "--rw", "--platform", platform, ref, str(container.rootfs))
            rootfs = container.rootfs
            uid, gid = resolve_user(
                how.user if how.user is not None else image.get("User", ""),
                _read(rootfs / "etc" / "passwd"),
                _read(rootfs / "etc" / "group"),
            )
            command = list(args) if args is not None else [
                *(image.get("Entrypoint") or []), *(image.get("Cmd") or []),
            ]  # fmt: skip
            extra = list(how.mounts)
            if how.init if how.init is not None else foreign:
                extra.append(Mount(ensure_init(), INIT_PATH))
                command = [INIT_PATH, "--", *command]
            if foreign and arch == "arm64":
                cpuinfo = bundle / "cpuinfo"
                cpuinfo.write_text(arm64_cpuinfo(os.cpu_count() or 1))
                extra.append(Mount(cpuinfo, "/proc/cpuinfo"))
            spec = container_spec(
                name=name,
                rootfs=rootfs,
                args=command,
                env=merge_env(image.get("Env") or [], how.env),
                cwd=how.cwd or image.get("WorkingDir") or "/",
                uid=uid,
                gid=gid,
                cgroups_path=container.cgroups_path,
                read_only=how.read_only,
                network=how.network,
                mounts=extra,
                tmpfs=how.tmpfs,
                capabilities=how.capabilities,
            )
            config = bundle / "config.json"
            config.write_text(json.dumps(spec, indent=1))
        except BaseException:
            with contextlib.suppress(Exception):
                self.delete(name)
            raise
        return container, config

    def status(self, name: str, namespace: str | None = None) -> str:
        """RUNNING, STOPPED, CREATED, PAUSED... or "" when the container has no task."""
        result = self.ctr("tasks", "ls", namespace=namespace, check=False)
        for line in result.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == name:
                return fields[2]
        return ""

    def pid(self, name: str) -> int:
        for line in self.ctr("tasks", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == name:
                return int(fields[1])
        raise ContainerdError(f"container {name} has no task")

    def exec(
        self, name: str, *args: str, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a running container (as its user, in its namespaces)."""
        exec_id = f"exec-{os.getpid()}-{time.monotonic_ns()}"
        fifo = str(self.directory / "state" / "fifo")
        return self.ctr(
            "tasks", "exec", "--fifo-dir", fifo, "--exec-id", exec_id, name, *args,
            check=False, timeout=timeout,
        )  # fmt: skip

    def logs(self, name: str) -> str:
        container = self.containers.get(name)
        if container is None or not container.log.exists():
            return ""
        return container.log.read_text(errors="replace")

    def kill(self, name: str, sig: str = "SIGTERM", namespace: str | None = None) -> None:
        self.ctr("tasks", "kill", "--all", "-s", sig, name, namespace=namespace, check=False)

    def wait(self, name: str, timeout: float = 30.0, namespace: str | None = None) -> bool:
        """Whether the container's task stopped within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(name, namespace) in ("STOPPED", ""):
                return True
            time.sleep(0.1)
        return False

    def delete(self, name: str, namespace: str | None = None, grace: float = 10.0) -> None:
        """Stop (SIGTERM, then SIGKILL after `grace`) and remove a container and its rootfs."""
        if self.status(name, namespace) not in ("STOPPED", ""):
            self.kill(name, "SIGTERM", namespace)
            if not self.wait(name, grace, namespace):
                self.kill(name, "SIGKILL", namespace)
                self.wait(name, 10.0, namespace)
        self.ctr("tasks", "delete", "--force", name, namespace=namespace, check=False)
        self.ctr("containers", "delete", name, namespace=namespace, check=False)
        container = self.containers.get(name)
        if container is not None and container.namespace == (namespace or self.namespace):
            self._release(container)

    def _release(self, container: Container) -> None:
        """Unmount and remove a container's rootfs snapshot, bundle, cgroups and shim socket."""
        if _mounts_below(container.rootfs):
            result = self.ctr(
                "images", "unmount", "--rm", str(container.rootfs),
                namespace=container.namespace, check=False,
            )  # fmt: skip
            if result.returncode != 0:
                self._unmount_below(container.rootfs)
        _remove_cgroup(container.cgroups_path)
        with contextlib.suppress(FileNotFoundError):
            shim_socket(self.address, container.namespace, container.name).unlink()
        shutil.rmtree(container.bundle, ignore_errors=True)
        self.containers.pop(container.name, None)


def _processes() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process that has a command line."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
                if argv and argv[0]:
                    yield int(entry.name), argv


def _end_processes(pids: Sequence[int], timeout: float) -> None:
    """SIGTERM, then SIGKILL whatever is left after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_cgroup(path: str, timeout: float = 5.0) -> None:
    """Remove cgroup `path` (cgroupsPath form, /namespace/name) in every hierarchy, then its
    parent if empty. Processes still in it (a shim killed before its container) are killed."""
    parts = path.strip("/").split("/")
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for leaf in (c.joinpath(*parts) for c in Path("/sys/fs/cgroup").glob("*")):
            if not leaf.is_dir():
                continue
            with contextlib.suppress(OSError, ValueError):
                for pid in (leaf / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            try:
                leaf.rmdir()
            except OSError:
                left.append(leaf)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for controller in Path("/sys/fs/cgroup").glob("*"):
        for depth in range(len(parts) - 1, 0, -1):
            with contextlib.suppress(OSError):
                controller.joinpath(*parts[:depth]).rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _mounts_below(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            target = line.split()[4].replace("\\040", " ")
            if target == str(directory) or target.startswith(prefix):
                found.append(target)
    return found


@contextlib.contextmanager
def running(directory: Path, **settings: Any) -> Iterator[Containerd]:
    """A started containerd under `directory`, stopped (and cleaned) on the way out."""
    daemon = Containerd(directory, **settings)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
