"""Owns how kopf is tuned for this operator: its settings, and what the operator turns off.

kopf here only watches: index handlers fill the watch-fed caches and event handlers feed the
work queue (docs/architecture.md, "Watch-fed caches"); there are no on.create/update/delete
handlers, daemons or timers. What kopf would otherwise do on every watch event is measured
by bench/operator (docs/architecture.md, "Reconcile cost"):

- kopf builds a diff base for change-detecting handlers on every event of every watched
  kind, whether any such handler exists or not: two deep copies of the object. With 1000
  nodes, 900 pods and 900 Deployments watched, that was the largest single cost of the
  operator's event loop. `NoDiffBase` keeps nothing instead; it is safe only because no
  handler diffs (`tune` is the one place that installs it).
- Watches of the owned kinds carry a label selector (managed-by the operator): objects of
  other owners never reach the operator at all. An object that loses the label leaves the
  selection, which the API server reports as a deletion, so it leaves the cache as before.
- Synchronous handlers run in kopf's thread pool; the operator's handlers are `async` (they
  only touch in-memory structures), so they run on the event loop with no thread hop and
  the work queue and caches are only ever touched from the loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from edgemodel_operator import labels

# The owned kinds (cache.OWNED_KINDS), as (group, version, plural): watched with a server-side
# label selector, so the API server sends only the operator's own Jobs, Deployments, Services
# and pods, not every pod of the cluster (an operator watching clusterwide would otherwise
# decode and index each of them on every change).
OWNED_RESOURCES = (
    ("batch", "v1", "jobs"),
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "pods"),
)
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in labels.MANAGED.items())
# Watches: a server-side timeout below the client's, so the server ends streams cleanly.
WATCH_SERVER_TIMEOUT_S = 300
WATCH_CLIENT_TIMEOUT_S = 330
REQUEST_TIMEOUT_S = 60


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff base that keeps nothing: no deep copy of each watched object per event.

    Only for an operator with no change-detecting handlers (on.create/update/delete/field,
    daemons, timers), which is this one: kopf then never reads the diff base.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        del body, extra_fields
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        del body
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        del body, patch, essence


def tune(settings: kopf.OperatorSettings) -> None:
    """The operator's kopf settings (called from the startup handler, before any watch)."""
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    settings.networking.request_timeout = REQUEST_TIMEOUT_S
    settings.persistence.diffbase_storage = NoDiffBase()
    for resource in OWNED_RESOURCES:
        settings.watching.label_selectors[resource] = MANAGED_SELECTOR
