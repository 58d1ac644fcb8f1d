"""One kubeconfig renderer: one cluster, one user, one context, read back by the runner's parser."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgemodel_sandbox.kubeconfig import render
from edgemodel_sandbox.realnode.plan import kubeconfig as node_kubeconfig
from edgemodel_sandbox.runner.credentials import kubeconfig_document
from edgemodel_sandbox.runner.kube import parse_kubeconfig


def test_a_token_kubeconfig_names_its_cluster_user_and_context() -> None:
    config = render("c", {"server": "https://127.0.0.1:6443"}, "admin", {"token": "t"})
    assert config == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "admin", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "admin"}}],
        "current-context": "c",
    }
    read = parse_kubeconfig(yaml.safe_load(yaml.safe_dump(config)))
    assert read.credentials.server == "https://127.0.0.1:6443"


def test_the_real_nodes_kubeconfig_uses_client_certificates_under_context_default() -> None:
    config = node_kubeconfig(
        "https://10.0.0.1:6443", Path("/ca.crt"), Path("/k.crt"), Path("/k.key"), "kubelet"
    )
    assert config["current-context"] == "default"
    assert config["contexts"] == [
        {"name": "default", "context": {"cluster": "edgemodel-sandbox", "user": "kubelet"}}
    ]
    assert config["users"][0]["user"] == {"client-certificate": "/k.crt", "client-key": "/k.key"}


def test_a_pods_kubeconfig_carries_its_namespace() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = kubeconfig_document("tok", "CA", "team-a", env)
    assert config["contexts"][0]["context"] == {
        "cluster": "in-cluster",
        "user": "serviceaccount",
        "namespace": "team-a",
    }
    assert config["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
