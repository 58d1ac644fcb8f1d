"""Fixtures for end-to-end tests: the operator running against the sandbox, the in-cluster
artifact store reachable from the test, and the digits model (plus its calibration and
evaluation data) seeded into that store so EdgeModels can point at http URIs of it."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgemodel_sandbox.models import ModelFixture, digits_classifier, sha256_file
from tests.conftest import Cluster

STORE_NS = "edgemodel-system"
STORE_SVC = "edgemodel-artifacts"


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


@dataclass
class Operator:
    """The operator process, restartable (and killable) by tests."""

    cluster: Cluster
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        env = dict(os.environ, KUBECONFIG=str(self.cluster.kubeconfig))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgemodel_cli.main",
                "operator",
                "--standalone",
                "--resolve-services-via-endpoints",
                # Only the e2e tests' namespaces: other tests' EdgeModels stay untouched.
                "--namespace",
                f"{E2E_PREFIX}*",
                "--workers",
                "4",
                # The sandbox's GPU nodes are simulated: their servers run on the CPU build of
                # onnxruntime, so a strict GPU target would never be Ready here.
                "--allow-gpu-provider-fallback",
                *(
                    ["--prometheus-url", self.cluster.prometheus_url]
                    if self.cluster.prometheus_url
                    else []
                ),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl; a killed run leaves no operator
        )
        log.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


E2E_PREFIX = "e2e-"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace the e2e operator watches (it watches e2e-* only)."""
    name = f"{E2E_PREFIX}{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, crd: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    # The operator runs its own artifact store here (no chart): grant its account what the
    # chart would (TokenReview for authenticated writes), as the sandbox demo does.
    import yaml

    from edgemodel_sandbox.demo import store_rbac

    cluster.kubectl("create", "namespace", STORE_NS, check=False)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(store_rbac(STORE_NS, STORE_SVC)))
    op = Operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.kill(signal.SIGTERM)


def _endpoint(cluster: Cluster, namespace: str, service: str, port_name: str) -> str | None:
    result = cluster.kubectl(
        "get",
        "endpointslices",
        "-n",
        namespace,
        "-l",
        f"kubernetes.io/service-name={service}",
        "-o",
        "json",
        check=False,
    )
    if result.returncode != 0:
        return None
    for item in json.loads(result.stdout)["items"]:
        port = next(
            (p["port"] for p in item.get("ports") or [] if p.get("name") == port_name), None
        )
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") and port:
                return f"{endpoint['addresses'][0]}:{port}"
    return None


def wait_for(
    what: str, check: Any, timeout: float, interval: float = 1.0, on_fail: Any = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    detail = on_fail() if on_fail else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")


@pytest.fixture(scope="session")
def store_url(cluster: Cluster, operator: Operator) -> str:
    address = wait_for(
        "the artifact store to be ready",
        lambda: _endpoint(cluster, STORE_NS, STORE_SVC, "http"),
        180,
        on_fail=operator.log_tail,
    )
    return f"http://{address}"


@dataclass(frozen=True)
class Seeded:
    """The digits fixture, uploaded to the in-cluster store."""

    fixture: ModelFixture
    model_uri: str
    evaluation: tuple[str, str]  # uri, sha256
    calibration: tuple[str, str]


def edgemodel(name: str, seeded: Seeded, body: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """An EdgeModel manifest serving the seeded model: `body` with `spec`'s keys on top."""
    model = {"uri": seeded.model_uri, "sha256": seeded.fixture.sha256}
    return {
        "apiVersion": "edgemodel.dev/v1alpha1",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {"model": model, **body, **spec},
    }


def get_em(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        cluster.kubectl("get", "em", name, "-n", ns, "-o", "json").stdout
    )
    return result


@pytest.fixture(scope="session")
def store_token(cluster: Cluster, store_url: str) -> str:
    """A token for the store's audience bound to no pod: it may upload blobs, not records."""
    return cluster.kubectl(
        "create", "token", STORE_SVC, "-n", STORE_NS, "--audience", "edgemodel-artifacts"
    ).stdout.strip()


def _upload(store: str, path: Path, token: str) -> str:
    digest = sha256_file(path)
    request = urllib.request.Request(
        f"{store}/v1/artifacts/{digest}",
        data=path.read_bytes(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)
    return digest


IN_CLUSTER = f"http://{STORE_SVC}.{STORE_NS}.svc:8080"


@pytest.fixture(scope="session")
def seeded(store_url: str, store_token: str) -> Seeded:
    fixture = digits_classifier()
    model_sha = _upload(store_url, fixture.model, store_token)
    eval_sha = _upload(store_url, fixture.evaluation, store_token)
    calib_sha = _upload(store_url, fixture.calibration, store_token)
    return Seeded(
        fixture,
        f"{IN_CLUSTER}/v1/artifacts/{model_sha}",
        (f"{IN_CLUSTER}/v1/artifacts/{eval_sha}", eval_sha),
        (f"{IN_CLUSTER}/v1/artifacts/{calib_sha}", calib_sha),
    )


def describe_for(cluster: Cluster, ns: str, name: str, operator: Operator) -> Any:
    """What a failed wait prints: the EdgeModel, its workloads and the operator's log tail."""

    def detail() -> str:
        em = cluster.kubectl("get", "em", name, "-n", ns, "-o", "yaml", check=False).stdout
        pods = cluster.kubectl(
            "get", "pods,jobs,deploy", "-n", ns, "-o", "wide", check=False
        ).stdout
        return f"{em}\n{pods}\n--- operator log ---\n{operator.log_tail()}"

    return detail


def events(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    """The Events posted on one EdgeModel, oldest first."""
    out = cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=EdgeModel",
        "-o",
        "json",
    ).stdout
    return sorted(json.loads(out)["items"], key=lambda e: e.get("lastTimestamp") or "")
