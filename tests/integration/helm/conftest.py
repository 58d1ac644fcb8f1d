"""Fixtures for the Helm chart tests: the helm binary, and rendering the chart to objects.

helm is built from the Go module proxy at the pinned version (see edgemodel_sandbox.tools)
and cached; the first build takes a few minutes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "edgemodel"
Objects = list[dict[str, Any]]

# Every documented values combination: (id, --set pairs). Each is rendered, checked
# structurally and dry-run against the real API server.
COMBINATIONS: list[tuple[str, dict[str, str]]] = [
    ("defaults", {}),
    ("namespaced", {"rbac.scope": "namespaced", "watchNamespaces": "{ns1,ns2}"}),
    ("cluster-2-replicas", {"operator.replicas": "2"}),
    (
        "namespaced-2-replicas",
        {"rbac.scope": "namespaced", "watchNamespaces": "{ns1,ns2}", "operator.replicas": "2"},
    ),
    ("store-off", {"artifactStore.enabled": "false"}),
    (
        "namespaced-store-off",
        {"rbac.scope": "namespaced", "watchNamespaces": "{ns1}", "artifactStore.enabled": "false"},
    ),
    (
        "monitors",
        {
            "monitoring.podMonitor.enabled": "true",
            "monitoring.serviceMonitor.enabled": "true",
            "dashboards.enabled": "true",
        },
    ),
    (
        "network-policy",
        {"networkPolicy.enabled": "true", "networkPolicy.runtimeNamespaces": "{ns1}"},
    ),
    (
        "network-policy-namespaced",
        {"networkPolicy.enabled": "true", "rbac.scope": "namespaced", "watchNamespaces": "{ns1}"},
    ),
    (
        "pull-secrets",
        {
            "imagePullSecrets[0].name": "regcred",
            "imagePullSecrets[1].name": "mirror",
            "image.pullPolicy": "Always",
        },
    ),
    (
        "pull-secrets-namespaced",
        {
            "rbac.scope": "namespaced",
            "watchNamespaces": "{ns1,ns2}",
            "imagePullSecrets[0].name": "regcred",
        },
    ),
    (
        "prometheus-auth",
        {
            "prometheus.url": "https://prometheus.monitoring.svc:9091",
            "prometheus.bearerTokenSecret.name": "prometheus-token",
            "prometheus.caConfigMap.name": "prometheus-ca",
        },
    ),
]


def set_args(values: Mapping[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="session")
def helm() -> Path:
    from edgemodel_sandbox.tools import ensure_helm

    return ensure_helm()


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=180, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


Render = Callable[..., Objects]


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    def _render(
        values: Mapping[str, str] | None = None,
        namespace: str = "edgemodel-system",
        release: str = "em",
        extra: Sequence[str] = (),
    ) -> Objects:
        out = run_helm(
            helm,
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *set_args(values or {}),
            *extra,
        ).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return _render


def with_namespaces(values: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str]:
    """The combination's values with placeholder namespaces (ns1, ns2) renamed."""
    out = {}
    for key, value in values.items():
        renamed = value
        for placeholder, real in names.items():
            renamed = renamed.replace(placeholder, real)
        out[key] = renamed
    return out
