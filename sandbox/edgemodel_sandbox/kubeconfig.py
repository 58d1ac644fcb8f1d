"""Owns rendering a kubeconfig: one cluster, one user, one context, as the sandbox's admin, its
real node's kubelet and kube-proxy, and the pod runner's in-cluster clients each need one
(docs/architecture.md, "One convention each"). Pure: it returns the document; callers write it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def render(
    cluster_name: str,
    cluster: Mapping[str, Any],
    user_name: str,
    user: Mapping[str, Any],
    *,
    context: str = "",
    namespace: str | None = None,
) -> dict[str, Any]:
    """A kubeconfig whose current context (`context`, else the cluster's name) pairs the one
    cluster (`server` plus its CA) with the one user (token or client certificate)."""
    context_name = context or cluster_name
    binding: dict[str, Any] = {"cluster": cluster_name, "user": user_name}
    if namespace is not None:
        binding["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": dict(cluster)}],
        "users": [{"name": user_name, "user": dict(user)}],
        "contexts": [{"name": context_name, "context": binding}],
        "current-context": context_name,
    }
