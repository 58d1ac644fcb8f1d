"""Owns who may write to the artifact store: bearer tokens to identities, identities to scopes.

Every PUT carries `Authorization: Bearer <token>`; reads stay anonymous (they are
digest-verified by the reader). Two authenticators:

- `TokenReviewAuth` (in a cluster; the default there): the token must be a projected
  ServiceAccount token minted for the audience `edgemodel-artifacts` (`AUDIENCE`); the store asks
  the API server (TokenReview) whose it is. A token bound to a pod of a compression Job the
  operator created (pod -> controller Job labelled `app.kubernetes.io/managed-by:
  edgemodel-operator`, component `compression` -> controller EdgeModel) may write records of that
  EdgeModel only: scope (namespace, EdgeModel UID). Any other valid token for the audience may
  upload blobs only (content-addressed bytes cannot change what a digest means; the quota bounds
  them). Trust boundary: whoever can create Jobs in a namespace can forge that chain there, but
  can also edit the namespace's EdgeModels directly, so this grants nothing new.
- `StaticTokens` (`--write-token-file`, for local use and the sandbox): lines `TOKEN [NS/UID]`;
  a token without a scope may write any record.

With neither, the server refuses every write unless `--insecure-allow-anonymous-writes`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind

AUDIENCE = "edgemodel-artifacts"
MANAGER = "edgemodel-operator"
EDGEMODEL_API = "edgemodel.dev/"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
IN_CLUSTER_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


@dataclass(frozen=True)
class Identity:
    """Who wrote: a subject for the log, and the EdgeModel whose records it may write.

    `scope` None: blobs only; ("*", "*"): any record; (namespace, uid): that EdgeModel's.
    """

    subject: str
    scope: tuple[str, str] | None

    def may_write_record(self, namespace: str, uid: str) -> bool:
        return self.scope is not None and self.scope in (("*", "*"), (namespace, uid))


class Authenticator(Protocol):
    """Turns a bearer token into an Identity, or None when the token is not accepted."""

    async def authenticate(self, token: str) -> Identity | None: ...


class AuthError(EdgeModelRuntimeError):
    """The authenticator itself failed (API server unreachable): answer 503, not 401."""

    failure = FailureKind.UNAVAILABLE


@dataclass(frozen=True)
class StaticTokens:
    """Shared secrets from a file: `TOKEN` (any record) or `TOKEN NAMESPACE/UID` per line."""

    tokens: tuple[tuple[str, tuple[str, str]], ...]

    @classmethod
    def load(cls, path: Path) -> StaticTokens:
        entries: list[tuple[str, tuple[str, str]]] = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) > 2 or (len(parts) == 2 and parts[1].count("/") != 1):
                raise ValueError(f"{path}:{number}: expected 'TOKEN [NAMESPACE/UID]'")
            if len(parts[0]) < 16:
                raise ValueError(f"{path}:{number}: token shorter than 16 characters")
            ns, _, uid = parts[1].partition("/") if len(parts) == 2 else ("*", "", "*")
            entries.append((parts[0], (ns, uid)))
        if not entries:
            raise ValueError(f"{path}: no tokens")
        return cls(tuple(entries))

    async def authenticate(self, token: str) -> Identity | None:
        for index, (known, scope) in enumerate(self.tokens):
            if hmac.compare_digest(known.encode(), token.encode()):
                return Identity(f"static-token-{index + 1}", scope)
        return None


@dataclass(frozen=True)
class Credentials:
    """One API server and how to talk to it: a bearer token and the CA (PEM) to trust."""

    server: str
    token: str
    ca_pem: str | None


@dataclass(frozen=True)
class KubeAPI:
    """Just enough of a Kubernetes API client (urllib, its own ServiceAccount token).

    Credentials are re-read before each call (a projected token is rotated on disk, a
    kubeconfig may be rewritten) and never copied anywhere.
    """

    source: Path  # the in-cluster token file, or a kubeconfig
    kubeconfig: bool = False
    server: str = ""  # in-cluster only: https://$KUBERNETES_SERVICE_HOST:PORT

    @classmethod
    def in_cluster(cls, host: str, port: str) -> KubeAPI:
        bracketed = f"[{host}]" if ":" in host else host
        return cls(IN_CLUSTER_TOKEN, False, f"https://{bracketed}:{port}")

    def credentials(self) -> Credentials:
        """ValueError when the source is unusable, naming it."""
        if self.kubeconfig:
            return _from_kubeconfig(self.source)
        try:
            token = self.source.read_text().strip()
            ca = IN_CLUSTER_CA.read_text() if IN_CLUSTER_CA.is_file() else None
        except OSError as exc:
            raise ValueError(f"{self.source}: {exc.strerror or exc}") from None
        return Credentials(self.server, token, ca)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; 404 -> {}, other failures -> AuthError."""
        try:
            creds = self.credentials()
        except ValueError as exc:
            raise AuthError(str(exc)) from None
        context = ssl.create_default_context(cadata=creds.ca_pem)
        headers = {"Authorization": f"Bearer {creds.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            creds.server + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                value = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise AuthError(f"{method} {path}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise AuthError(f"{method} {path}: {exc}") from None
        return value if isinstance(value, dict) else {}


def kube_api_from_env() -> KubeAPI:
    """The API server and credentials: $KUBECONFIG (token user) if set, else in-cluster.

    ValueError when neither is usable, naming what is missing.
    """
    path = os.environ.get("KUBECONFIG")
    if path:
        api = KubeAPI(Path(path), kubeconfig=True)
        api.credentials()  # checked now: a bad file fails the start
        return api
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
    )
    if not host or not IN_CLUSTER_TOKEN.is_file():
        raise ValueError(
            "--token-review needs $KUBECONFIG or an in-cluster ServiceAccount token "
            f"({IN_CLUSTER_TOKEN} and $KUBERNETES_SERVICE_HOST)"
        )
    return KubeAPI.in_cluster(host, port)


def _from_kubeconfig(path: Path) -> Credentials:
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        if "token" in user:
            token = str(user["token"])
        elif "tokenFile" in user:
            token = Path(user["tokenFile"]).read_text().strip()
        else:
            raise ValueError("--token-review needs a token user")
        ca: str | None = None
        if "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        elif "certificate-authority" in cluster:
            ca = Path(cluster["certificate-authority"]).read_text()
        server = str(cluster["server"]).rstrip("/")
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration, AttributeError) as exc:
        raise ValueError(f"$KUBECONFIG {path}: unusable ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        raise ValueError(f"$KUBECONFIG {path}: {exc}") from None
    return Credentials(server, token, ca)


def _controller(meta: dict[str, Any], kind: str, api_prefix: str) -> dict[str, Any] | None:
    for ref in meta.get("ownerReferences") or []:
        if (
            isinstance(ref, dict)
            and ref.get("controller")
            and ref.get("kind") == kind
            and str(ref.get("apiVersion", "")).startswith(api_prefix)
        ):
            return ref
    return None


def compression_scope(pod: dict[str, Any], job: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, EdgeModel UID) when `pod` belongs to an operator-made compression `job` (pure).

    Checks the pod's controller is that very Job (by UID), and the Job carries the operator's
    labels and is controlled by an EdgeModel.
    """
    pod_meta, job_meta = pod.get("metadata") or {}, job.get("metadata") or {}
    job_ref = _controller(pod_meta, "Job", "batch/")
    if job_ref is None or job_ref.get("uid") != job_meta.get("uid"):
        return None
    if job_meta.get("namespace") != pod_meta.get("namespace"):
        return None
    job_labels = job_meta.get("labels") or {}
    if job_labels.get("app.kubernetes.io/managed-by") != MANAGER:
        return None
    if job_labels.get("app.kubernetes.io/component") != "compression":
        return None
    owner = _controller(job_meta, "EdgeModel", EDGEMODEL_API)
    if owner is None or not isinstance(owner.get("uid"), str):
        return None
    return str(job_meta["namespace"]), str(owner["uid"])


@dataclass(frozen=True)
class TokenReviewAuth:
    """Projected ServiceAccount tokens for `audience`, reviewed by the API server."""

    api: KubeAPI
    audience: str = AUDIENCE

    def _review(self, token: str) -> Identity | None:
        review = self.api.call(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]},
            },
        )
        status = review.get("status") or {}
        if not status.get("authenticated") or self.audience not in (status.get("audiences") or []):
            return None
        user = status.get("user") or {}
        username = str(user.get("username", ""))
        extra = user.get("extra") or {}
        pod_names, pod_uids = extra.get(POD_NAME_EXTRA) or [], extra.get(POD_UID_EXTRA) or []
        parts = username.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not pod_names:
            return Identity(username, None)  # a valid token for us, not bound to a pod: blobs
        namespace = parts[2]
        pod = self.api.call("GET", f"/api/v1/namespaces/{namespace}/pods/{pod_names[0]}")
        if not pod or (pod.get("metadata") or {}).get("uid") not in pod_uids:
            return Identity(username, None)
        job_ref = _controller(pod.get("metadata") or {}, "Job", "batch/")
        if job_ref is None:
            return Identity(username, None)
        job = self.api.call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_ref['name']}")
        scope = compression_scope(pod, job) if job else None
        return Identity(f"{username} pod={namespace}/{pod_names[0]}", scope)

    async def authenticate(self, token: str) -> Identity | None:
        return await asyncio.to_thread(self._review, token)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
