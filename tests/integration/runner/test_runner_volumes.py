"""Volumes as the kubelet gives them: a PersistentVolumeClaim is provisioned by the runner's
local-path provisioner, bound by the real PV controller and shared by pods; a hostPath folder
belongs to its node and outlives the pods on it; an emptyDir belongs to one pod, is shared by
its containers and goes with it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.models import ModelFixture, digits_classifier
from tests.conftest import Cluster
from tests.integration.runner.conftest import (
    apply,
    container,
    get,
    pod_manifest,
    pod_phase,
    terminated,
    wait_for,
)

pytestmark = [pytest.mark.sandbox]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelFixture, str]:
    """The digits model and the key `edgemodel compress --mode=none` files its artifact under."""
    model = digits_classifier()
    out = tmp_path_factory.mktemp("artifact")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edgemodel_cli.main",
            "compress",
            str(model.model),
            "--mode=none",
            f"--output={out}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (artifact_file,) = out.glob("*/model.onnx")
    return model, artifact_file.parent.name


def writer(model: ModelFixture, mount: str, volume: str) -> dict[str, Any]:
    return container(
        "write",
        "compress",
        str(model.model),
        "--mode=none",
        f"--output={mount}",
        volumeMounts=[{"name": volume, "mountPath": mount}],
    )


def reader(key: str, mount: str, volume: str) -> dict[str, Any]:
    # Reading the artifact back: compress it again from the volume into a scratch folder.
    return container(
        "read",
        "compress",
        f"{mount}/{key}/model.onnx",
        "--mode=none",
        "--output=/scratch",
        terminationMessagePolicy="FallbackToLogsOnError",
        volumeMounts=[
            {"name": volume, "mountPath": mount},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    )


def finish(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    wait_for(lambda: pod_phase(cluster, namespace, name), 60, f"pod {name} to finish")
    pod = get(cluster, namespace, "pod", name)
    assert pod is not None
    return pod


SCRATCH = {"name": "scratch", "emptyDir": {}}


def test_claim_is_provisioned_bound_shared_and_reclaimed(
    cluster: Cluster, namespace: str, runner: Path, artifact: tuple[ModelFixture, str]
) -> None:
    model, key = artifact
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "store"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    }
    apply(cluster, namespace, claim)

    def bound() -> dict[str, Any] | None:
        found = get(cluster, namespace, "pvc", "store")
        return found if ((found or {}).get("status") or {}).get("phase") == "Bound" else None

    found = wait_for(bound, 30, "the claim to be Bound")
    assert found["spec"]["storageClassName"] == "local-path"  # the default class
    volume = get(cluster, namespace, "pv", found["spec"]["volumeName"])
    assert volume is not None
    assert volume["spec"]["capacity"]["storage"] == "64Mi"
    folder = Path(volume["spec"]["hostPath"]["path"])
    assert folder.parent == runner / "pvs" and folder.is_dir()

    store = {"name": "store", "persistentVolumeClaim": {"claimName": "store"}}
    apply(cluster, namespace, pod_manifest("w", writer(model, "/store", "store"), volumes=[store]))
    assert finish(cluster, namespace, "w")["status"]["phase"] == "Succeeded"
    assert (folder / key / "model.onnx").is_file()
    pod = pod_manifest("r", reader(key, "/store", "store"), volumes=[store, SCRATCH])
    apply(cluster, namespace, pod)
    read = finish(cluster, namespace, "r")
    assert read["status"]["phase"] == "Succeeded", terminated(read)

    cluster.kubectl("delete", "-n", namespace, "pod", "w", "r", "--wait=true", timeout=60)
    cluster.kubectl("delete", "-n", namespace, "pvc", "store", "--wait=true", timeout=60)
    name = volume["metadata"]["name"]
    wait_for(lambda: get(cluster, namespace, "pv", name) is None, 30, "the volume to go")
    wait_for(lambda: not folder.exists(), 10, "the volume's folder to go")


def test_host_path_belongs_to_its_node_and_outlives_pods(
    cluster: Cluster, namespace: str, runner: Path, artifact: tuple[ModelFixture, str]
) -> None:
    model, key = artifact
    cache = {"name": "cache", "hostPath": {"path": f"/var/cache/{namespace}", "type": ""}}

    def on(node: str) -> dict[str, str]:
        return {"kubernetes.io/hostname": node}

    first = pod_manifest(
        "w", writer(model, "/cache", "cache"), volumes=[cache], nodeSelector=on("edge-amd64-0")
    )
    apply(cluster, namespace, first)
    assert finish(cluster, namespace, "w")["status"]["phase"] == "Succeeded"
    assert (runner / "nodes" / "edge-amd64-0" / "var" / "cache" / namespace / key).is_dir()
    cluster.kubectl("delete", "-n", namespace, "pod", "w", "--wait=true", timeout=60)

    # A later pod on the same node finds the cache; a pod on another node has its own.
    same = pod_manifest(
        "same",
        reader(key, "/cache", "cache"),
        volumes=[cache, SCRATCH],
        nodeSelector=on("edge-amd64-0"),
    )
    other = pod_manifest(
        "other",
        reader(key, "/cache", "cache"),
        volumes=[cache, SCRATCH],
        nodeSelector=on("edge-amd64-1"),
    )
    apply(cluster, namespace, same, other)
    assert finish(cluster, namespace, "same")["status"]["phase"] == "Succeeded"
    missed = finish(cluster, namespace, "other")
    assert missed["status"]["phase"] == "Failed"
    assert terminated(missed)["exitCode"] == 2
    assert "model.onnx" in terminated(missed)["message"]


def test_empty_dir_is_shared_in_a_pod_and_private_to_it(
    cluster: Cluster, namespace: str, runner: Path, artifact: tuple[ModelFixture, str]
) -> None:
    model, key = artifact
    # An init container writes into the pod's emptyDir, the main container reads it back.
    shared = pod_manifest(
        "shared",
        reader(key, "/work", "work"),
        initContainers=[writer(model, "/work", "work")],
        volumes=[{"name": "work", "emptyDir": {}}, SCRATCH],
    )
    # Another pod with the same emptyDir finds it empty.
    alone = pod_manifest(
        "alone",
        reader(key, "/work", "work"),
        volumes=[{"name": "work", "emptyDir": {}}, SCRATCH],
    )
    apply(cluster, namespace, shared)
    done = finish(cluster, namespace, "shared")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    apply(cluster, namespace, alone)
    assert finish(cluster, namespace, "alone")["status"]["phase"] == "Failed"

    uid = done["metadata"]["uid"]
    (folder,) = (runner / "pods").glob(f"{namespace}_shared_{uid}")
    assert (folder / "volumes" / "work" / key / "model.onnx").is_file()
    cluster.kubectl("delete", "-n", namespace, "pod", "shared", "--wait=true", timeout=60)
    wait_for(lambda: not (folder / "volumes").exists(), 10, "the pod's emptyDir to go")


def test_config_maps_and_secrets_reach_env_and_files(
    cluster: Cluster, namespace: str, runner: Path, artifact: tuple[ModelFixture, str]
) -> None:
    model, _ = artifact
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"model": str(model.model), "mode": "none"},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"token": "s3cret"},
    }
    job = container(
        "c",
        "compress",
        "$(MODEL)",
        "--mode=$(MODE)",
        "--output=/scratch",
        env=[
            {
                "name": "MODEL",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "model"}},
            },
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        ],
        volumeMounts=[
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "creds", "mountPath": "/etc/creds"},
        ],
    )
    pod = pod_manifest(
        "cfg", job, volumes=[SCRATCH, {"name": "creds", "secret": {"secretName": "creds"}}]
    )
    apply(cluster, namespace, config, secret)
    apply(cluster, namespace, pod)
    done = finish(cluster, namespace, "cfg")
    assert done["status"]["phase"] == "Succeeded", terminated(done)
    uid = done["metadata"]["uid"]
    (folder,) = (runner / "pods").glob(f"{namespace}_cfg_{uid}")
    assert (folder / "volumes" / "creds" / "token").read_text() == "s3cret"


def test_missing_config_map_waits_then_starts_when_it_appears(
    cluster: Cluster, namespace: str, runner: Path, artifact: tuple[ModelFixture, str]
) -> None:
    model, _ = artifact
    job = container(
        "c",
        "compress",
        "$(MODEL)",
        "--mode=none",
        "--output=/scratch",
        env=[{"name": "MODEL", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "m"}}}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    apply(cluster, namespace, pod_manifest("late", job, volumes=[SCRATCH]))

    def config_error() -> bool:
        pod = get(cluster, namespace, "pod", "late")
        for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
            waiting = status["state"].get("waiting") or {}
            if waiting.get("reason") == "CreateContainerConfigError":
                return "late" in waiting.get("message", "")
        return False

    wait_for(config_error, 30, "CreateContainerConfigError")
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "late"},
        "data": {"m": str(model.model)},
    }
    apply(cluster, namespace, config)
    assert finish(cluster, namespace, "late")["status"]["phase"] == "Succeeded"
