"""The artifact store in TokenReview mode against the sandbox's real API server: a compression
Job pod's projected token (audience `edgemodel-artifacts`, bound to the pod) may write its own
EdgeModel's records and nothing else; every other token is played as an attack. The same store
collects, from the live EdgeModel list, a blob no EdgeModel references and keeps one that is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgemodel_sandbox.demo import store_rbac
from tests.conftest import Cluster
from tests.integration.artifacts.support import ArtifactServer

pytestmark = [pytest.mark.sandbox]

AUDIENCE = "edgemodel-artifacts"


def _apply(cluster: Cluster, manifest: dict[str, Any]) -> dict[str, Any]:
    out = cluster.kubectl("apply", "-o", "json", "-f", "-", input=json.dumps(manifest)).stdout
    applied: dict[str, Any] = json.loads(out)
    return applied


def _token(cluster: Cluster, namespace: str, account: str, *extra: str) -> str:
    return cluster.kubectl("create", "token", account, "-n", namespace, *extra).stdout.strip()


@pytest.fixture
def store_account(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for the store: its own ServiceAccount with the chart's store ClusterRole."""
    name = f"artifact-store-{namespace}"
    _apply(cluster, {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": "store", "namespace": namespace}})  # fmt: skip
    for item in store_rbac(namespace, "store", name=name):  # the chart's rules
        _apply(cluster, item)
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster_entry = next(
        c for c in admin["clusters"] if c["name"] == context["context"]["cluster"]
    )["cluster"]
    if "certificate-authority" in cluster_entry:
        ca = Path(cluster_entry["certificate-authority"]).read_bytes()
        cluster_entry = {"server": cluster_entry["server"],
                         "certificate-authority-data": base64.b64encode(ca).decode()}  # fmt: skip
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "store",
        "clusters": [{"name": "c", "cluster": cluster_entry}],
        "users": [{"name": "store", "user": {"token": _token(cluster, namespace, "store")}}],
        "contexts": [{"name": "store", "context": {"cluster": "c", "user": "store"}}],
    }  # fmt: skip
    path = tmp_path / "store.kubeconfig"
    path.write_text(json.dumps(config))
    yield path
    cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)


@pytest.fixture
def store(store_account: Path, tmp_path: Path) -> Iterator[ArtifactServer]:
    instance = ArtifactServer(
        tmp_path / "store",
        writers=["--token-review", "--gc-interval-s", "1", "--gc-grace-s", "0"],
        token=None,
        env={"KUBECONFIG": str(store_account)},
    ).start()
    yield instance
    if instance.process is not None and instance.process.poll() is None:
        instance.stop()


def _edgemodel(cluster: Cluster, namespace: str, model_sha: str) -> dict[str, Any]:
    return _apply(cluster, {
        "apiVersion": "edgemodel.dev/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "digits", "namespace": namespace},
        "spec": {"model": {"uri": "https://models.example.com/m.onnx", "sha256": model_sha},
                 "targets": [{"name": "cpu", "arch": "amd64"}]},
    })  # fmt: skip


def _compression_pod(
    cluster: Cluster, namespace: str, owner: dict[str, Any] | None, labels: dict[str, str]
) -> dict[str, Any]:
    """A Job like the operator's (owner: its EdgeModel) and the pod the Job controller makes;
    the pod stays Pending (no node matches), so its bound token stays valid."""
    name = f"job-{uuid.uuid4().hex[:6]}"
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [{
            "apiVersion": "edgemodel.dev/v1alpha1", "kind": "EdgeModel",
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True,
        }]  # fmt: skip
    _apply(cluster, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "nodeSelector": {"edgemodel.dev/no-such-node": "true"},
            "containers": [{"name": "publish", "image": "edgemodel/none:0"}],
        }}},
    })  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        selector = f"job-name={name}"
        listing = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        pods = json.loads(listing.stdout)["items"]
        if pods:
            pod: dict[str, Any] = pods[0]
            return pod
        time.sleep(0.5)
    raise AssertionError(f"the Job controller made no pod for {name} in 60 s")


def _pod_token(cluster: Cluster, pod: dict[str, Any], audience: str = AUDIENCE) -> str:
    meta = pod["metadata"]
    return _token(
        cluster, meta["namespace"], "default", "--audience", audience,
        "--bound-object-kind", "Pod", "--bound-object-name", meta["name"],
        "--bound-object-uid", meta["uid"],
    )  # fmt: skip


OPERATOR_LABELS = {
    "app.kubernetes.io/managed-by": "edgemodel-operator",
    "app.kubernetes.io/component": "compression",
}


def _put_record(
    store: ArtifactServer, token: str, namespace: str, uid: str, sha: str
) -> tuple[int, str]:
    digest = hashlib.sha256(f"{namespace}/{uid}".encode()).hexdigest()
    status, _, body = store.request(
        "PUT",
        f"/v1/records/{namespace}/{uid}/{digest}/amd64",
        json.dumps({"artifactSha256": sha, "report": {}}).encode(),
        {"Authorization": f"Bearer {token}"},
    )
    return status, body.decode()


def _put_blob(store: ArtifactServer, token: str, data: bytes) -> int:
    sha = hashlib.sha256(data).hexdigest()
    headers = {"Authorization": f"Bearer {token}"}
    return store.request("PUT", f"/v1/artifacts/{sha}", data, headers)[0]


@pytest.mark.usefixtures("crd")
def test_only_a_compression_job_of_the_edgemodel_writes_its_records(
    cluster: Cluster, namespace: str, store: ArtifactServer
) -> None:
    data = b"gated artifact" * 100
    sha = hashlib.sha256(data).hexdigest()
    model = _edgemodel(cluster, namespace, sha)  # named by it, so the collector keeps the blob
    uid = model["metadata"]["uid"]
    job_pod = _compression_pod(cluster, namespace, model, OPERATOR_LABELS)
    token = _pod_token(cluster, job_pod)

    # The operator's Job: blob and its own EdgeModel's record.
    assert _put_blob(store, token, data) == 201
    status, body = _put_record(store, token, namespace, uid, sha)
    assert status == 201, body
    # ... but not another EdgeModel's (another UID, or the same UID in another namespace).
    other_uid = str(uuid.uuid4())
    assert _put_record(store, token, namespace, other_uid, sha)[0] == 403
    assert _put_record(store, token, "default", uid, sha)[0] == 403

    # Attack: the same pod's token minted for the API server's audience, not the store's.
    assert _put_record(store, _pod_token(cluster, job_pod, "https://kubernetes.default.svc"),
                       namespace, uid, sha)[0] == 401  # fmt: skip
    # Attack: a Job made by someone else (not the operator's labels), same EdgeModel owner.
    forged = _compression_pod(cluster, namespace, model, {"app": "mine"})
    status, body = _put_record(store, _pod_token(cluster, forged), namespace, uid, sha)
    assert status == 403, body
    # Attack: a Job with the operator's labels but owned by no EdgeModel.
    orphan = _compression_pod(cluster, namespace, None, OPERATOR_LABELS)
    assert _put_record(store, _pod_token(cluster, orphan), namespace, uid, sha)[0] == 403
    # Attack: a token for the store's audience that is bound to no pod: blobs only.
    loose = _token(cluster, namespace, "default", "--audience", AUDIENCE)
    assert _put_blob(store, loose, b"just bytes" * 10) == 201
    assert _put_record(store, loose, namespace, uid, sha)[0] == 403


@pytest.mark.usefixtures("crd")
def test_the_collector_keeps_what_an_edgemodel_names_and_drops_the_rest(
    cluster: Cluster, namespace: str, store: ArtifactServer
) -> None:
    source = b"a model an EdgeModel names" * 50
    orphan = b"bytes nobody names" * 50
    source_sha, orphan_sha = (hashlib.sha256(d).hexdigest() for d in (source, orphan))
    model = _edgemodel(cluster, namespace, source_sha)
    token = _pod_token(cluster, _compression_pod(cluster, namespace, model, OPERATOR_LABELS))
    assert _put_blob(store, token, source) == 201
    assert _put_blob(store, token, orphan) == 201
    blobs = store.root / "artifacts"
    deadline = time.monotonic() + 30
    while (blobs / orphan_sha).exists():
        assert time.monotonic() < deadline, f"not collected in 30 s: {store.log}"
        time.sleep(0.5)
    assert (blobs / source_sha).exists()
