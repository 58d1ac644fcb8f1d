"""Owns the operator's watch-fed view of what each EdgeModel owns, and of the EdgeModels.

A reconcile used to GET its EdgeModel and LIST its Jobs, Deployments, Services and Pods:
five requests a pass, most of them answering "nothing changed". The operator already
watches those kinds (their events feed the work queue), so it keeps what the watches said
here and reads it instead (docs/architecture.md, "Watch-fed caches").

Staleness (principle 2, advance only on what is observed): the caches hold only what a watch
delivered, never what the operator merely wrote. Two rules keep them honest:

- Priming: handlers.py registers a kopf index on each owned kind; kopf runs no handler (so
  queues no reconcile) until every indexed kind has been listed once, and the index handler
  is what fills `OwnedCache`, so the first reconcile already sees every existing object.
- Read-your-writes for the EdgeModel: a status write's answer is offered to `ModelCache`
  like a watch event; whichever copy has the higher resourceVersion wins, so a pass never
  recomputes from a status older than the one it wrote (and a stale copy that slips through
  is refused by the status patch's resourceVersion precondition, as before).

Pure in-memory structures with no client: events in, snapshots out; unit-tested with
synthetic events (tests/unit/test_cache.py). `PodSignals` decides which pod events are worth
a reconcile at all (docs/architecture.md, "Reconcile cost").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgemodel_operator import labels, observe, providers

Key = tuple[str, str]  # (namespace, EdgeModel name)
OWNED_KINDS = ("Job", "Deployment", "Service", "Pod")
DELETED = "DELETED"


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-dict copy of a watched object without its managedFields (never read here)."""
    out = {k: v for k, v in body.items()}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    out["metadata"] = meta
    return out


def owner_key(body: Mapping[str, Any]) -> Key | None:
    """(namespace, EdgeModel) an object belongs to by its labels; None when it is not ours."""
    meta = body.get("metadata") or {}
    obj_labels = meta.get("labels") or {}
    owner, namespace = obj_labels.get(labels.MODEL), meta.get("namespace")
    if obj_labels.get(labels.MANAGED_BY) != labels.MANAGER or not owner or not namespace:
        return None
    return (str(namespace), str(owner))


def _version(body: Mapping[str, Any]) -> int | None:
    text = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else None


def newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether `candidate` should replace `current` (pure).

    resourceVersions are opaque to clients in general, but every API server this project
    runs against (etcd3-backed) issues increasing integers; when both copies carry one, the
    higher wins. Otherwise the later arrival wins (a watch delivers an object's events in order).
    """
    if current is None:
        return True
    mine, theirs = _version(candidate), _version(current)
    if mine is None or theirs is None:
        return True
    return mine >= theirs


@dataclass(frozen=True)
class Owned:
    """What one EdgeModel owns, as the watches last reported it (what four LISTs returned)."""

    jobs: tuple[dict[str, Any], ...] = ()  # compression Jobs
    deployments: tuple[dict[str, Any], ...] = ()  # runtime Deployments
    services: tuple[dict[str, Any], ...] = ()  # runtime Services
    pods: tuple[dict[str, Any], ...] = ()  # every pod it owns (Job pods and runtime pods)


# The component each kind's reading selects, as the LIST selectors did (None: any).
_COMPONENT = {
    "Job": labels.COMPONENT_COMPRESSION,
    "Deployment": labels.COMPONENT_RUNTIME,
    "Service": labels.COMPONENT_RUNTIME,
    "Pod": None,
}


class OwnedCache:
    """Objects of the owned kinds, by owning EdgeModel, fed by watch events.

    `observe(kind, event_type, body)` takes one event (ADDED, MODIFIED, DELETED, or None for
    an object seen while listing); `owned(key)` is the snapshot a reconcile reads. An object
    whose owner label changes moves with it; one that loses our labels leaves.
    """

    def __init__(self) -> None:
        # kind -> uid -> (owner, object)
        self._objects: dict[str, dict[str, tuple[Key, dict[str, Any]]]] = {
            kind: {} for kind in OWNED_KINDS
        }
        # owner -> kind -> uids
        self._by_owner: dict[Key, dict[str, set[str]]] = {}
        # (kind, namespace, name) -> uid
        self._by_name: dict[tuple[str, str, str], str] = {}

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        if kind not in self._objects:
            raise ValueError(f"kind {kind!r} is not cached (one of {', '.join(OWNED_KINDS)})")
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if not uid:
            raise ValueError("watched object without metadata.uid")
        objects = self._objects[kind]
        previous = objects.get(uid)
        key = None if event_type == DELETED else owner_key(body)
        if previous is not None and previous[0] != key:
            self._unlink(previous[0], kind, uid)
            self._by_name.pop(_name_key(kind, previous[1]), None)
            del objects[uid]
        if key is None:
            return
        kept = slim(body)
        objects[uid] = (key, kept)
        self._by_owner.setdefault(key, {}).setdefault(kind, set()).add(uid)
        self._by_name[_name_key(kind, kept)] = uid

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached object of that kind and name, if the watches reported one of ours."""
        uid = self._by_name.get((kind, namespace, name))
        found = self._objects.get(kind, {}).get(uid or "")
        return found[1] if found is not None else None

    def _unlink(self, key: Key, kind: str, uid: str) -> None:
        kinds = self._by_owner.get(key, {})
        kinds.get(kind, set()).discard(uid)
        if not kinds.get(kind):
            kinds.pop(kind, None)
        if not kinds:
            self._by_owner.pop(key, None)

    def _select(self, key: Key, kind: str) -> tuple[dict[str, Any], ...]:
        component = _COMPONENT[kind]
        objects = self._objects[kind]
        found = [objects[uid][1] for uid in self._by_owner.get(key, {}).get(kind, ())]
        if component is not None:
            found = [
                o
                for o in found
                if (o["metadata"].get("labels") or {}).get(labels.COMPONENT) == component
            ]
        return tuple(sorted(found, key=lambda o: str(o["metadata"].get("name", ""))))

    def owned(self, key: Key) -> Owned:
        return Owned(
            jobs=self._select(key, "Job"),
            deployments=self._select(key, "Deployment"),
            services=self._select(key, "Service"),
            pods=self._select(key, "Pod"),
        )

    def __len__(self) -> int:
        return sum(len(objects) for objects in self._objects.values())


def _name_key(kind: str, body: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = body.get("metadata") or {}
    return (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class ModelCache:
    """The EdgeModels themselves, by (namespace, name): watch events and the operator's own
    status writes, the newer copy winning (`newer`)."""

    def __init__(self) -> None:
        self._models: dict[Key, dict[str, Any]] = {}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == DELETED:
            self._models.pop(key, None)
        elif newer(body, self._models.get(key)):
            self._models[key] = slim(body)

    def offer(self, body: Mapping[str, Any] | None) -> None:
        """An object a write returned: kept only when it is newer than what the watch said."""
        if body is not None:
            self.observe("MODIFIED", body)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._models.get(key)

    def forget(self, key: Key) -> None:
        self._models.pop(key, None)


# ------------------------------------------------------------------ which pod events matter

# What a reconcile reads from one runtime pod (docs/architecture.md, "Reconcile cost"): the
# scheduler's refusal (unplaceable targets) and the server's provider fallback. Readiness is
# read from the Deployments, whose own events queue the EdgeModel.
PodSignal = tuple[tuple[tuple[str, str], ...], providers.ProviderFallback | None]
QUIET: PodSignal = ((), None)  # scheduled, no fallback: nothing for a reconcile to act on


def pod_signal(pod: Mapping[str, Any]) -> PodSignal:
    """The part of a runtime pod a reconcile reads, comparable between two events (pure)."""
    unschedulable = observe.unschedulable_targets([pod])
    return (tuple(sorted(unschedulable.items())), providers.fallback_of(pod))


class PodSignals:
    """The last `pod_signal` of each runtime pod, by uid, to tell which pod events matter.

    A pod's ADDED / MODIFIED / DELETED event changes what its EdgeModel's next reconcile sees
    only when its signal changes (a pod becomes unschedulable or placed, a server falls back),
    or when a pod with a non-quiet signal goes away. Every other pod event (kubelet status
    churn, a healthy pod created or deleted) queues nothing: the Deployment's events carry
    readiness. Only the signals that are not QUIET are kept.
    """

    def __init__(self) -> None:
        self._last: dict[str, PodSignal] = {}

    def changed(self, event_type: str | None, pod: Mapping[str, Any]) -> bool:
        """Whether this event changes the pod's signal (and so may change a reconcile)."""
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        if event_type == DELETED:
            return self._last.pop(uid, QUIET) != QUIET
        now = pod_signal(pod)
        before = self._last.pop(uid, QUIET)
        if now != QUIET:
            self._last[uid] = now
        return now != before

    def __len__(self) -> int:
        return len(self._last)
