"""Owns the pure translation of a pod spec into a local launch plan.

Given a pod, its IP and the host folders of its volumes, `plan_pod` decides for every
container what the kubelet would: the process's argv (the runtime image's `edgemodel`
entrypoint becomes this interpreter's `edgemodel_cli.main`; Triton's `tritonserver` becomes
the PyPI wheel's binary; any other image cannot run here), its environment (values,
fieldRef, resourceFieldRef, configMap/secret references, `$(VAR)` expansion as the kubelet
does it), container paths rewritten to host folders, its probes, and the cluster DNS names
to resolve at start. No I/O: the caller gathers objects and folders, then applies the plan.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from edgemodel_operator import quantity
from edgemodel_sandbox.runner import dns

RUNTIME_IMAGE_PREFIX = "ghcr.io/edgemodel/runtime"
TRITON_IMAGE_PREFIX = "nvcr.io/nvidia/tritonserver"
NOT_RUNNABLE = "ImageNotRunnableInSandbox"
CONFIG_ERROR = "CreateContainerConfigError"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


@dataclass(frozen=True)
class Triton:
    """Where the nvidia-pytriton wheel keeps its tritonserver binary and backends."""

    binary: str
    backends: str


@dataclass(frozen=True)
class Probe:
    """One probe, with ports resolved to numbers and paths to host folders."""

    kind: str  # "http", "tcp" or "exec"
    host: str = ""
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True)
class ContainerPlan:
    """How to run one container here, or why it cannot run."""

    name: str
    image: str
    init: bool
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = ""
    termination_file: str = ""
    fallback_to_logs: bool = False
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    services: tuple[dns.ServiceRef, ...] = ()
    # Set when the container cannot start: it stays Waiting with this reason and message.
    waiting_reason: str = ""
    waiting_message: str = ""

    @property
    def runnable(self) -> bool:
        return not self.waiting_reason


@dataclass(frozen=True)
class PodPlan:
    """Every container of a pod, init containers first, in spec order."""

    init_containers: tuple[ContainerPlan, ...]
    containers: tuple[ContainerPlan, ...]
    restart_policy: str
    grace_seconds: float


@dataclass(frozen=True)
class Layout:
    """Host folders of one pod (all absolute)."""

    pod_dir: str
    python: str
    triton: Triton | None
    base_env: Mapping[str, str] = field(default_factory=dict)

    def container_dir(self, name: str) -> str:
        return posixpath.join(self.pod_dir, "containers", name)


# ------------------------------------------------------------------ $(VAR) expansion


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: `$$` escapes, unknown references stay as written."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char != "$" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(mapping.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append(char + nxt)
            i += 2
    return "".join(out)


# ------------------------------------------------------------------ paths


@dataclass(frozen=True)
class Mount:
    """A container path and the host path it stands for."""

    container_path: str
    host_path: str


# A container path starts a token, or follows `=`, `,` or a file:// scheme.
_PATH_PREFIX = r"(?:(?<=^)|(?<==)|(?<=,)|(?<=file://))"


def rewrite_paths(text: str, mounts: Sequence[Mount]) -> str:
    """Replace container paths in `text` by host paths; the longest mount path wins."""
    ordered = sorted((m for m in mounts if m.container_path), key=lambda m: -len(m.container_path))
    if not ordered:
        return text
    alternatives = "|".join(re.escape(m.container_path.rstrip("/") or "/") for m in ordered)
    by_path = {m.container_path.rstrip("/") or "/": m.host_path for m in ordered}
    pattern = re.compile(_PATH_PREFIX + f"({alternatives})(?=/|$|[,:;\\s\"'])")

    def replace(match: re.Match[str]) -> str:
        return by_path[match.group(1)]

    return pattern.sub(replace, text)


def container_mounts(
    container: Mapping[str, Any], volume_dirs: Mapping[str, str]
) -> tuple[list[Mount], list[str]]:
    """Mounts of a container (subPath applied) and the volumes it names that are missing."""
    mounts: list[Mount] = []
    missing: list[str] = []
    for mount in container.get("volumeMounts") or []:
        host = volume_dirs.get(mount.get("name", ""))
        if host is None:
            missing.append(str(mount.get("name")))
            continue
        sub = str(mount.get("subPath") or "").strip("/")
        mounts.append(
            Mount(
                str(mount["mountPath"]).rstrip("/") or "/",
                posixpath.join(host, sub) if sub else host,
            )
        )
    return mounts, missing


# ------------------------------------------------------------------ env


class _ConfigError(Exception):
    """A reference the container's configuration needs cannot be satisfied."""


def field_value(pod: Mapping[str, Any], path: str, pod_ip: str) -> str:
    """The value of a downward-API fieldRef, as the kubelet resolves it."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise _ConfigError(f"unsupported fieldRef {path!r}")


def parse_quantity(text: str) -> float:
    """A resource quantity as the operator reads it (`edgemodel_operator.quantity`)."""
    try:
        return float(quantity.parse_quantity(str(text)))
    except ValueError:
        raise _ConfigError(f"bad quantity {text!r}") from None


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """resourceFieldRef: limits/requests of cpu or memory, rounded up by the divisor."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if raw is None:
        # The kubelet reports node allocatable for a missing limit; these are the sandbox's.
        raw = "2" if name == "cpu" else "8Gi"
    return str(max(1, math.ceil(parse_quantity(str(raw)) / divisor - 1e-9)))


def _object_key(source: Mapping[str, Any], kind: str) -> tuple[str, str]:
    return kind, str(source.get("name", ""))


SERVICE_ACCOUNT_TOKEN = "serviceaccounttoken"


def service_account(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def wants_token(pod: Mapping[str, Any]) -> bool:
    """Whether a projected volume asks for the pod's service-account token."""
    return any(
        "serviceAccountToken" in source
        for volume in (pod.get("spec") or {}).get("volumes") or []
        for source in (volume.get("projected") or {}).get("sources") or []
    )


def referenced_objects(pod: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret the pod's env and volumes read."""
    refs: set[tuple[str, str]] = set()
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        refs |= _env_references(container)
    for volume in spec.get("volumes") or []:
        refs |= _volume_references(volume)
    return refs


def _env_references(container: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of the ConfigMaps and Secrets a container's envFrom and env read."""
    refs: set[tuple[str, str]] = set()
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            refs.add(_object_key(source["configMapRef"], "configmaps"))
        if "secretRef" in source:
            refs.add(_object_key(source["secretRef"], "secrets"))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "configMapKeyRef" in value_from:
            refs.add(_object_key(value_from["configMapKeyRef"], "configmaps"))
        if "secretKeyRef" in value_from:
            refs.add(_object_key(value_from["secretKeyRef"], "secrets"))
    return refs


def _volume_references(volume: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of the ConfigMaps and Secrets one volume (projected ones too) reads."""
    refs: set[tuple[str, str]] = set()
    if "configMap" in volume:
        refs.add(_object_key(volume["configMap"], "configmaps"))
    if "secret" in volume:
        refs.add(("secrets", str(volume["secret"].get("secretName", ""))))
    for source in (volume.get("projected") or {}).get("sources") or []:
        if "configMap" in source:
            refs.add(_object_key(source["configMap"], "configmaps"))
        if "secret" in source:
            refs.add(_object_key(source["secret"], "secrets"))
    return refs


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    objects: Mapping[tuple[str, str], Mapping[str, str]],
) -> dict[str, str]:
    """The container's environment in the kubelet's order: envFrom, then env, each expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        _add_env_from(env, source, objects)
    for var in container.get("env") or []:
        name = str(var["name"])
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        value_from = var["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_value(pod, str(value_from["fieldRef"]["fieldPath"]), pod_ip)
        elif "resourceFieldRef" in value_from:
            env[name] = resource_value(container, value_from["resourceFieldRef"])
        else:
            value = _key_ref_value(value_from, objects)
            if value is not None:
                env[name] = value
    return env


def _add_env_from(
    env: dict[str, str],
    source: Mapping[str, Any],
    objects: Mapping[tuple[str, str], Mapping[str, str]],
) -> None:
    """Every key of one envFrom ConfigMap/Secret into `env`, prefixed; missing: an error."""
    prefix = str(source.get("prefix") or "")
    for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
        if key not in source:
            continue
        ref = source[key]
        data = objects.get(_object_key(ref, kind))
        if data is None:
            if ref.get("optional"):
                continue
            raise _ConfigError(f"{kind[:-1]} {ref.get('name')!r} not found")
        for name, value in data.items():
            env[prefix + name] = value


def _key_ref_value(
    value_from: Mapping[str, Any], objects: Mapping[tuple[str, str], Mapping[str, str]]
) -> str | None:
    """The value a configMapKeyRef/secretKeyRef names; None when optional and missing."""
    value: str | None = None
    for kind, key in (("configmaps", "configMapKeyRef"), ("secrets", "secretKeyRef")):
        if key not in value_from:
            continue
        ref = value_from[key]
        data = objects.get(_object_key(ref, kind))
        if data is None or ref.get("key") not in data:
            if ref.get("optional"):
                break
            raise _ConfigError(f"{kind[:-1]} {ref.get('name')!r} key {ref.get('key')!r} not found")
        value = data[str(ref["key"])]
    return value


# ------------------------------------------------------------------ argv


def translate_argv(
    image: str, command: Sequence[str], args: Sequence[str], layout: Layout
) -> tuple[tuple[str, ...], str]:
    """(argv, "") for an image this sandbox can run, else ((), why not)."""
    words = [*command, *args]
    entry = posixpath.basename(command[0]) if command else ""
    if entry == "edgemodel" or (not command and image.startswith(RUNTIME_IMAGE_PREFIX)):
        rest = [*command[1:], *args] if command else list(args)
        return (layout.python, "-m", "edgemodel_cli.main", *rest), ""
    if image.startswith(TRITON_IMAGE_PREFIX):
        if not command and args and posixpath.basename(args[0]) == "tritonserver":
            words = list(args)
            entry = "tritonserver"
        if entry != "tritonserver":
            return (), f"image {image} runs only `tritonserver` here, not {words[:1]}"
        if layout.triton is None:
            return (), (
                "tritonserver is not installed here (pip install nvidia-pytriton provides it)"
            )
        rest = words[1:]
        if not any(w.startswith("--backend-directory") for w in rest):
            rest.append(f"--backend-directory={layout.triton.backends}")
        return (layout.triton.binary, *rest), ""
    return (), (
        f"image {image!r} cannot run in the sandbox: only {RUNTIME_IMAGE_PREFIX}:* "
        f"(command edgemodel) and {TRITON_IMAGE_PREFIX}:* (command tritonserver) run here"
    )


# ------------------------------------------------------------------ probes


def _probe_port(container: Mapping[str, Any], port: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise _ConfigError(f"probe port {port!r} is not a port of container {container.get('name')}")


def plan_probe(
    raw: Mapping[str, Any] | None,
    container: Mapping[str, Any],
    pod_ip: str,
    mounts: Sequence[Mount],
    layout: Layout,
) -> Probe | None:
    if not raw:
        return None
    timing = {
        "initial_delay": float(raw.get("initialDelaySeconds") or 0),
        "period": float(raw.get("periodSeconds") or 10),
        "timeout": float(raw.get("timeoutSeconds") or 1),
        "failure_threshold": int(raw.get("failureThreshold") or 3),
        "success_threshold": int(raw.get("successThreshold") or 1),
    }
    if "httpGet" in raw:
        get = raw["httpGet"]
        return Probe(
            kind="http",
            host=str(get.get("host") or pod_ip),
            port=_probe_port(container, get.get("port")),
            path=str(get.get("path") or "/"),
            scheme=str(get.get("scheme") or "HTTP"),
            headers=tuple((str(h["name"]), str(h["value"])) for h in get.get("httpHeaders") or []),
            **timing,  # type: ignore[arg-type]
        )
    if "tcpSocket" in raw:
        sock = raw["tcpSocket"]
        return Probe(
            kind="tcp",
            host=str(sock.get("host") or pod_ip),
            port=_probe_port(container, sock.get("port")),
            **timing,  # type: ignore[arg-type]
        )
    if "exec" in raw:
        command = [rewrite_paths(w, mounts) for w in raw["exec"].get("command") or []]
        argv, _ = translate_argv(str(container.get("image", "")), command[:1], command[1:], layout)
        return Probe(kind="exec", command=argv or tuple(command), **timing)  # type: ignore[arg-type]
    raise _ConfigError(f"unsupported probe {sorted(raw)} in container {container.get('name')}")


# ------------------------------------------------------------------ the plan


def plan_container(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    init: bool,
    pod_ip: str,
    volume_dirs: Mapping[str, str],
    objects: Mapping[tuple[str, str], Mapping[str, str]],
    layout: Layout,
) -> ContainerPlan:
    name = str(container["name"])
    image = str(container.get("image", ""))
    base = ContainerPlan(name=name, image=image, init=init)
    cdir = layout.container_dir(name)
    termination_file = posixpath.join(cdir, "termination-log")
    mounts, missing = container_mounts(container, volume_dirs)
    if missing:
        return _waiting(base, "ContainerCreating", f"volumes not ready: {', '.join(missing)}")
    termination_path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
    all_mounts = [*mounts, Mount(termination_path, termination_file)]
    try:
        env = container_env(pod, container, pod_ip, objects)
    except _ConfigError as exc:
        return _waiting(base, CONFIG_ERROR, str(exc))
    # Container paths are rewritten before the host's own paths (the interpreter, Triton's
    # binary) join the argv: a mount at /work must not capture a host /work/... path.
    command = [
        rewrite_paths(expand(str(w), env), all_mounts) for w in container.get("command") or []
    ]
    args = [rewrite_paths(expand(str(w), env), all_mounts) for w in container.get("args") or []]
    argv, why_not = translate_argv(image, command, args, layout)
    if why_not:
        return _waiting(base, NOT_RUNNABLE, why_not)
    env = {k: rewrite_paths(v, all_mounts) for k, v in env.items()}
    working = str(container.get("workingDir") or "")
    cwd = rewrite_paths(working, all_mounts) if working else ""
    if not cwd or cwd == working:
        # An image path we have no folder for: give the process a private one.
        cwd = posixpath.join(cdir, "rootfs", working.lstrip("/")) if working else cdir
    try:
        readiness = plan_probe(
            container.get("readinessProbe"), container, pod_ip, all_mounts, layout
        )
        liveness = plan_probe(container.get("livenessProbe"), container, pod_ip, all_mounts, layout)
        startup = plan_probe(container.get("startupProbe"), container, pod_ip, all_mounts, layout)
    except _ConfigError as exc:
        return _waiting(base, CONFIG_ERROR, str(exc))
    namespace = str((pod.get("metadata") or {}).get("namespace", "default"))
    services = dns.find_services([*argv, *env.values()], namespace)
    meta = pod.get("metadata") or {}
    process_env = {
        **layout.base_env,
        "HOSTNAME": str(meta.get("name", "")),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    return ContainerPlan(
        name=name,
        image=image,
        init=init,
        argv=argv,
        env=process_env,
        cwd=cwd,
        termination_file=termination_file,
        fallback_to_logs=container.get("terminationMessagePolicy") == "FallbackToLogsOnError",
        readiness=None if init else readiness,
        liveness=None if init else liveness,
        startup=None if init else startup,
        services=tuple(services),
    )


def _waiting(base: ContainerPlan, reason: str, message: str) -> ContainerPlan:
    return ContainerPlan(
        name=base.name,
        image=base.image,
        init=base.init,
        waiting_reason=reason,
        waiting_message=message,
    )


def plan_pod(
    pod: Mapping[str, Any],
    *,
    pod_ip: str,
    volume_dirs: Mapping[str, str],
    objects: Mapping[tuple[str, str], Mapping[str, str]],
    layout: Layout,
) -> PodPlan:
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}

    def one(container: Mapping[str, Any], init: bool) -> ContainerPlan:
        return plan_container(
            pod,
            container,
            init=init,
            pod_ip=pod_ip,
            volume_dirs=volume_dirs,
            objects=objects,
            layout=layout,
        )

    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds")
    return PodPlan(
        init_containers=tuple(one(c, True) for c in spec.get("initContainers") or []),
        containers=tuple(one(c, False) for c in spec.get("containers") or []),
        restart_policy=str(spec.get("restartPolicy") or "Always"),
        grace_seconds=float(30 if grace is None else grace),
    )


# ------------------------------------------------------------------ volumes


@dataclass(frozen=True)
class VolumeSource:
    """Where a volume lives on this machine, or which claim must first be resolved."""

    name: str
    host_path: str = ""
    claim: str = ""
    # Files to write into host_path before containers start (configMap, secret, projected).
    files: Mapping[str, bytes] = field(default_factory=dict)
    # hostPath of type File/FileOrCreate/Socket...: the folder to make is the parent.
    is_file: bool = False


_FILE_TYPES = ("File", "FileOrCreate", "Socket", "CharDevice", "BlockDevice")


def _items(data: Mapping[str, str], items: Sequence[Mapping[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return {key: value.encode() for key, value in data.items()}
    return {str(i["path"]): data[str(i["key"])].encode() for i in items if i.get("key") in data}


def _projected_files(
    pod: Mapping[str, Any],
    projected: Mapping[str, Any],
    objects: Mapping[tuple[str, str], Mapping[str, str]],
) -> dict[str, bytes]:
    """The files of a projected volume: ConfigMap/Secret keys, downward API, the SA token."""
    files: dict[str, bytes] = {}
    for source in projected.get("sources") or []:
        for key, kind in (("configMap", "configmaps"), ("secret", "secrets")):
            if key in source:
                data = objects.get((kind, str(source[key].get("name", "")))) or {}
                files.update(_items(data, source[key].get("items")))
        if "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    try:
                        value = field_value(pod, str(item["fieldRef"]["fieldPath"]), "")
                    except _ConfigError:
                        continue
                    files[str(item["path"])] = value.encode()
        if "serviceAccountToken" in source:
            # Minted by the runner with the TokenRequest API, as the kubelet does;
            # empty when that failed, so readers fail on authentication, not a path.
            token = objects.get((SERVICE_ACCOUNT_TOKEN, service_account(pod))) or {}
            path = str(source["serviceAccountToken"].get("path") or "token")
            files[path] = token.get("token", "").encode()
    return files


def volume_sources(
    pod: Mapping[str, Any],
    pod_dir: str,
    node_dir: str,
    objects: Mapping[tuple[str, str], Mapping[str, str]],
) -> list[VolumeSource]:
    """Where each of the pod's volumes lives: per pod, per node, or a claim to resolve."""
    sources: list[VolumeSource] = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = str(volume["name"])
        own = posixpath.join(pod_dir, "volumes", name)
        if "persistentVolumeClaim" in volume:
            sources.append(
                VolumeSource(name, claim=str(volume["persistentVolumeClaim"]["claimName"]))
            )
        elif "hostPath" in volume:
            host = volume["hostPath"]
            path = str(PurePosixPath(node_dir) / str(host["path"]).lstrip("/"))
            is_file = host.get("type") in _FILE_TYPES
            sources.append(VolumeSource(name, host_path=path, is_file=is_file))
        elif "configMap" in volume or "secret" in volume:
            kind, ref = (
                ("configmaps", volume["configMap"])
                if "configMap" in volume
                else ("secrets", {"name": volume["secret"].get("secretName"), **volume["secret"]})
            )
            data = objects.get((kind, str(ref.get("name", "")))) or {}
            sources.append(VolumeSource(name, host_path=own, files=_items(data, ref.get("items"))))
        elif "projected" in volume:
            files = _projected_files(pod, volume["projected"], objects)
            sources.append(VolumeSource(name, host_path=own, files=files))
        else:
            # emptyDir, and any other kind: a private folder of the pod.
            sources.append(VolumeSource(name, host_path=own))
    return sources
