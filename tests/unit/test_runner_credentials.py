"""What a pod reads before it runs, through the pod runner: its ConfigMaps and Secrets
(decoded), a token for its service account bound to the pod, and the kubeconfig that hands
its in-cluster credentials to its processes. The API is a fake that records requests.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

from edgemodel_operator.kube import KubeError
from edgemodel_sandbox.runner import plan
from edgemodel_sandbox.runner.credentials import PodCredentials, kubeconfig_document

SERVICE_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


class FakeApi:
    """Objects by path; a scripted TokenRequest answer; every request made."""

    def __init__(self, objects: dict[str, Any], token: str | KubeError = "") -> None:
        self.objects = objects
        self.token = token
        self.requests: list[tuple[str, str, Any]] = []

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        self.requests.append(("GET", path, None))
        found = self.objects.get(path)
        if isinstance(found, KubeError):
            raise found
        return found

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        self.requests.append((method, path, body))
        if isinstance(self.token, KubeError):
            raise self.token
        return {"status": {"token": self.token}}


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"containers": [{"name": "c", "image": "i", **spec.pop("container", {})}], **spec},
    }


TOKEN_VOLUME = {
    "name": "kube-api-access",
    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
}


def test_config_maps_and_secrets_are_read_and_secrets_decoded(tmp_path: Path) -> None:
    api = FakeApi(
        {
            "/api/v1/namespaces/ns/configmaps/settings": {"data": {"level": "debug"}},
            "/api/v1/namespaces/ns/secrets/keys": {
                "data": {"key": base64.b64encode(b"s3cret").decode()}
            },
        }
    )
    env_from = [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "keys"}}]
    objects = PodCredentials(api, "ns", tmp_path, SERVICE_ENV).fetch(
        pod(container={"envFrom": env_from})
    )
    assert objects == {
        ("configmaps", "settings"): {"level": "debug"},
        ("secrets", "keys"): {"key": "s3cret"},
    }


def test_missing_and_unreadable_objects_are_left_out(tmp_path: Path) -> None:
    api = FakeApi({"/api/v1/namespaces/ns/secrets/denied": KubeError(403, "forbidden")})
    env_from = [{"configMapRef": {"name": "absent"}}, {"secretRef": {"name": "denied"}}]
    objects = PodCredentials(api, "ns", tmp_path, SERVICE_ENV).fetch(
        pod(container={"envFrom": env_from})
    )
    assert objects == {}


def test_no_token_is_minted_unless_a_volume_asks(tmp_path: Path) -> None:
    api = FakeApi({}, token="t0k3n")
    unit = PodCredentials(api, "ns", tmp_path, SERVICE_ENV)
    assert unit.fetch(pod()) == {}
    assert [r for r in api.requests if r[0] == "POST"] == []
    assert not unit.kubeconfig.exists()


def test_a_token_bound_to_the_pod_and_a_private_kubeconfig(tmp_path: Path) -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMII...\n-----END CERTIFICATE-----\n"
    api = FakeApi(
        {"/api/v1/namespaces/ns/configmaps/kube-root-ca.crt": {"data": {"ca.crt": ca}}},
        token="t0k3n",
    )
    spec = pod(
        serviceAccountName="robot",
        volumes=[
            TOKEN_VOLUME,
            {"name": "ca", "configMap": {"name": "kube-root-ca.crt"}},
        ],
    )
    unit = PodCredentials(api, "ns", tmp_path / "pod", SERVICE_ENV)
    objects = unit.fetch(spec)
    assert objects[(plan.SERVICE_ACCOUNT_TOKEN, "robot")] == {"token": "t0k3n"}
    [(_, path, body)] = [r for r in api.requests if r[0] == "POST"]
    assert path == "/api/v1/namespaces/ns/serviceaccounts/robot/token"
    assert body["spec"]["boundObjectRef"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "p",
        "uid": "u-1",
    }
    assert stat.S_IMODE(unit.kubeconfig.stat().st_mode) == 0o600
    config = json.loads(unit.kubeconfig.read_text())
    assert config == kubeconfig_document("t0k3n", ca, "ns", SERVICE_ENV)
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.96.0.1:443"
    assert base64.b64decode(cluster["certificate-authority-data"]).decode() == ca
    assert config["users"][0]["user"] == {"token": "t0k3n"}
    assert config["contexts"][0]["context"]["namespace"] == "ns"


def test_a_refused_token_leaves_no_credentials(tmp_path: Path) -> None:
    api = FakeApi({}, token=KubeError(403, "forbidden"))
    unit = PodCredentials(api, "ns", tmp_path, SERVICE_ENV)
    assert unit.fetch(pod(volumes=[TOKEN_VOLUME])) == {}
    assert not unit.kubeconfig.exists()


def test_each_fetch_mints_a_fresh_token(tmp_path: Path) -> None:
    api = FakeApi({}, token="first")
    unit = PodCredentials(api, "ns", tmp_path, SERVICE_ENV)
    unit.fetch(pod(volumes=[TOKEN_VOLUME]))
    api.token = "second"
    objects = unit.fetch(pod(volumes=[TOKEN_VOLUME]))
    assert objects[(plan.SERVICE_ACCOUNT_TOKEN, "default")] == {"token": "second"}
    assert json.loads(unit.kubeconfig.read_text())["users"][0]["user"]["token"] == "second"
