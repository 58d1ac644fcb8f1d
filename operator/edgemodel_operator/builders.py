"""Owns every manifest the operator writes: pure functions of (EdgeModel, settings) -> dict.

Compression Jobs, per-target runtime Deployments and Services, the artifact store, and the
copies of the operator's image pull secrets in the namespaces it deploys into. No
I/O and no clock here: the same inputs always give the same manifest, which is what makes
server-side apply idempotent and a restarted operator converge on the same objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from edgemodel_operator import labels as keys
from edgemodel_operator.api import GROUP, KIND, VERSION, EdgeModelSpec, Target, to_dict
from edgemodel_operator.revision import CompressionPlan, Variant, compression_plan, variant_of
from edgemodel_operator.settings import Settings

MANAGER = keys.MANAGER
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
TERMINATION_LOG = "/dev/termination-log"
TOKENIZER_PATH = "/models/tokenizer.json"  # where the runtime pod places serving.tokenizerFile
ARTIFACT_AUDIENCE = "edgemodel-artifacts"  # the store's `--audience`
ARTIFACT_TOKEN_DIR = "/var/run/secrets/edgemodel.dev/artifacts"

Manifest = dict[str, Any]


# ------------------------------------------------------------------ shared pieces


def labels(name: str, component: str, **extra: str) -> dict[str, str]:
    out = {
        keys.APP_NAME: f"edgemodel-{component}",
        keys.INSTANCE: name,
        keys.PART_OF: "edgemodel",
        keys.MANAGED_BY: MANAGER,
        keys.COMPONENT: component,
        keys.MODEL: name,
    }
    out.update({f"edgemodel.dev/{key}": value for key, value in extra.items()})
    return out


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def with_image_pull(pod_spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """`pod_spec` with the operator's pull secrets and every container's pull policy set.

    Every pod the operator writes goes through here, so what the chart is given (its
    `imagePullSecrets` and `image.pullPolicy`) reaches compression Jobs, runtime pods of both
    runtimes and the artifact store alike.
    """
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    if settings.image_pull_policy:
        for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
            container["imagePullPolicy"] = settings.image_pull_policy
    return pod_spec


POD_IP_ENV = [
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
]


def deployment_name(name: str, target: str, revision: str) -> str:
    return f"{name}-{target}-{revision}"


def service_name(name: str, target: str) -> str:
    return f"{name}-{target}"


def job_name(name: str, revision: str, variant: Variant) -> str:
    return f"{name}-c-{revision}-{variant}"


def artifact_key(revision: str, variant: Variant) -> str:
    return f"{revision}-{variant}"


# ------------------------------------------------------------------ compression Job


def host_directory_allowed(directory: str, allowlist: tuple[str, ...]) -> bool:
    """Whether a node `directory` lies in (or is) one of the admin-allowlisted directories.

    Compared as normalised absolute paths, component by component, so "/data2" is not inside
    "/data" and "/data/../etc" is not inside anything (`..` is refused outright).
    """
    parts = directory.split("/")
    if not directory.startswith("/") or ".." in parts:
        return False
    have = [p for p in parts if p and p != "."]
    for allowed in allowlist:
        root = [p for p in allowed.split("/") if p and p != "."]
        if have[: len(root)] == root:
            return True
    return False


def host_path_problems(spec: EdgeModelSpec, settings: Settings) -> list[tuple[str, str]]:
    """(field, message) for every `file://` source the operator may not mount (pure).

    A `file://` source becomes a hostPath volume: a spec field reaching the node's
    filesystem. Only directories the admin allowlisted (`Settings.host_path_allowlist`,
    chart value `operator.hostPathAllowlist`) may be mounted, read only. See
    docs/security.md.
    """
    problems = []
    for field_path, uri in _sources(spec).items():
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            continue
        directory = parsed.path.rpartition("/")[0] or "/"
        if not host_directory_allowed(directory, settings.host_path_allowlist):
            allowed = ", ".join(settings.host_path_allowlist) or "none"
            problems.append(
                (
                    field_path,
                    f"{field_path}: {uri!r} would mount the node directory {directory!r}, which "
                    f"is not in the operator's host path allowlist ({allowed})",
                )
            )
    return problems


def _sources(spec: EdgeModelSpec) -> dict[str, str]:
    """Every source URI of the spec by its field path."""
    out = {"spec.model.uri": spec.model.uri}
    if spec.compression.calibration is not None:
        out["spec.compression.calibration.uri"] = spec.compression.calibration.uri
    if spec.compression.accuracy_gate is not None:
        out["spec.compression.accuracyGate.evaluation.uri"] = (
            spec.compression.accuracy_gate.evaluation.uri
        )
    return out


def _source_volume(uri: str, key: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The path a container reads source `key`'s `uri` from, plus the volume and mount.

    Volume names derive from `key` (model, calibration, evaluation) only, so two sources on
    the same claim or host directory get distinct names (duplicates make the API server
    refuse the Job) and the name is the same in every process (no `hash()`, which is salted
    per process). The host path allowlist is enforced before any manifest is built: reconcile
    refuses a spec with `host_path_problems` and never gets here with one.
    """
    mount = f"/sources/{key}"
    volume = f"src-{key}"
    parsed = urlparse(uri)
    if parsed.scheme == "pvc":
        claim = parsed.netloc
        return (
            f"{mount}/{claim}{parsed.path}",
            [{"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            [{"name": volume, "mountPath": f"{mount}/{claim}", "readOnly": True}],
        )
    if parsed.scheme == "file":
        directory, _, filename = parsed.path.rpartition("/")
        return (
            f"{mount}/host/{filename}",
            [{"name": volume, "hostPath": {"path": directory or "/", "type": "Directory"}}],
            [{"name": volume, "mountPath": f"{mount}/host", "readOnly": True}],
        )
    return uri, [], []


def compress_args(
    spec: EdgeModelSpec, plan: CompressionPlan, settings: Settings, paths: Mapping[str, str]
) -> list[str]:
    """The `edgemodel compress` command line for one variant of a revision."""
    comp = spec.compression
    args = [
        "compress",
        paths["model"],
        "--sha256",
        spec.model.sha256,
        "--output",
        "/work/out",
        "--mode",
        plan.mode,
        "--target",
        plan.variant,
        "--json",
        "--search-budget-seconds",
        str(settings.compress_search_budget_seconds),
    ]
    if comp.calibration is not None:
        args += [
            "--calibration",
            paths["calibration"],
            "--calibration-sha256",
            comp.calibration.sha256,
        ]
    if comp.pruning is not None:
        args += ["--prune-sparsity", repr(comp.pruning.sparsity)]
    # 4-bit tables are a CPU kernel (GatherBlockQuantized): GPU artifacts keep int8 tables.
    cpu_int8 = plan.variant != "gpu" and plan.mode in ("dynamic-int8", "static-int8")
    if comp.embedding_bits is not None and cpu_int8:
        args += ["--embedding-bits", str(comp.embedding_bits)]
    if comp.block_size is not None:
        args += ["--block-size", str(comp.block_size)]
    if comp.symmetric:
        args += ["--symmetric"]
    gate = comp.accuracy_gate
    if gate is not None:
        args += ["--eval", paths["evaluation"], "--eval-sha256", gate.evaluation.sha256]
        if gate.max_accuracy_drop is not None:
            # The API speaks fractions (0.005); the command speaks points (0.5).
            args += ["--max-accuracy-drop", repr(round(gate.max_accuracy_drop * 100, 6))]
        if gate.min_agreement is not None:
            args += ["--min-agreement", repr(gate.min_agreement)]
    return args


def job_placement(spec: EdgeModelSpec, variant: Variant) -> dict[str, Any]:
    """Where a variant's compression Job may and should run (pure): near its targets.

    The Job tolerates every taint the targets of `variant` tolerate (so it may run on a
    dedicated, tainted edge node they run on), and prefers, without requiring, the nodes that
    every one of those targets selects: the compressed artifact is portable, so a Job never
    waits for a node the targets themselves cannot get (their runtime pods report that), but
    on a cluster with such a node the Job runs there, beside the image its targets pull. See
    docs/architecture.md, "Compression Jobs"."""
    targets = [t for t in spec.targets if variant_of(t) == variant]
    out: dict[str, Any] = {}
    shared: dict[str, str] | None = None
    for target in targets:
        here = dict(target.node_selector)
        shared = here if shared is None else {k: v for k, v in shared.items() if here.get(k) == v}
    if shared:
        expressions = [
            {"key": key, "operator": "In", "values": [value]}
            for key, value in sorted(shared.items())
        ]
        out["affinity"] = {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "preference": {"matchExpressions": expressions}}
                ]
            }
        }
    toleration_list: list[dict[str, Any]] = []
    for target in targets:
        for toleration in tolerations(target):
            if toleration not in toleration_list:
                toleration_list.append(toleration)
    if toleration_list:
        out["tolerations"] = toleration_list
    return out


def compression_job(
    name: str,
    namespace: str,
    uid: str,
    spec: EdgeModelSpec,
    revision: str,
    variant: Variant,
    settings: Settings,
) -> Manifest:
    plan = compression_plan(spec, variant)
    paths, volumes, mounts = _compression_volumes(spec)
    job_labels = labels(name, "compression", revision=revision, variant=variant)
    publish = _publish_container(
        settings,
        [
            "--revision",
            artifact_key(revision, variant),
            "--namespace",
            namespace,
            "--uid",
            uid,
            "--revision-digest",
            revision_digest(spec),
            "--variant",
            variant,
        ],
        # Only publish sees the store token (compress runs model code).
        mounts=mounts[:2],
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, revision, variant),
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {keys.COMPRESSION_NOTE: plan.note} if plan.note else {},
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": settings.job_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "podFailurePolicy": _compression_failure_policy(),
            "template": {
                "metadata": {"labels": job_labels},
                "spec": with_image_pull(
                    {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security_context(),
                        **job_placement(spec, variant),
                        "initContainers": [
                            {
                                "name": "compress",
                                "image": settings.runtime_image,
                                "command": ["edgemodel"],
                                "args": compress_args(spec, plan, settings, paths),
                                "resources": settings.compress_resources,
                                "securityContext": container_security_context(),
                                "volumeMounts": mounts,
                                "terminationMessagePolicy": "FallbackToLogsOnError",
                            }
                        ],
                        "containers": [publish],
                        "volumes": [*volumes, artifact_token_volume()],
                    },
                    settings,
                ),
            },
        },
    }


def _compression_volumes(
    spec: EdgeModelSpec,
) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """The Job's scratch volumes plus one per input it reads (model, calibration, evaluation):
    returns where each input is read from, the volumes, and the compress container's mounts
    (scratch first)."""
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": "/work"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    paths: dict[str, str] = {}
    sources = {"model": spec.model.uri}
    if spec.compression.calibration is not None:
        sources["calibration"] = spec.compression.calibration.uri
    if spec.compression.accuracy_gate is not None:
        sources["evaluation"] = spec.compression.accuracy_gate.evaluation.uri
    for key, uri in sources.items():
        path, extra_volumes, extra_mounts = _source_volume(uri, key)
        paths[key] = path
        volumes += extra_volumes
        mounts += extra_mounts
    return paths, volumes, mounts


def _compression_failure_policy() -> dict[str, Any]:
    """Bad input (2) and a failed accuracy gate (3) give the same answer on every try."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "compress",
                    "operator": "In",
                    "values": [2, 3],
                },
            }
        ]
    }


def _publish_container(
    settings: Settings, record: list[str], *, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The Job's `edgemodel publish` container: sends /work/out to the artifact store with the
    store token, which only it mounts; `record` names what the store files it under."""
    return {
        "name": "publish",
        "image": settings.runtime_image,
        "command": ["edgemodel"],
        "args": [
            "publish",
            "/work/out",
            "--server",
            settings.artifact_url,
            *record,
            "--token-file",
            f"{ARTIFACT_TOKEN_DIR}/token",
            "--termination-log",
            TERMINATION_LOG,
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            *mounts,
            {
                "name": "artifact-token",
                "mountPath": ARTIFACT_TOKEN_DIR,
                "readOnly": True,
            },
        ],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def revision_digest(spec: EdgeModelSpec) -> str:
    """The full sha256 of a revision's material; `revision_of` is "r" + its first 10 digits.

    The artifact store keys records by it (docs/architecture.md, artifact store): 40 bits of a
    short revision name are not enough to stand for "this very compression input".
    """
    material = {
        "model": spec.model.sha256,
        "compression": to_dict(spec.compression),
        "targets": sorted((t.name, t.arch, t.accelerator, t.runtime) for t in spec.targets),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def artifact_token_volume() -> dict[str, Any]:
    """A projected ServiceAccount token for the artifact store's audience, bound to the pod.

    The store reviews it (TokenReview), finds the pod, its Job and the Job's EdgeModel, and
    lets it write that EdgeModel's records only; it dies with the pod.
    """
    return {
        "name": "artifact-token",
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": ARTIFACT_AUDIENCE,
                        "expirationSeconds": 3600,
                        "path": "token",
                    }
                }
            ]
        },
    }


# ------------------------------------------------------------------ runtime Deployment + Service


def _merge_resources(target: Target, settings: Settings) -> dict[str, dict[str, str]]:
    requests = {**settings.default_requests, **target.resources.requests}
    limits = {**settings.default_limits, **target.resources.limits}
    if target.gpu:
        limits.setdefault(GPU_RESOURCE, "1")
    if GPU_RESOURCE in limits:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE]  # extended resources: request == limit
    return {"requests": requests, "limits": limits}


def node_selector(target: Target) -> dict[str, str]:
    return {**target.node_selector, "kubernetes.io/arch": target.arch}


def tolerations(target: Target) -> list[dict[str, Any]]:
    out = [to_dict(t) for t in target.tolerations]
    if target.gpu and GPU_TOLERATION not in out:
        out.append(dict(GPU_TOLERATION))
    return out


def pod_requests(target: Target, settings: Settings) -> dict[str, str]:
    return _merge_resources(target, settings)["requests"]


POD_UID = 10001  # the user every EdgeModel container runs as (pod_security_context)
CACHE_MODE = "0750"


def prepare_cache_container(settings: Settings) -> dict[str, Any]:
    """The init step that hands the node cache (a hostPath) to the pods' user.

    The kubelet creates a missing `DirectoryOrCreate` hostPath as root, mode 0755, and
    hostPath volumes ignore `fsGroup`, so `fetch` (uid 10001) could not write to it. This
    step runs first, as root with one capability, CAP_CHOWN (chmod of a root-owned folder by
    root needs none): it changes the mode and owner of the cache folder itself, nothing below
    it, and exits. No privilege escalation, read-only root, RuntimeDefault seccomp; the
    containers after it run as 10001 with no capabilities. See docs/architecture.md.
    """
    return {
        "name": "prepare-cache",
        "image": settings.runtime_image,
        "command": ["edgemodel"],
        "args": [
            "prepare-cache",
            "/cache",
            "--uid",
            str(POD_UID),
            "--gid",
            str(POD_UID),
            "--mode",
            CACHE_MODE,
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _fetch_step(container: str, args: list[str], settings: Settings) -> dict[str, Any]:
    """An init container running `edgemodel fetch` into /models through the node cache."""
    return {
        "name": container,
        "image": settings.runtime_image,
        "command": ["edgemodel"],
        "args": args,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "models", "mountPath": "/models"},
            {"name": "cache", "mountPath": "/cache"},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def tokenizer_fetch(spec: EdgeModelSpec, settings: Settings) -> list[dict[str, Any]]:
    """The init step placing `serving.tokenizerFile` at TOKENIZER_PATH (none without one).

    Fetched by digest from its URI through the node cache like the model, so a pod restarts
    offline; compression never touches it (docs/architecture.md, "Generative serving").
    """
    serving = spec.serving
    if serving is None or not serving.generative or serving.tokenizer_file is None:
        return []
    source = serving.tokenizer_file
    directory, _, file_name = TOKENIZER_PATH.rpartition("/")
    args = ["fetch", "--sha256", source.sha256, "--uri", source.uri, "--cache", "/cache"]
    args += ["--dest", directory, "--file-name", file_name]
    return [_fetch_step("fetch-tokenizer", args, settings)]


def _fetch_container(
    name: str, target: Target, artifact_sha256: str, settings: Settings, triton: bool
) -> dict[str, Any]:
    args = [
        "fetch",
        "--sha256",
        artifact_sha256,
        "--server",
        settings.artifact_url,
        "--cache",
        "/cache",
        "--dest",
        "/models",
    ]
    if triton:
        args += ["--layout", "triton", "--model-name", name, "--instance-count", "1"]
        if target.gpu:
            args += ["--gpu", "--fp16"]
    return _fetch_step("fetch", args, settings)


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _server_container(
    name: str, target: Target, revision: str, spec: EdgeModelSpec, settings: Settings
) -> dict[str, Any]:
    ports = [
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
    ]
    common = {
        "ports": ports,
        "resources": _merge_resources(target, settings),
        "securityContext": container_security_context(),
        "readinessProbe": _probe("/v2/health/ready", 2, 3),
        "livenessProbe": {**_probe("/v2/health/live", 10, 3), "initialDelaySeconds": 10},
        "startupProbe": _probe("/v2/health/ready", 2, 90),
        "volumeMounts": [
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if target.runtime == "triton":
        return {
            "name": "triton",
            "image": settings.triton_image,
            "command": ["tritonserver"],
            "args": [
                "--model-repository=/models",
                "--strict-readiness=true",
                "--exit-on-error=true",
                f"--http-port={HTTP_PORT}",
                f"--grpc-port={GRPC_PORT}",
                f"--metrics-port={METRICS_PORT}",
                "--http-address=$(POD_IP)",
                "--grpc-address=$(POD_IP)",
                "--metrics-address=$(POD_IP)",
            ],
            "env": list(POD_IP_ENV),
            **common,
        }
    env = [
        *POD_IP_ENV,
        {"name": "EDGEMODEL_MODEL", "value": name},
        {"name": "EDGEMODEL_REVISION", "value": revision},
        {"name": "EDGEMODEL_TARGET", "value": target.name},
    ]
    if spec.slo is not None:
        env.append({"name": "EDGEMODEL_SLO_MS", "value": repr(spec.slo.latency_p95_ms)})
    env += _token_slo_env(spec)
    args = [
        "serve",
        "/models/model.onnx",
        "--name",
        name,
        "--host",
        "$(POD_IP)",
        "--http-port",
        str(HTTP_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--metrics-port",
        str(METRICS_PORT),
        # Keep serving for a moment after SIGTERM while the endpoint leaves the Service.
        "--shutdown-delay-s",
        "3",
    ]
    args += generative_args(spec)
    if target.gpu:
        args += ["--providers", "cuda"]
        if settings.strict_gpu_providers:
            # No CUDA in the pod: exit with a termination message rather than hold the GPU.
            args += ["--require-provider", "--termination-log", TERMINATION_LOG]
    return {
        "name": "server",
        "image": settings.runtime_image,
        "command": ["edgemodel"],
        "args": args,
        "env": env,
        **common,
    }


def generative_args(spec: EdgeModelSpec) -> list[str]:
    """`edgemodel serve` flags of a generative model (none otherwise)."""
    if spec.serving is None or not spec.serving.generative:
        return []
    return [
        "--generative",
        "--max-sequences",
        str(spec.serving.max_sequences),
        "--tokenizer",
        TOKENIZER_PATH if spec.serving.tokenizer == "file" else spec.serving.tokenizer,
    ]


def _token_slo_env(spec: EdgeModelSpec) -> list[dict[str, str]]:
    """The token histograms' SLO boundaries (EDGEMODEL_TTFT_SLO_MS / EDGEMODEL_ITL_SLO_MS)."""
    if spec.slo is None or not spec.generative:
        return []
    pairs = [
        ("EDGEMODEL_TTFT_SLO_MS", spec.slo.time_to_first_token_p95_ms),
        ("EDGEMODEL_ITL_SLO_MS", spec.slo.inter_token_p95_ms),
    ]
    return [{"name": name, "value": repr(value)} for name, value in pairs if value is not None]


SPEC_HASH = keys.SPEC_HASH


def stamp(manifest: Manifest) -> Manifest:
    """Adds a digest of the manifest as an annotation: an unchanged object need not be applied."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    manifest["metadata"].setdefault("annotations", {})[SPEC_HASH] = digest
    return manifest


def _init_containers(
    name: str, spec: EdgeModelSpec, target: Target, artifact_sha256: str, settings: Settings
) -> list[dict[str, Any]]:
    """The runtime pod's init steps: the node cache handed over, the model (and tokenizer)."""
    triton = target.runtime == "triton"
    return [
        *([prepare_cache_container(settings)] if settings.node_cache_path else []),
        _fetch_container(name, target, artifact_sha256, settings, triton),
        *tokenizer_fetch(spec, settings),
    ]


def runtime_deployment(
    name: str,
    namespace: str,
    uid: str,
    spec: EdgeModelSpec,
    target: Target,
    revision: str,
    artifact_sha256: str,
    replicas: int,
    settings: Settings,
) -> Manifest:
    variant = variant_of(target)
    pod_labels = labels(name, "runtime", revision=revision, target=target.name, variant=variant)
    selector = {k: pod_labels[k] for k in (keys.MODEL, keys.TARGET, keys.REVISION)}
    node_cache = bool(settings.node_cache_path)
    cache: dict[str, Any] = (
        {
            "name": "cache",
            "hostPath": {"path": settings.node_cache_path, "type": "DirectoryOrCreate"},
        }
        if node_cache
        else {"name": "cache", "emptyDir": {}}
    )
    return stamp(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": deployment_name(name, target.name, revision),
                "namespace": namespace,
                "labels": pod_labels,
                "annotations": {keys.ARTIFACT_SHA256: artifact_sha256},
                "ownerReferences": [owner_reference(name, uid)],
            },
            "spec": {
                "replicas": replicas,
                "revisionHistoryLimit": 2,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(METRICS_PORT),
                            "prometheus.io/path": "/metrics",
                            keys.ARTIFACT_SHA256: artifact_sha256,
                        },
                    },
                    "spec": with_image_pull(
                        {
                            "nodeSelector": node_selector(target),
                            "tolerations": tolerations(target),
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            "securityContext": pod_security_context(),
                            "terminationGracePeriodSeconds": 30,
                            "initContainers": _init_containers(
                                name, spec, target, artifact_sha256, settings
                            ),
                            "containers": [
                                _server_container(name, target, revision, spec, settings)
                            ],
                            "volumes": [
                                {"name": "models", "emptyDir": {}},
                                {"name": "tmp", "emptyDir": {}},
                                cache,
                            ],
                        },
                        settings,
                    ),
                },
            },
        }
    )


def target_service(name: str, namespace: str, uid: str, target: Target) -> Manifest:
    """One Service per target over every revision's pods, so a canary shares the traffic."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name, target.name),
            "namespace": namespace,
            "labels": labels(name, "runtime", target=target.name),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "selector": {keys.MODEL: name, keys.TARGET: target.name},
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


# ------------------------------------------------------------------ artifact store


_QUANTITY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}


API_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _api_token_volume() -> dict[str, Any]:
    """The pod's own API credentials, as automountServiceAccountToken would project them."""
    return {
        "name": "api-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }


def store_quota_bytes(storage: str) -> int:
    """The store's `--quota-bytes`: 90% of its volume (a full disk would fail every write,
    reads and collection included); 0 (no quota) when `storage` is not a plain quantity."""
    number = storage.rstrip("kMGTi")
    unit = storage[len(number) :]
    if unit not in _QUANTITY_UNITS or not number.isdigit():
        return 0
    return int(number) * _QUANTITY_UNITS[unit] * 9 // 10


def artifact_store(settings: Settings) -> list[Manifest]:
    """ServiceAccount + PVC + Deployment + Service of the in-cluster artifact store.

    The store's account needs the ClusterRole the chart grants it (`<release>-artifact-store`:
    create tokenreviews, get pods and jobs, list edgemodels).
    """
    name, namespace = settings.artifact_service, settings.namespace
    store_labels = {
        keys.APP_NAME: "edgemodel-artifacts",
        keys.PART_OF: "edgemodel",
        keys.MANAGED_BY: MANAGER,
        keys.COMPONENT: "artifact-store",
    }

    def metadata() -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": store_labels}

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata()},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata(),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": settings.artifact_storage}},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # a ReadWriteOnce volume has one writer
                "selector": {"matchLabels": {keys.APP_NAME: "edgemodel-artifacts"}},
                "template": {
                    "metadata": {"labels": store_labels},
                    "spec": with_image_pull(
                        {
                            # The store reviews writers' tokens with the API (TokenReview) and
                            # lists EdgeModels to collect what none references: its own account,
                            # its token projected explicitly (what automount would mount).
                            "serviceAccountName": name,
                            "automountServiceAccountToken": False,
                            "securityContext": pod_security_context(),
                            "containers": [_artifact_server_container(settings)],
                            "volumes": [
                                {"name": "store", "persistentVolumeClaim": {"claimName": name}},
                                _api_token_volume(),
                            ],
                        },
                        settings,
                    ),
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(),
            "spec": {
                "selector": {keys.APP_NAME: "edgemodel-artifacts"},
                "ports": [{"name": "http", "port": settings.artifact_port, "targetPort": "http"}],
            },
        },
    ]


def _artifact_server_container(settings: Settings) -> dict[str, Any]:
    """The store's `edgemodel artifact-server` container, on the store volume and the API token."""
    return {
        "name": "server",
        "image": settings.runtime_image,
        "command": ["edgemodel"],
        "args": [
            "artifact-server",
            "--root",
            "/store",
            "--host",
            "$(POD_IP)",
            "--port",
            str(settings.artifact_port),
            "--token-review",
            "--audience",
            ARTIFACT_AUDIENCE,
            "--quota-bytes",
            str(store_quota_bytes(settings.artifact_storage)),
        ],
        "env": list(POD_IP_ENV),
        "ports": [{"name": "http", "containerPort": settings.artifact_port}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "store", "mountPath": "/store"},
            {"name": "api-token", "mountPath": API_TOKEN_DIR, "readOnly": True},
        ],
    }


# ------------------------------------------------------------------ pull secrets


PULL_SECRET_SOURCE = keys.COPIED_FROM


def pull_secret_copy(source: Mapping[str, Any], namespace: str) -> Manifest:
    """The copy of pull secret `source` (a Secret of the operator's namespace) in `namespace`.

    Same name, type and data; labelled as the operator's and annotated with where it came
    from, so it is told apart from a Secret the user made there (which is never touched).
    """
    meta = source["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
            "labels": {
                keys.PART_OF: "edgemodel",
                keys.MANAGED_BY: MANAGER,
                keys.COMPONENT: "pull-secret",
            },
            "annotations": {PULL_SECRET_SOURCE: f"{meta.get('namespace', '')}/{meta['name']}"},
        },
        "type": source.get("type") or "Opaque",
        "data": dict(source.get("data") or {}),
    }


def pull_secret_copies(
    settings: Settings,
    namespace: str,
    sources: Mapping[str, Mapping[str, Any] | None],
    existing: Mapping[str, Mapping[str, Any] | None],
) -> tuple[list[Manifest], list[str]]:
    """(copies to apply in `namespace`, problems to report) for the operator's pull secrets.

    `sources`: name -> that Secret in the operator's namespace (None: missing); `existing`:
    name -> the Secret of that name in `namespace` (None: none yet). A namespace that is the
    operator's own needs no copy; a Secret there that the operator did not make is the
    user's and is left alone; an up-to-date copy is not rewritten.
    """
    copies: list[Manifest] = []
    problems: list[str] = []
    if namespace == settings.namespace:
        return copies, problems
    for name in settings.image_pull_secrets:
        source = sources.get(name)
        if source is None:
            problems.append(
                f"image pull secret {name!r} not found in namespace {settings.namespace!r}: "
                f"pods in {namespace!r} may fail to pull their images"
            )
            continue
        present = existing.get(name)
        if present is not None:
            present_labels = (present.get("metadata") or {}).get("labels") or {}
            if present_labels.get(keys.MANAGED_BY) != MANAGER:
                continue  # the user's own Secret of that name: theirs to keep
        copy = pull_secret_copy(source, namespace)
        if present is not None and _same_copy(present, copy):
            continue
        copies.append(copy)
    return copies, problems


def _same_copy(present: Mapping[str, Any], copy: Manifest) -> bool:
    annotations = (present.get("metadata") or {}).get("annotations") or {}
    source: str = copy["metadata"]["annotations"][PULL_SECRET_SOURCE]
    return bool(
        present.get("type") == copy["type"]
        and (present.get("data") or {}) == copy["data"]
        and annotations.get(PULL_SECRET_SOURCE) == source
    )
