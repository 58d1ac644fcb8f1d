"""Owns what a pod reads from the API before it runs: ConfigMaps, Secrets and its token.

`PodCredentials.fetch` reads every ConfigMap and Secret the pod's env and volumes name
(Secrets decoded), mints a token for the pod's service account with the TokenRequest API
when a projected volume asks for one (bound to the pod, as the kubelet does), and writes
the pod's in-cluster credentials as a kubeconfig, since these processes share the host's
filesystem and cannot find them at /var/run/secrets/kubernetes.io/serviceaccount. The
result feeds `plan.plan_pod` and `plan.volume_sources`, which turn it into env and files;
a later `fetch` (the supervisor retries while a reference is missing) mints a fresh token
(docs/architecture.md, "The pod runner").
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.kubeconfig import render as render_kubeconfig
from edgemodel_sandbox.runner import plan

log = logging.getLogger("edgemodel.runner")

TOKEN_SECONDS = 86400

Objects = dict[tuple[str, str], dict[str, str]]


class ApiReader(Protocol):
    """The reads (and the TokenRequest) a pod's preparation makes (`kube.SyncKube` is one)."""

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None: ...

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]: ...


def object_data(kind: str, found: Mapping[str, Any]) -> dict[str, str]:
    """A ConfigMap's data, or a Secret's data decoded, as strings."""
    data = {str(k): str(v) for k, v in (found.get("data") or {}).items()}
    if kind == "secrets":
        data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
    return data


def token_audiences(pod: Mapping[str, Any]) -> list[str]:
    """The audiences the pod's projected serviceAccountToken sources ask for (kubelet: one
    token per source; here one token for all, so at most one audience is honoured)."""
    found = {
        str(source["serviceAccountToken"]["audience"])
        for volume in (pod.get("spec") or {}).get("volumes") or []
        for source in (volume.get("projected") or {}).get("sources") or []
        if (source.get("serviceAccountToken") or {}).get("audience")
    }
    return sorted(found)[:1]


def token_request(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A TokenRequest bound to the pod, so the token dies with it, for the audience its
    projected volume asks for (e.g. the artifact store's `edgemodel-artifacts`)."""
    meta = pod.get("metadata") or {}
    spec: dict[str, Any] = {
        "expirationSeconds": TOKEN_SECONDS,
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta.get("name"),
            "uid": meta.get("uid"),
        },
    }
    audiences = token_audiences(pod)
    if audiences:
        spec["audiences"] = audiences
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


def kubeconfig_document(
    token: str, ca: str, namespace: str, service_env: Mapping[str, str]
) -> dict[str, Any]:
    """The pod's in-cluster credentials as a kubeconfig: the `kubernetes` Service's address
    (from the containers' environment), the cluster CA, the token and the pod's namespace."""
    host = service_env.get("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    port = service_env.get("KUBERNETES_SERVICE_PORT", "443")
    cluster = {
        "server": f"https://{host}:{port}",
        "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
    }
    return render_kubeconfig(
        "in-cluster", cluster, "serviceaccount", {"token": token}, namespace=namespace
    )


class PodCredentials:
    """The objects and the service-account token one pod reads, and its kubeconfig file."""

    def __init__(
        self, api: ApiReader, namespace: str, pod_dir: Path, service_env: Mapping[str, str]
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._pod_dir = pod_dir
        self._service_env = service_env

    @property
    def kubeconfig(self) -> Path:
        """The pod's KUBECONFIG (it exists once a token was minted)."""
        return self._pod_dir / "serviceaccount.kubeconfig"

    def fetch(self, pod: Mapping[str, Any]) -> Objects:
        """(kind, name) -> data of what the pod references and exists; the token under
        (`plan.SERVICE_ACCOUNT_TOKEN`, account) when one is wanted and could be minted."""
        objects: Objects = {}
        for kind, name in plan.referenced_objects(pod):
            try:
                found = self._api.get(f"/api/v1/namespaces/{self._namespace}/{kind}/{name}")
            except KubeError as exc:
                log.warning("reading %s/%s failed: %s", kind, name, exc)
                continue
            if found is not None:
                objects[(kind, name)] = object_data(kind, found)
        if plan.wants_token(pod):
            token = self.token(pod)
            if token:
                objects[(plan.SERVICE_ACCOUNT_TOKEN, plan.service_account(pod))] = {"token": token}
                ca = objects.get(("configmaps", "kube-root-ca.crt"), {}).get("ca.crt", "")
                self.write_kubeconfig(token, ca)
        return objects

    def token(self, pod: Mapping[str, Any]) -> str:
        """A token for the pod's service account, bound to the pod; "" when refused."""
        account = plan.service_account(pod)
        try:
            found = self._api.request(
                "POST",
                f"/api/v1/namespaces/{self._namespace}/serviceaccounts/{account}/token",
                body=token_request(pod),
            )
        except KubeError as exc:
            log.warning("no token for service account %s: %s", account, exc)
            return ""
        return str((found.get("status") or {}).get("token") or "")

    def write_kubeconfig(self, token: str, ca: str) -> None:
        """The pod's in-cluster credentials as a kubeconfig only its owner can read."""
        config = kubeconfig_document(token, ca, self._namespace, self._service_env)
        self._pod_dir.mkdir(parents=True, exist_ok=True)
        # Created unreadable to others from the start; an older file gets the mode too.
        fd = os.open(self.kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(config))
        self.kubeconfig.chmod(0o600)
