"""Owns the operator-wide settings: images, the artifact store, defaults for pods.

One frozen value built once from the command line (or the Helm chart's flags) and passed to
the builders, so every manifest is a pure function of (spec, settings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RUNTIME_IMAGE = "ghcr.io/edgemodel/runtime:0.1.0"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
PULL_POLICIES = ("", "Always", "IfNotPresent", "Never")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class Settings:
    """What every reconcile needs besides the EdgeModel itself."""

    runtime_image: str = RUNTIME_IMAGE
    triton_image: str = TRITON_IMAGE
    namespace: str = "edgemodel-system"  # where the operator and its artifact store live
    artifact_service: str = "edgemodel-artifacts"
    artifact_port: int = 8080
    artifact_storage: str = "10Gi"
    manage_artifact_store: bool = True
    # Where the operator itself asks the store for existing artifacts; empty: the Service
    # (pods always fetch through the Service, `artifact_url`).
    artifact_lookup_url: str = ""
    # Pull secrets (names of Secrets in the operator's namespace) and pull policy for every pod
    # the operator creates. The operator copies each Secret into the namespaces it deploys
    # into (pods can only use a Secret of their own namespace); see docs/architecture.md.
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = ""  # empty: Kubernetes' default for the image's tag
    # A node-local cache lets a restarted pod on a disconnected site start from disk. It is a
    # hostPath volume, which Pod Security "restricted" (and "baseline") refuse, and the kubelet
    # creates it root-owned, so a `prepare-cache` init step (root, CAP_CHOWN only) hands it to
    # the pods' user first. An empty value falls back to an emptyDir: "restricted"-compliant,
    # but without the offline restart.
    node_cache_path: str = "/var/lib/edgemodel/cache"
    # GPU targets' servers refuse to run on a fallback provider (CPU), so a pod without a
    # working CUDA does not hold a GPU while serving from the CPU. The sandbox, whose GPU
    # nodes are simulated, turns this off.
    strict_gpu_providers: bool = True
    job_backoff_limit: int = 2
    job_deadline_seconds: int = 1800
    job_ttl_seconds: int = 3600
    compress_search_budget_seconds: int = 120
    default_requests: dict[str, str] = field(
        default_factory=lambda: {"cpu": "100m", "memory": "128Mi"}
    )
    default_limits: dict[str, str] = field(default_factory=lambda: {"memory": "1Gi"})
    compress_resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        }
    )
    prometheus_url: str = ""
    prometheus_token_file: str = ""  # bearer token, re-read on every query (rotation)
    prometheus_ca_file: str = ""
    prometheus_insecure: bool = False
    # URLs the per-object annotation edgemodel.dev/prometheus-url may name (exact, trailing
    # "/" aside); empty: the annotation is refused. Such a Prometheus never gets the token or
    # CA above, which are for `prometheus_url` only (docs/security.md).
    prometheus_allowed_urls: tuple[str, ...] = ()
    # Host directories a `file://` model or data source may be mounted from (hostPath, read
    # only); a source outside all of them is refused naming the field. Empty (the default):
    # no spec field ever reaches the node's filesystem (docs/security.md).
    host_path_allowlist: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.image_pull_policy not in PULL_POLICIES:
            raise ValueError(
                f"image pull policy {self.image_pull_policy!r}: expected one of "
                f"{', '.join(p for p in PULL_POLICIES if p)} (or empty)"
            )
        for name in self.image_pull_secrets:
            if not _DNS_SUBDOMAIN.fullmatch(name):
                raise ValueError(f"image pull secret {name!r} is not a valid Secret name")
        if not 0 < self.artifact_port < 65536:
            raise ValueError(f"artifact port {self.artifact_port} is not a TCP port")
        for directory in self.host_path_allowlist:
            if not directory.startswith("/") or ".." in directory.split("/"):
                raise ValueError(
                    f"host path allowlist entry {directory!r}: must be an absolute path "
                    "without '..'"
                )
        for url in self.prometheus_allowed_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"allowed Prometheus URL {url!r}: must be http:// or https://")

    @property
    def artifact_url(self) -> str:
        return f"http://{self.artifact_service}.{self.namespace}.svc:{self.artifact_port}"
