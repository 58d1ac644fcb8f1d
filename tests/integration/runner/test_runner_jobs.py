"""Job pods run for real: the runner runs `edgemodel` as a local process, reports its exit
code and termination message, and the real Job controller completes or retries the Job.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.integration.runner.conftest import (
    apply,
    container,
    get,
    job_condition,
    job_manifest,
    pod_manifest,
    pod_phase,
    pods,
    terminated,
    wait_for,
)

pytestmark = [pytest.mark.sandbox]


def test_job_pod_runs_and_job_completes(
    cluster: Cluster, namespace: str, runner: Path, pod_network: ipaddress.IPv4Network
) -> None:
    apply(cluster, namespace, job_manifest("ok", container("c", "compress", "--help")))
    assert wait_for(lambda: job_condition(cluster, namespace, "ok"), 60, "Job ok") == "Complete"
    (pod,) = pods(cluster, namespace, "job-name=ok")
    status = pod["status"]
    assert status["phase"] == "Succeeded"
    assert ipaddress.IPv4Address(status["podIP"]) in pod_network
    assert status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["hostIP"] == "127.0.0.1"
    state = terminated(pod)
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    assert state["startedAt"] <= state["finishedAt"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "False",
        "Ready": "False",
    }
    # The container's real output went to its log under the runner's state folder.
    uid = pod["metadata"]["uid"]
    (log,) = (runner / "pods").glob(f"{namespace}_*_{uid}/logs/c/0.log")
    assert "usage: edgemodel compress" in log.read_text()


def test_failing_job_reports_exit_code_and_message_and_is_retried(
    cluster: Cluster, namespace: str, runner: Path
) -> None:
    failing = container(
        "c",
        "compress",
        "/no/such/model.onnx",
        "--output",
        "/out",
        terminationMessagePolicy="FallbackToLogsOnError",
        volumeMounts=[{"name": "out", "mountPath": "/out"}],
    )
    apply(
        cluster,
        namespace,
        job_manifest("bad", failing, backoff_limit=1, volumes=[{"name": "out", "emptyDir": {}}]),
    )
    assert wait_for(lambda: job_condition(cluster, namespace, "bad"), 90, "Job bad") == "Failed"
    attempts = pods(cluster, namespace, "job-name=bad")
    assert len(attempts) == 2, "backoffLimit 1: the Job controller retried once"
    for pod in attempts:
        assert pod["status"]["phase"] == "Failed"
        state = terminated(pod)
        assert state["exitCode"] == 2 and state["reason"] == "Error"
        # edgemodel compress names the problem in one line; the log tail is the message.
        assert "/no/such/model.onnx" in state["message"]
        assert "Traceback" not in state["message"]
    job = get(cluster, namespace, "job", "bad")
    assert job is not None
    assert job["status"]["failed"] == 2


def test_init_containers_run_in_order_before_the_container(
    cluster: Cluster, namespace: str, runner: Path
) -> None:
    pod = pod_manifest(
        "init",
        container("main", "compress", "--help"),
        initContainers=[
            container("first", "compress", "--help"),
            container("second", "serve", "--help"),
        ],
    )
    apply(cluster, namespace, pod)
    assert wait_for(lambda: pod_phase(cluster, namespace, "init"), 60, "pod init") == "Succeeded"
    found = get(cluster, namespace, "pod", "init")
    assert found is not None
    inits = found["status"]["initContainerStatuses"]
    assert [s["name"] for s in inits] == ["first", "second"]
    first, second = (s["state"]["terminated"] for s in inits)
    main = terminated(found, "main")
    assert first["finishedAt"] <= second["startedAt"] <= second["finishedAt"] <= main["startedAt"]
    assert all(s["ready"] for s in inits)


def test_failed_init_container_fails_a_never_restarting_pod(
    cluster: Cluster, namespace: str, runner: Path
) -> None:
    pod = pod_manifest(
        "badinit",
        container("main", "compress", "--help"),
        initContainers=[container("first", "compress", "/missing.onnx", "--output", "/tmp/x")],
    )
    apply(cluster, namespace, pod)
    assert wait_for(lambda: pod_phase(cluster, namespace, "badinit"), 60, "pod") == "Failed"
    found = get(cluster, namespace, "pod", "badinit")
    assert found is not None
    (init,) = found["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 2
    main = found["status"]["containerStatuses"][0]
    assert "waiting" in main["state"] and main["restartCount"] == 0


def test_on_failure_restarts_with_backoff_and_counts(
    cluster: Cluster, namespace: str, runner: Path
) -> None:
    pod = pod_manifest(
        "crash",
        container("c", "compress", "/missing.onnx", "--output", "/tmp/x"),
        restartPolicy="OnFailure",
    )
    apply(cluster, namespace, pod)

    def restarted() -> dict[str, object] | None:
        found = get(cluster, namespace, "pod", "crash")
        statuses = ((found or {}).get("status") or {}).get("containerStatuses") or []
        return statuses[0] if statuses and statuses[0]["restartCount"] >= 1 else None

    status = wait_for(restarted, 60, "a restart")
    assert status["lastState"]["terminated"]["exitCode"] == 2  # type: ignore[index]
    found = get(cluster, namespace, "pod", "crash")
    assert found is not None and found["status"]["phase"] == "Running"


def test_other_images_wait_with_a_reason(cluster: Cluster, namespace: str, runner: Path) -> None:
    pod = pod_manifest("busybox", {"name": "c", "image": "busybox:1.36", "command": ["sleep"]})
    apply(cluster, namespace, pod)

    def waiting() -> dict[str, str] | None:
        found = get(cluster, namespace, "pod", "busybox")
        for status in ((found or {}).get("status") or {}).get("containerStatuses") or []:
            state: dict[str, str] | None = status["state"].get("waiting")
            if state and state.get("reason") == "ImageNotRunnableInSandbox":
                return state
        return None

    state = wait_for(waiting, 30, "ImageNotRunnableInSandbox")
    assert "busybox" in state["message"]
    found = get(cluster, namespace, "pod", "busybox")
    assert found is not None and found["status"]["phase"] == "Pending"
