"""How kopf is tuned for the operator: no per-event diff base, no thread hop per handler.

kopf builds a diff base (deep copies of the object) on every watch event for change-detecting
handlers, and runs synchronous handlers in a thread pool. The operator has no change-detecting
handler and only in-memory handlers, so it turns the first off (`NoDiffBase`) and writes every
handler `async`. Both are cost only, measured by bench/operator; these tests hold the
conditions that make them safe. See docs/architecture.md, "Reconcile cost".
"""

from __future__ import annotations

import inspect

import kopf

from edgemodel_operator import handlers, labels
from edgemodel_operator.kopf_tuning import NoDiffBase, tune

BODY = kopf.Body({"metadata": {"name": "digits", "labels": {"a": "b"}}, "spec": {"x": [1, 2]}})


def test_the_diff_base_keeps_nothing_of_the_object() -> None:
    storage = NoDiffBase()
    assert storage.build(body=BODY) == {}
    assert storage.fetch(body=BODY) is None
    storage.store(body=BODY, patch=kopf.Patch(), essence=kopf.BodyEssence())  # writes nothing


def test_tune_installs_it_with_the_operators_timeouts() -> None:
    settings = kopf.OperatorSettings()
    tune(settings)
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    assert settings.watching.server_timeout is not None
    assert settings.watching.client_timeout is not None
    assert settings.watching.server_timeout < settings.watching.client_timeout


def test_owned_kinds_are_watched_with_the_managed_by_selector_and_edgemodels_without() -> None:
    settings = kopf.OperatorSettings()
    tune(settings)
    selectors = settings.watching.label_selectors
    for group, version, plural in [
        ("batch", "v1", "jobs"),
        ("apps", "v1", "deployments"),
        ("", "v1", "services"),
        ("", "v1", "pods"),
    ]:
        resource = kopf.Resource(group, version, plural)
        assert selectors.collect(resource) == [f"{labels.MANAGED_BY}={labels.MANAGER}"]
    for resource in [
        kopf.Resource(labels.GROUP, labels.VERSION, labels.PLURAL),
        kopf.Resource("", "v1", "nodes"),
        kopf.Resource("apps", "v1", "replicasets"),
    ]:
        assert selectors.collect(resource) == []


def _registered() -> list[object]:
    registry = kopf.get_default_registry()
    return [
        h.fn
        for sub in (registry._indexing, registry._watching, registry._changing, registry._spawning)
        for h in sub.get_all_handlers()
        if getattr(h.fn, "__module__", "") == handlers.__name__
    ]


def test_every_handler_runs_on_the_event_loop_not_in_kopfs_thread_pool() -> None:
    functions = _registered()
    assert len(functions) >= 10  # the indexes and event handlers of handlers.py
    assert [f for f in functions if not inspect.iscoroutinefunction(f)] == []


def test_no_handler_needs_a_diff_base() -> None:
    # on.create/update/delete/field handlers, daemons and timers read the diff base (or
    # put finalizers on EdgeModels): NoDiffBase would silently break them.
    registry = kopf.get_default_registry()
    ours = [
        h
        for sub in (registry._changing, registry._spawning)
        for h in sub.get_all_handlers()
        if getattr(h.fn, "__module__", "") == handlers.__name__
    ]
    assert ours == []
