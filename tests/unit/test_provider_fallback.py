"""GPU provider fallback: what a GPU target's pods say, and the condition that reports it.

The termination messages here are the ones `edgemodel serve --require-provider` writes (the
serve side is tests/integration/serve/test_providers.py); the pods are shaped as the API
server returns them, in each state a server can be in.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgemodel_operator import providers
from edgemodel_runtime.serve.model import provider_refusal

REFUSAL = provider_refusal("cuda", ["CPUExecutionProvider"])
assert REFUSAL is not None


def pod(
    name: str,
    target: str = "gpu",
    *,
    state: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    container: str = "server",
) -> dict[str, Any]:
    status: dict[str, Any] = {"name": container, "state": state or {"running": {}}}
    if last is not None:
        status["lastState"] = last
    return {
        "metadata": {"name": name, "labels": {"edgemodel.dev/target": target}},
        "status": {"containerStatuses": [status]},
    }


def terminated(code: int, message: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "message": message, "reason": "Error"}}


def test_a_server_that_exited_on_a_fallback_names_both_providers() -> None:
    found = providers.fallback_of(pod("m-gpu-1", state=terminated(3, REFUSAL)))
    assert found is not None
    assert (found.target, found.requested, found.provider, found.pod) == (
        "gpu",
        "cuda",
        "cpu",
        "m-gpu-1",
    )
    assert "CUDAExecutionProvider" in found.message


def test_a_restarting_server_still_shows_it_in_its_last_state() -> None:
    waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
    found = providers.fallback_of(pod("p", state=waiting, last=terminated(3, REFUSAL)))
    assert found is not None and found.provider == "cpu"


@pytest.mark.parametrize(
    "raw",
    [
        pod("running"),
        pod("other-exit", state=terminated(2, REFUSAL)),  # exit 2 is bad input, not this
        pod("logs-not-json", state=terminated(3, "Traceback (most recent call last): ...")),
        pod("other-json", state=terminated(3, json.dumps({"reason": "Other"}))),
        pod("json-list", state=terminated(3, "[1, 2]")),
        pod("fetch", state=terminated(3, REFUSAL), container="fetch"),
        {"metadata": {"name": "no-target", "labels": {}}, "status": {}},
        {"metadata": {"name": "pending", "labels": {"edgemodel.dev/target": "gpu"}}},
    ],
    ids=lambda p: p["metadata"]["name"],
)
def test_anything_else_is_no_fallback(raw: dict[str, Any]) -> None:
    assert providers.fallback_of(raw) is None


def test_one_fallback_per_target_from_the_first_pod_by_name() -> None:
    pods = [
        pod("m-gpu-b", state=terminated(3, REFUSAL)),
        pod("m-gpu-a", state=terminated(3, REFUSAL)),
        pod("m-jetson-a", "jetson", state=terminated(3, REFUSAL)),
        pod("m-cpu-a", "cpu"),
    ]
    found = providers.provider_fallbacks(pods)
    assert set(found) == {"gpu", "jetson"}
    assert found["gpu"].pod == "m-gpu-a"


def test_the_condition_names_each_target_and_the_provider_it_fell_back_to() -> None:
    found = providers.provider_fallbacks(
        [
            pod("a", "jetson", state=terminated(3, REFUSAL)),
            pod("b", "gpu", state=terminated(3, REFUSAL)),
        ]
    )
    status, reason, message = providers.accelerator_condition(found, ["gpu", "jetson"]) or ()
    assert status is False and reason == "ProviderFallback"
    assert message.startswith("target gpu: requested cuda, onnxruntime fell back to cpu (pod b")
    assert "target jetson: requested cuda" in message


def test_the_condition_is_true_without_fallbacks_and_absent_without_gpu_targets() -> None:
    assert providers.accelerator_condition({}, ["gpu"]) == (
        True,
        "AsExpected",
        "no GPU target reports a provider fallback",
    )
    assert providers.accelerator_condition({}, []) is None
    # A fallback of a target that is no longer a GPU target does not count.
    stale = providers.provider_fallbacks([pod("a", "old", state=terminated(3, REFUSAL))])
    result = providers.accelerator_condition(stale, ["gpu"])
    assert result is not None and result[0] is True


# ------------------------------------------------- the condition on the EdgeModel, end to end


def _ready_world() -> tuple[Any, Any, Any]:
    from edgemodel_operator.api import Phase
    from edgemodel_operator.lifecycle import State
    from tests.unit.test_lifecycle import deployments, desired, passed_records

    d = desired()  # an arm64 CPU target and an amd64 GPU target named "gpu"
    state = State(revisions=passed_records(d), stable_revision=d.revision, phase=Phase.READY)
    return d, state, deployments(d, d.revision, True)


@pytest.mark.parametrize("fell_back", [True, False])
def test_a_pass_reports_the_gpu_fallback_on_the_edgemodel(fell_back: bool) -> None:
    from edgemodel_operator.lifecycle import Observed, transition
    from tests.unit.test_lifecycle import NOW

    d, state, deps = _ready_world()
    pods = [pod("digits-gpu-1", state=terminated(3, REFUSAL))] if fell_back else []
    observed = Observed(deployments=deps, provider_fallbacks=providers.provider_fallbacks(pods))
    new, _ = transition(state, d, observed, NOW)
    found = {c["type"]: c for c in new.conditions}[providers.CONDITION]
    if fell_back:
        assert (found["status"], found["reason"]) == ("False", providers.REASON_FALLBACK)
        assert "target gpu: requested cuda" in found["message"]
        assert "fell back to cpu" in found["message"]
    else:
        assert (found["status"], found["reason"]) == ("True", providers.REASON_OK)


def test_an_edgemodel_without_gpu_targets_carries_no_accelerator_condition() -> None:
    from edgemodel_operator.lifecycle import Observed, State, transition
    from tests.unit.test_lifecycle import NOW, desired, spec

    d = desired(spec(targets=[{"name": "arm", "arch": "arm64"}]))
    new, _ = transition(State(), d, Observed(), NOW)
    assert providers.CONDITION not in {c["type"] for c in new.conditions}
