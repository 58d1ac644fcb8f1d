"""Owns the operator-wide settings: images, the artifact store, defaults for pods.

One frozen value built once from the command line (or the Helm chart's flags) and passed to
the builders, so every manifest is a pure function of (spec, settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

RUNTIME_IMAGE = "ghcr.io/edgemodel/runtime:0.1.0"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"


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
    # A node-local cache lets a restarted pod on a disconnected site start from disk. It is a
    # hostPath volume, which Pod Security "restricted" (and "baseline") refuse: an empty value
    # falls back to an emptyDir, compliant but without the offline restart.
    node_cache_path: str = "/var/lib/edgemodel/cache"
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

    @property
    def artifact_url(self) -> str:
        return f"http://{self.artifact_service}.{self.namespace}.svc:{self.artifact_port}"
