"""Owns the names the operator shares with the cluster: label keys, annotation keys, the
EdgeModel's group/version/plural, and the selectors built from them.

Every module that writes or reads a label or an annotation on a Kubernetes object takes its
key from here (docs/architecture.md, "One way to talk to Kubernetes"), so a key cannot drift
between the builder that writes it and the watch or cache that selects on it.
"""

from __future__ import annotations

from typing import Final

from edgemodel_operator.api import GROUP, KIND, PLURAL, VERSION

__all__ = [
    "APP_NAME",
    "ARTIFACT_SHA256",
    "ATTEMPT",
    "COMPONENT",
    "COMPONENT_ARTIFACT_STORE",
    "COMPONENT_COMPRESSION",
    "COMPONENT_PULL_SECRET",
    "COMPONENT_RUNTIME",
    "COMPRESSION_NOTE",
    "COPIED_FROM",
    "EDGEMODEL_API_VERSION",
    "GROUP",
    "INSTANCE",
    "JOB_NAME",
    "KIND",
    "MANAGED",
    "MANAGED_BY",
    "MANAGER",
    "MODEL",
    "PART_OF",
    "PART_OF_VALUE",
    "PLURAL",
    "PROMETHEUS_URL",
    "PROVISIONER",
    "REVISION",
    "SERVICE_NAME",
    "SPEC_HASH",
    "TARGET",
    "VARIANT",
    "VERSION",
    "owned_by",
]

EDGEMODEL_API_VERSION: Final = f"{GROUP}/{VERSION}"

# The field manager and the managed-by value of everything the operator writes.
MANAGER: Final = "edgemodel-operator"
PART_OF_VALUE: Final = "edgemodel"

# Recommended labels (kubernetes.io/docs/concepts/overview/working-with-objects/common-labels).
APP_NAME: Final = "app.kubernetes.io/name"
INSTANCE: Final = "app.kubernetes.io/instance"
PART_OF: Final = "app.kubernetes.io/part-of"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
COMPONENT: Final = "app.kubernetes.io/component"

COMPONENT_RUNTIME: Final = "runtime"
COMPONENT_COMPRESSION: Final = "compression"
COMPONENT_ARTIFACT_STORE: Final = "artifact-store"
COMPONENT_PULL_SECRET: Final = "pull-secret"

# The EdgeModel's own labels on what it owns.
MODEL: Final = "edgemodel.dev/name"
TARGET: Final = "edgemodel.dev/target"
REVISION: Final = "edgemodel.dev/revision"
VARIANT: Final = "edgemodel.dev/variant"

# Set by the sandbox's local-path provisioner on the PersistentVolumes it makes.
PROVISIONER: Final = "edgemodel.dev/provisioner"

# Set by Kubernetes itself.
JOB_NAME: Final = "job-name"  # the Job controller, on a Job's pods
SERVICE_NAME: Final = "kubernetes.io/service-name"  # on a Service's EndpointSlices

# Annotations.
ARTIFACT_SHA256: Final = "edgemodel.dev/artifact-sha256"
SPEC_HASH: Final = "edgemodel.dev/spec-hash"
ATTEMPT: Final = "edgemodel.dev/attempt"
COMPRESSION_NOTE: Final = "edgemodel.dev/compression-note"
COPIED_FROM: Final = "edgemodel.dev/copied-from"
PROMETHEUS_URL: Final = "edgemodel.dev/prometheus-url"

# The selector of everything the operator manages (its watches and caches select on it).
MANAGED: Final[dict[str, str]] = {MANAGED_BY: MANAGER}


def owned_by(model: str, component: str | None = None) -> dict[str, str]:
    """The label selector of what EdgeModel `model` owns (optionally one component of it)."""
    selector = {MODEL: model, MANAGED_BY: MANAGER}
    if component is not None:
        selector[COMPONENT] = component
    return selector
