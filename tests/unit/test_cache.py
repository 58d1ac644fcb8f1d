"""The watch-fed caches: what a reconcile reads instead of a GET and four LISTs.

`OwnedCache` is fed watch events (ADDED / MODIFIED / DELETED, None for an object seen while
listing) and answers, per EdgeModel, exactly what the four label-selected LISTs answered:
its compression Jobs, its runtime Deployments and Services, and every pod it owns. Objects
are filed by their labels, written by the real builders here, so a key that drifted between
builder and cache would fail. `ModelCache` keeps each EdgeModel, the newer copy winning
between a watch event and the operator's own status write (read-your-writes). `PodSignals`
says which runtime pod events change what a reconcile reads (and so are worth one).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgemodel_operator import builders, labels, providers
from edgemodel_operator.api import parse_spec
from edgemodel_operator.cache import QUIET, ModelCache, OwnedCache, PodSignals, newer, pod_signal
from edgemodel_operator.revision import revision_of
from edgemodel_operator.settings import Settings

SHA = "a" * 64
SPEC = parse_spec(
    {
        "model": {"uri": "https://models.example.com/m.onnx", "sha256": SHA},
        "targets": [{"name": "arm", "arch": "arm64"}, {"name": "x86", "arch": "amd64"}],
    }
)
REVISION = revision_of(SPEC)
SETTINGS = Settings()


def observed(manifest: dict[str, Any], uid: str, version: int = 1) -> dict[str, Any]:
    """`manifest` as a watch reports it: with a uid, a resourceVersion and managedFields."""
    meta = {
        **manifest["metadata"],
        "uid": uid,
        "resourceVersion": str(version),
        "managedFields": [{"manager": "edgemodel-operator"}],
    }
    return {**manifest, "metadata": meta}


def deployment(model: str, target: int, uid: str, version: int = 1) -> dict[str, Any]:
    manifest = builders.runtime_deployment(
        model, "ns", f"uid-{model}", SPEC, SPEC.targets[target], REVISION, SHA, 1, SETTINGS
    )
    return observed(manifest, uid, version)


def service(model: str, target: int, uid: str) -> dict[str, Any]:
    return observed(builders.target_service(model, "ns", f"uid-{model}", SPEC.targets[target]), uid)


def job(model: str, uid: str) -> dict[str, Any]:
    manifest = builders.compression_job(
        model, "ns", f"uid-{model}", SPEC, REVISION, "arm64", SETTINGS
    )
    return observed(manifest, uid)


def pod_of(owner: dict[str, Any], uid: str, **extra_labels: str) -> dict[str, Any]:
    """A pod as its controller makes it: the template's labels (a Job's adds job-name)."""
    template = owner["spec"]["template"]["metadata"]
    pod_labels = {**template["labels"], **extra_labels}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod-{uid}",
            "namespace": "ns",
            "uid": uid,
            "labels": pod_labels,
            "resourceVersion": "1",
        },
        "status": {"phase": "Running"},
    }


def names(objects: tuple[dict[str, Any], ...]) -> list[str]:
    return [o["metadata"]["name"] for o in objects]


def test_each_owned_kind_is_filed_under_the_edgemodel_its_labels_name() -> None:
    cache = OwnedCache()
    dep, svc, compress = (
        deployment("digits", 0, "d1"),
        service("digits", 0, "s1"),
        job("digits", "j1"),
    )
    for kind, body in (("Deployment", dep), ("Service", svc), ("Job", compress)):
        cache.observe(kind, None, body)
    job_pod = pod_of(compress, "p1", **{labels.JOB_NAME: compress["metadata"]["name"]})
    runtime_pod = pod_of(dep, "p2")
    cache.observe("Pod", "ADDED", job_pod)
    cache.observe("Pod", "ADDED", runtime_pod)

    owned = cache.owned(("ns", "digits"))

    assert names(owned.deployments) == [dep["metadata"]["name"]]
    assert names(owned.services) == [svc["metadata"]["name"]]
    assert names(owned.jobs) == [compress["metadata"]["name"]]
    assert sorted(names(owned.pods)) == ["pod-p1", "pod-p2"]
    assert cache.owned(("ns", "other")).deployments == ()
    assert cache.owned(("elsewhere", "digits")).deployments == ()


def test_models_do_not_see_each_others_objects() -> None:
    cache = OwnedCache()
    cache.observe("Deployment", None, deployment("a", 0, "d1"))
    cache.observe("Deployment", None, deployment("b", 0, "d2"))
    cache.observe("Deployment", None, deployment("b", 1, "d3"))

    assert len(cache.owned(("ns", "a")).deployments) == 1
    assert len(cache.owned(("ns", "b")).deployments) == 2


def test_a_modification_replaces_the_object_and_a_deletion_removes_it() -> None:
    cache = OwnedCache()
    first = deployment("digits", 0, "d1", version=1)
    cache.observe("Deployment", "ADDED", first)
    ready = {**deployment("digits", 0, "d1", version=2), "status": {"availableReplicas": 1}}
    cache.observe("Deployment", "MODIFIED", ready)

    (seen,) = cache.owned(("ns", "digits")).deployments
    assert seen["status"] == {"availableReplicas": 1}

    cache.observe("Deployment", "DELETED", ready)
    assert cache.owned(("ns", "digits")).deployments == ()
    assert len(cache) == 0


def test_an_object_is_found_by_kind_and_name_while_it_exists() -> None:
    cache = OwnedCache()
    dep = deployment("digits", 0, "d1")
    name = dep["metadata"]["name"]
    cache.observe("Deployment", "ADDED", dep)

    found = cache.find("Deployment", "ns", name)
    assert found is not None and found["metadata"]["uid"] == "d1"
    assert cache.find("Service", "ns", name) is None
    assert cache.find("Deployment", "other-ns", name) is None

    cache.observe("Deployment", "DELETED", dep)
    assert cache.find("Deployment", "ns", name) is None


def test_objects_not_managed_by_the_operator_are_not_kept() -> None:
    cache = OwnedCache()
    foreign = deployment("digits", 0, "d1")
    foreign["metadata"]["labels"] = {
        **foreign["metadata"]["labels"],
        labels.MANAGED_BY: "someone-else",
    }
    cache.observe("Deployment", "ADDED", foreign)

    assert cache.owned(("ns", "digits")).deployments == ()


def test_an_object_that_loses_its_labels_leaves_and_one_relabelled_moves() -> None:
    cache = OwnedCache()
    dep = deployment("digits", 0, "d1")
    cache.observe("Deployment", "ADDED", dep)
    moved = deployment("digits", 0, "d1", version=2)
    moved["metadata"]["labels"] = {**moved["metadata"]["labels"], labels.MODEL: "other"}
    cache.observe("Deployment", "MODIFIED", moved)

    assert cache.owned(("ns", "digits")).deployments == ()
    assert len(cache.owned(("ns", "other")).deployments) == 1

    unlabelled = deployment("digits", 0, "d1", version=3)
    unlabelled["metadata"]["labels"] = {}
    cache.observe("Deployment", "MODIFIED", unlabelled)
    assert cache.owned(("ns", "other")).deployments == ()
    assert len(cache) == 0


def test_each_reading_selects_the_component_its_list_selected() -> None:
    """A Deployment not labelled runtime (the artifact store's, say) is not a runtime one."""
    cache = OwnedCache()
    other = deployment("digits", 0, "d1")
    other["metadata"]["labels"] = {**other["metadata"]["labels"], labels.COMPONENT: "other"}
    cache.observe("Deployment", None, other)

    assert cache.owned(("ns", "digits")).deployments == ()


def test_what_is_kept_is_a_copy_without_managed_fields() -> None:
    cache = OwnedCache()
    body = deployment("digits", 0, "d1")
    cache.observe("Deployment", None, body)
    body["metadata"]["name"] = "changed-by-the-caller"

    (seen,) = cache.owned(("ns", "digits")).deployments
    assert "managedFields" not in seen["metadata"]
    assert seen["metadata"]["name"] != "changed-by-the-caller"


def test_bad_events_are_refused_naming_what_is_wrong() -> None:
    cache = OwnedCache()
    with pytest.raises(ValueError, match="'ConfigMap' is not cached"):
        cache.observe("ConfigMap", None, deployment("digits", 0, "d1"))
    no_uid = deployment("digits", 0, "d1")
    del no_uid["metadata"]["uid"]
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        cache.observe("Deployment", None, no_uid)


def edgemodel(version: str, phase: str) -> dict[str, Any]:
    return {
        "apiVersion": labels.EDGEMODEL_API_VERSION,
        "kind": labels.KIND,
        "metadata": {"name": "digits", "namespace": "ns", "uid": "u", "resourceVersion": version},
        "status": {"phase": phase},
    }


def test_the_model_cache_keeps_the_newest_copy_of_each_edgemodel() -> None:
    models = ModelCache()
    models.observe("ADDED", edgemodel("10", "Pending"))
    # The operator's own status write answers with a newer object: read-your-writes.
    models.offer(edgemodel("12", "Compressing"))
    # A watch event from before that write arrives late: it does not win.
    models.observe("MODIFIED", edgemodel("11", "Pending"))

    kept = models.get(("ns", "digits"))
    assert kept is not None and kept["status"]["phase"] == "Compressing"

    models.observe("MODIFIED", edgemodel("13", "Ready"))
    kept = models.get(("ns", "digits"))
    assert kept is not None and kept["status"]["phase"] == "Ready"


def test_a_deleted_or_forgotten_edgemodel_is_read_afresh() -> None:
    models = ModelCache()
    models.observe(None, edgemodel("10", "Pending"))
    models.observe("DELETED", edgemodel("11", "Pending"))
    assert models.get(("ns", "digits")) is None

    models.observe(None, edgemodel("12", "Pending"))
    models.forget(("ns", "digits"))
    assert models.get(("ns", "digits")) is None
    models.offer(None)  # a status write to an object deleted meanwhile answers nothing
    assert models.get(("ns", "digits")) is None


@pytest.mark.parametrize(
    ("candidate", "current", "wins"),
    [
        ("5", None, True),
        ("5", "4", True),
        ("5", "5", True),
        ("4", "5", False),
        ("10", "9", True),  # compared as numbers, not text
        ("opaque", "5", True),  # not a number: the later arrival wins
    ],
)
def test_newer_compares_resource_versions_as_numbers(
    candidate: str, current: str | None, wins: bool
) -> None:
    existing = None if current is None else {"metadata": {"resourceVersion": current}}
    assert newer({"metadata": {"resourceVersion": candidate}}, existing) is wins


# ------------------------------------------------------------------ which pod events matter


def runtime_pod(
    uid: str,
    *,
    node: str | None = "edge-0",
    unschedulable: str | None = None,
    fallback: bool = False,
    ready: bool = True,
) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unschedulable is not None:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        )
    state: dict[str, Any] = {"running": {}}
    if fallback:
        report = {"reason": "ProviderUnavailable", "requested": "cuda", "provider": "cpu"}
        state = {"terminated": {"exitCode": providers.EXIT_PROVIDER, "message": json.dumps(report)}}
    return {
        "metadata": {
            "name": f"m-gpu-{uid}",
            "namespace": "ns",
            "uid": uid,
            "labels": {labels.TARGET: "gpu"},
        },
        "spec": {"nodeName": node} if node else {},
        "status": {
            "conditions": conditions,
            "containerStatuses": [{"name": providers.SERVER_CONTAINER, "state": state}],
        },
    }


def test_a_healthy_pods_status_churn_changes_nothing_a_reconcile_reads() -> None:
    signals = PodSignals()
    assert pod_signal(runtime_pod("p1")) == QUIET
    assert not signals.changed("ADDED", runtime_pod("p1", ready=False))
    assert not signals.changed("MODIFIED", runtime_pod("p1", ready=True))
    assert not signals.changed("DELETED", runtime_pod("p1"))
    assert len(signals) == 0


def test_a_pod_the_scheduler_refuses_and_later_places_changes_it_both_times() -> None:
    signals = PodSignals()
    refused = runtime_pod("p1", node=None, unschedulable="0/3 nodes are available")
    assert signals.changed("ADDED", refused)
    assert not signals.changed("MODIFIED", refused)  # the same refusal again
    assert signals.changed("MODIFIED", runtime_pod("p1", node=None, unschedulable="0/4 nodes"))
    assert signals.changed("MODIFIED", runtime_pod("p1"))  # placed
    assert len(signals) == 0


def test_a_provider_fallback_changes_it_and_so_does_its_pod_going_away() -> None:
    signals = PodSignals()
    assert not signals.changed("ADDED", runtime_pod("p1"))
    assert signals.changed("MODIFIED", runtime_pod("p1", fallback=True))
    assert pod_signal(runtime_pod("p1", fallback=True))[1] is not None
    assert signals.changed("DELETED", runtime_pod("p1", fallback=True))
    assert not signals.changed("DELETED", runtime_pod("p1", fallback=True))  # already gone


def test_pods_are_told_apart_by_uid() -> None:
    signals = PodSignals()
    assert signals.changed("ADDED", runtime_pod("p1", node=None, unschedulable="full"))
    assert signals.changed("ADDED", runtime_pod("p2", node=None, unschedulable="full"))
    assert signals.changed("DELETED", runtime_pod("p1"))
    assert len(signals) == 1
