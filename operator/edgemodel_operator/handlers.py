"""Owns the kopf wiring: watch events feed a work queue; workers observe, decide, apply.

Handlers only gather and apply (principle 1): `reconcile` reads the EdgeModel and what it
owns from the watch-fed caches (cache.py; no API request unless something must change),
asks `observe.readings_needed` which SLO readings the pass needs and takes only those (one
shared HTTP session for Prometheus), hands them to `lifecycle.transition`, applies the
returned actions through the one API client, and writes status only when it changed. No
kopf daemons or timers per object (they would put a finalizer on every EdgeModel and block
its deletion whenever the operator is down); ownerReferences let the garbage collector
remove what an EdgeModel owned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from edgemodel_operator import (
    artifact_lookup,
    builders,
    canary,
    kopf_tuning,
    labels,
    metrics,
    observe,
    providers,
    telemetry,
)
from edgemodel_operator.api import EdgeModelSpec, SpecError, parse_spec
from edgemodel_operator.cache import (
    DELETED,
    OWNED_KINDS,
    ModelCache,
    Owned,
    OwnedCache,
    PodSignals,
)
from edgemodel_operator.conditions import set_condition
from edgemodel_operator.kube import Credentials, Kube, KubeError, OwnershipConflict, counting
from edgemodel_operator.lifecycle import (
    Apply,
    Delete,
    Desired,
    Event,
    JobObs,
    Observed,
    Requeue,
    State,
    transition,
)
from edgemodel_operator.objectives import (
    LatencyObjective,
    latency_objectives,
    named,
)
from edgemodel_operator.objectives import worst as worst_latency
from edgemodel_operator.observe import Readings, ReadingsPlan, readings_needed
from edgemodel_operator.placement import Requirements, explain_unplaceable
from edgemodel_operator.revision import revision_of, variants
from edgemodel_operator.settings import Settings
from edgemodel_operator.timestamps import rfc3339
from edgemodel_operator.workqueue import WorkQueue

log = logging.getLogger("edgemodel.operator")
GROUP, VERSION, PLURAL, KIND = labels.GROUP, labels.VERSION, labels.PLURAL, labels.KIND
EM_API = labels.EDGEMODEL_API_VERSION
Key = tuple[str, str]  # (namespace, name)
MANAGED = labels.MANAGED
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Benchmark switch (bench/operator --no-cache): observe by GET + four LISTs per pass, as
# before the watch-fed caches, to measure the API requests they save.
OBSERVE_BY_LIST_ENV = "EDGEMODEL_OBSERVE_BY_LIST"


def _observe_by_list() -> bool:
    return os.environ.get(OBSERVE_BY_LIST_ENV, "") == "1"


@dataclass
class Runtime:
    """What the workers share; lives in kopf's memo for the operator's lifetime."""

    settings: Settings
    kube: Kube | None = None
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    unplaceable: set[Key] = field(default_factory=set)
    resolve_services: bool = False
    worker_count: int = 8
    reconciles: int = 0
    metrics_port: int = 0
    listen_address: str = "0.0.0.0"
    # What the watches said (cache.py): read instead of a GET and four LISTs per pass.
    owned: OwnedCache = field(default_factory=OwnedCache)
    models: ModelCache = field(default_factory=ModelCache)
    pod_signals: PodSignals = field(default_factory=PodSignals)
    observe_by_list: bool = field(default_factory=_observe_by_list)
    _prometheus: dict[str, metrics.PrometheusClient] = field(default_factory=dict)
    _specs: dict[Key, tuple[str, int, EdgeModelSpec]] = field(default_factory=dict)
    # One HTTP session for every Prometheus query and artifact-record lookup (opened on first
    # use, closed on cleanup): a reconcile opens no connection pool of its own.
    _http: aiohttp.ClientSession | None = None

    def spec_of(self, key: Key, uid: str, generation: int, raw: dict[str, Any]) -> EdgeModelSpec:
        """The parsed spec, parsed once per generation: the API server bumps
        metadata.generation on every change of the spec (never for status), so a pass at the
        same uid and generation reads the same spec (SpecError for an invalid one, never kept).
        """
        kept = self._specs.get(key)
        if kept is not None and kept[:2] == (uid, generation):
            return kept[2]
        spec = parse_spec(raw)
        self._specs[key] = (uid, generation, spec)
        return spec

    def forget(self, key: Key) -> None:
        """Drops what is kept for a deleted EdgeModel."""
        self._specs.pop(key, None)
        self.unplaceable.discard(key)

    def http_session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close_http(self) -> None:
        self._prometheus.clear()  # its clients hold the session closed here
        if self._http is not None:
            await self._http.close()
            self._http = None

    def prometheus_client(self, url: str) -> metrics.PrometheusClient:
        """The client for `url`; only the operator-configured Prometheus gets its credentials.

        The bearer token and CA of `--prometheus-url` go to that URL alone: a Prometheus named
        by an (allowlisted) annotation is queried without them (docs/security.md).
        """
        client = self._prometheus.get(url)
        if client is None:
            settings = self.settings
            configured = settings.prometheus_url.rstrip("/")
            own = bool(configured) and url.rstrip("/") == configured
            client = metrics.PrometheusClient(
                url,
                token_file=(settings.prometheus_token_file or None) if own else None,
                ca_file=(settings.prometheus_ca_file or None) if own else None,
                insecure=settings.prometheus_insecure and own,
                session=self.http_session(),
            )
            self._prometheus[url] = client
        return client


def _now() -> str:
    return rfc3339(datetime.now(UTC))


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


# ------------------------------------------------------------------ kopf entry points


@kopf.on.startup()
async def startup(
    memo: Any,
    settings: kopf.OperatorSettings,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    runtime = _runtime(memo)
    kopf_tuning.tune(settings)
    # The same credentials kopf itself uses: the kubeconfig, else the pod's service account,
    # whose bound token the client re-reads from its file (it expires; see kube.py).
    credentials: Credentials | None = None
    info = kopf.login_with_kubeconfig(settings=settings, logger=logger)
    if info is not None:
        credentials = Credentials.from_kopf(info)
    else:
        info = kopf.login_with_service_account(settings=settings, logger=logger)
        if info is not None:
            credentials = dataclasses.replace(
                Credentials.from_kopf(info), token_path=SERVICE_ACCOUNT_TOKEN
            )
    if credentials is None:
        raise kopf.PermanentError("no Kubernetes credentials found (kubeconfig or service account)")
    runtime.kube = Kube(credentials)
    if runtime.settings.manage_artifact_store:
        await _ensure_artifact_store(runtime)
    if runtime.metrics_port:
        telemetry.serve(runtime.metrics_port, runtime.listen_address)
    runtime.workers = [
        asyncio.create_task(_worker(runtime, i)) for i in range(runtime.worker_count)
    ]
    log.info(
        "operator started",
        extra={"workers": runtime.worker_count, "namespace": runtime.settings.namespace},
    )


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    runtime = _runtime(memo)
    for task in runtime.workers:
        task.cancel()
    for task in runtime.workers:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if runtime.kube is not None:
        await runtime.kube.close()
    await runtime.close_http()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def edgemodel_event(
    type: str, namespace: str | None, name: str, body: Any, memo: Any, **_: Any
) -> None:
    runtime = _runtime(memo)
    key: Key = (namespace or "", name)
    runtime.models.observe(type, body)
    if type == DELETED:
        runtime.queue.forget(key)
        telemetry.forget(*key)
        runtime.forget(key)
        return
    runtime.queue.add(key)


# The watch-fed cache of owned objects (cache.py). kopf runs every index handler while it
# lists and watches, and runs no other handler until each indexed kind has been listed once,
# so no reconcile is queued before the cache holds every existing object. Index handlers are
# not called for deletions: the event handlers below pass those on.


def _index(kind: str, body: Any, memo: Any) -> None:
    _runtime(memo).owned.observe(kind, None, body)


@kopf.index("batch", "v1", "jobs")
async def owned_jobs(body: Any, memo: Any, **_: Any) -> None:
    _index("Job", body, memo)


@kopf.index("apps", "v1", "deployments")
async def owned_deployments(body: Any, memo: Any, **_: Any) -> None:
    _index("Deployment", body, memo)


@kopf.index("", "v1", "services")
async def owned_services(body: Any, memo: Any, **_: Any) -> None:
    _index("Service", body, memo)


@kopf.index("", "v1", "pods")
async def owned_pods(body: Any, memo: Any, **_: Any) -> None:
    _index("Pod", body, memo)


def _owned_event(
    kind: str, type: str | None, body: Any, namespace: str | None, memo: Any, queue: bool = True
) -> None:
    runtime = _runtime(memo)
    if type == DELETED:
        runtime.owned.observe(kind, type, body)
    owner = (body.get("metadata", {}).get("labels") or {}).get(labels.MODEL)
    if queue and owner and namespace:
        runtime.queue.add((namespace, owner))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def job_event(
    type: str | None, body: Any, namespace: str | None, memo: Any, **_: Any
) -> None:
    _owned_event("Job", type, body, namespace, memo)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_event(
    type: str | None, body: Any, namespace: str | None, memo: Any, **_: Any
) -> None:
    _owned_event("Deployment", type, body, namespace, memo)


@kopf.on.event("", "v1", "services", labels=MANAGED)
async def service_event(
    type: str | None, body: Any, namespace: str | None, memo: Any, **_: Any
) -> None:
    _owned_event("Service", type, body, namespace, memo)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def pod_event(
    type: str | None, body: Any, namespace: str | None, memo: Any, **_: Any
) -> None:
    # Runtime pods queue their EdgeModel only when what a reconcile reads from them changes
    # (cache.PodSignals: scheduling refused or resolved, a provider fallback; readiness comes
    # with the Deployment's events). A Job's pods only need to be current in the cache (their
    # Job's own events queue it).
    component = (body.get("metadata", {}).get("labels") or {}).get(labels.COMPONENT)
    signals = _runtime(memo).pod_signals
    relevant = component == labels.COMPONENT_RUNTIME and signals.changed(type, body)
    _owned_event("Pod", type, body, namespace, memo, queue=relevant)


@kopf.on.event("", "v1", "nodes")
async def node_event(type: str, memo: Any, **_: Any) -> None:
    # A node that appears (or changes) may host a target that had nowhere to go.
    runtime = _runtime(memo)
    if type in ("ADDED", "MODIFIED", None):
        for key in list(runtime.unplaceable):
            runtime.queue.add(key)


# ------------------------------------------------------------------ the worker loop


async def _worker(runtime: Runtime, index: int) -> None:
    while True:
        key = await runtime.queue.get()
        started = time.monotonic()
        result = "ok"
        calls = [0, 0]
        try:
            with counting() as calls:
                delay = await reconcile(runtime, key)
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            log.warning("reconcile failed; retrying", extra={"key": key, "error": str(exc)})
            delay, result = 5.0, "error"
        except Exception:
            log.exception("reconcile crashed; retrying", extra={"key": key})
            delay, result = 10.0, "error"
        finally:
            runtime.queue.done(key)
            telemetry.RECONCILE_SECONDS.labels(result).observe(time.monotonic() - started)
            telemetry.QUEUE_DEPTH.set(len(runtime.queue))
        runtime.reconciles += 1
        if delay is not None:
            runtime.queue.add_after(key, delay)
        log.debug(
            "reconciled",
            extra={
                "key": key,
                "seconds": round(time.monotonic() - started, 3),
                "api_requests": calls[0],
                "api_writes": calls[1],
            },
        )


async def reconcile(runtime: Runtime, key: Key) -> float | None:
    """One pass over one EdgeModel; returns when to look again (None: only on events)."""
    kube = runtime.kube
    assert kube is not None
    namespace, name = key
    body = None if runtime.observe_by_list else runtime.models.get(key)
    if body is None:
        body = await kube.get(EM_API, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    meta = body["metadata"]
    generation = int(meta.get("generation", 1))
    status = body.get("status") or {}
    try:
        spec = runtime.spec_of(key, meta["uid"], generation, body.get("spec") or {})
    except SpecError as exc:
        await _invalid_spec(kube, body, status, str(exc), generation)
        return None
    host_paths = builders.host_path_problems(spec, runtime.settings)
    if host_paths:
        message = "; ".join(text for _, text in host_paths)
        await _host_path_refused(kube, body, status, message, generation)
        return None
    revision = revision_of(spec)
    desired = Desired(name, namespace, meta["uid"], generation, spec, revision, runtime.settings)
    state = State.from_status(status)
    observed = await _observe(runtime, kube, desired, state, meta.get("annotations") or {})
    if observed.unschedulable:
        runtime.unplaceable.add(key)
    else:
        runtime.unplaceable.discard(key)
    new_state, actions = transition(state, desired, observed, datetime.now(UTC))
    await _sync_pull_secrets(runtime, kube, namespace)
    new_status = await _write(runtime, kube, key, body, new_state.to_status(generation), actions)
    if new_status is None:
        return 1.0  # status changed meanwhile: recompute from a fresh read
    telemetry.record_status(
        namespace, name, new_status, spec.slo.latency_p95_ms if spec.slo else None
    )
    # The decision says when to look again: the phase's poll, the SLO loop's interval, or
    # the end of a compression retry's backoff (lifecycle.requeue_after).
    return next((a.after_seconds for a in actions if isinstance(a, Requeue)), 30.0)


async def _write(
    runtime: Runtime,
    kube: Kube,
    key: Key,
    body: dict[str, Any],
    new_status: dict[str, Any],
    actions: list[Any],
) -> dict[str, Any] | None:
    """Applies a pass's actions and writes its status; None when the status write lost a race."""
    namespace, name = key
    meta, status = body["metadata"], body.get("status") or {}
    generation = int(meta.get("generation", 1))
    # Writes of different objects and the pass's Events go out together (a model's first
    # pass makes seven: one round trip, not seven); deletions follow, in the order decided.
    applies = [a for a in actions if isinstance(a, Apply)]
    events = [a for a in actions if isinstance(a, Event)]
    known = None if runtime.observe_by_list else runtime.owned
    results = await asyncio.gather(
        *(_apply_owned(kube, a, known) for a in applies), *(_apply(kube, body, e) for e in events)
    )
    conflicts = [c for c in results[: len(applies)] if c]
    for action in actions:
        if isinstance(action, Delete):
            await _apply(kube, body, action)
    if conflicts:
        new_status = ownership_conflict_status(new_status, conflicts, _now(), generation)
    if not _changed(status, new_status):
        return new_status
    try:
        # Precondition on the version read above: a status computed from an older read
        # (another replica during a rolling upgrade) is refused, re-read and recomputed.
        written = await kube.patch_status(
            EM_API, KIND, namespace, name, new_status, meta.get("resourceVersion")
        )
    except KubeError as exc:
        if exc.status != 409:
            raise
        log.info("status changed meanwhile; recomputing", extra={"key": key})
        runtime.models.forget(key)  # the next pass reads it afresh
        return None
    # Read-your-writes: the next pass starts from this status, not from an older watch copy.
    runtime.models.offer(written)
    if conflicts and not _conflicted(status):
        await kube.event(body, "Warning", "OwnershipConflict", "; ".join(conflicts))
    return new_status


async def _observe(
    runtime: Runtime,
    kube: Kube,
    desired: Desired,
    state: State,
    meta_annotations: Mapping[str, str],
) -> Observed:
    ns, name = desired.namespace, desired.name
    if runtime.observe_by_list:
        owned = await _list_owned(kube, ns, name)
    else:
        owned = runtime.owned.owned((ns, name))
    jobs_raw, deps_raw, svcs_raw, pods_raw = (
        owned.jobs,
        owned.deployments,
        owned.services,
        owned.pods,
    )
    jobs = _job_observations(jobs_raw, pods_raw)
    runtime_pods = [
        p
        for p in pods_raw
        if (p["metadata"].get("labels") or {}).get(labels.COMPONENT) == labels.COMPONENT_RUNTIME
    ]
    unschedulable = await _unschedulable(runtime, kube, desired, runtime_pods)
    store_ready = await _store_ready(runtime, kube)
    artifacts: dict[str, dict[str, Any]] = {}
    known = {(r.get("revision"), r.get("variant")) for r in state.revisions}
    have_job = {(j.revision, j.variant) for j in jobs}
    missing = [
        v
        for v in variants(desired.spec)
        if (desired.revision, v) not in known and (desired.revision, v) not in have_job
    ]
    record_checks: dict[str, str] = {}
    if missing and store_ready:
        base = await _artifact_base_url(runtime, kube)
        if base:
            # Only a record a compression Job of *this* EdgeModel published (the store checks
            # that) for this very revision digest lets it skip compression; a malformed one is
            # not trusted (compressed again) and named in ArtifactRecordValid (lifecycle/status).
            found = await artifact_lookup.lookup_records(
                base,
                desired.namespace,
                desired.uid,
                builders.revision_digest(desired.spec),
                missing,
                runtime.http_session(),
            )
            for variant, lookup in found.items():
                key = builders.artifact_key(desired.revision, variant)
                record_checks[key] = lookup.problem or ""
                if lookup.summary:
                    artifacts[key] = lookup.summary
    plan = readings_needed(desired, state, datetime.now(UTC))
    readings = await _measure(runtime, desired, plan, meta_annotations)
    return Observed(
        p95=readings.p95,
        errors=readings.errors,
        shed=readings.shed,
        analysis=readings.analysis,
        guard=readings.guard,
        jobs=jobs,
        deployments=[observe.deployment_observation(d) for d in deps_raw],
        services=frozenset(s["metadata"]["name"] for s in svcs_raw),
        artifacts=artifacts,
        unschedulable=unschedulable,
        store_ready=store_ready,
        provider_fallbacks=providers.provider_fallbacks(runtime_pods),
        record_checks=record_checks,
    )


def _job_observations(
    jobs: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]
) -> list[JobObs]:
    """Each compression Job with the pods it ran."""
    out = []
    for job in jobs:
        job_pods = [
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get(labels.JOB_NAME) == job["metadata"]["name"]
        ]
        out.append(observe.job_observation(job, job_pods))
    return out


async def _unschedulable(
    runtime: Runtime, kube: Kube, desired: Desired, runtime_pods: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """Targets whose runtime pods cannot be scheduled, each with why no node fits when the
    nodes say (docs/architecture.md, placement)."""
    unschedulable = observe.unschedulable_targets(runtime_pods)
    if not unschedulable:
        return unschedulable
    nodes = await kube.list("v1", "Node", None)
    for target in desired.spec.targets:
        if target.name in unschedulable:
            reason = explain_unplaceable(
                Requirements(
                    builders.node_selector(target),
                    builders.tolerations(target),
                    {k: v for k, v in builders.pod_requests(target, runtime.settings).items()},
                ),
                nodes,
            )
            if reason:
                unschedulable[target.name] = reason
    return unschedulable


async def _store_ready(runtime: Runtime, kube: Kube) -> bool:
    """The managed artifact store has an available replica (always true when not managed)."""
    if not runtime.settings.manage_artifact_store:
        return True
    store = await kube.get(
        "apps/v1", "Deployment", runtime.settings.namespace, runtime.settings.artifact_service
    )
    return bool(store and (store.get("status") or {}).get("availableReplicas"))


async def _list_owned(kube: Kube, ns: str, name: str) -> Owned:
    """What `name` owns, by four LISTs (the path before the caches; bench --no-cache)."""
    jobs, deps, svcs, pods = await asyncio.gather(
        kube.list(
            "batch/v1", "Job", ns, labels=labels.owned_by(name, labels.COMPONENT_COMPRESSION)
        ),
        kube.list(
            "apps/v1", "Deployment", ns, labels=labels.owned_by(name, labels.COMPONENT_RUNTIME)
        ),
        kube.list("v1", "Service", ns, labels=labels.owned_by(name, labels.COMPONENT_RUNTIME)),
        kube.list("v1", "Pod", ns, labels=labels.owned_by(name)),
    )
    return Owned(tuple(jobs), tuple(deps), tuple(svcs), tuple(pods))


async def _latency(
    client: metrics.PrometheusClient,
    namespace: str,
    model: str,
    revision: str | None,
    target: str,
    window_s: int,
    objectives: list[LatencyObjective],
) -> metrics.Reading:
    """One target's latency reading: request p95, or the token SLO furthest over its line."""
    readings = await asyncio.gather(
        *(
            client.p95_ms(namespace, model, revision, target, window_s, o.slo, o.metric)
            for o in objectives
        )
    )
    if len(objectives) == 1:
        return readings[0]
    return worst_latency([named(o, r) for o, r in zip(objectives, readings, strict=True)])


async def _canary_checks(
    client: metrics.PrometheusClient,
    desired: Desired,
    stable: str,
    target: str,
    window_s: int,
    objectives: list[LatencyObjective],
) -> list[metrics.Reading]:
    """The canary analysis of one target: one check per latency objective (request latency,
    or a generative model's time to first token and inter-token latency), each against the
    stable revision's reading of the same histogram."""
    ns, name, rev, slo = desired.namespace, desired.name, desired.revision, desired.spec.slo
    if slo is None:  # readings_needed plans no analysis without an SLO
        return []
    errors = await client.error_rate(ns, name, rev, target, window_s, slo)
    checks = []
    for objective in objectives:
        canary_p95, stable_p95 = await asyncio.gather(
            *(
                client.p95_ms(ns, name, r, target, window_s, objective.slo, objective.metric)
                for r in (rev, stable)
            )
        )
        verdict = canary.analyse(canary_p95, errors, stable_p95, objective.slo)
        checks.append(named(objective, verdict))
    return checks


def _worst(readings: list[metrics.Reading]) -> metrics.Reading:
    """One reading for several: a failure anywhere fails, then errors, then no data."""
    order = [metrics.Outcome.FAILED, metrics.Outcome.ERROR, metrics.Outcome.INCONCLUSIVE]
    for outcome in order:
        found = [r for r in readings if r.outcome is outcome]
        if found:
            return found[0]
    return readings[0]


async def _measure(
    runtime: Runtime, desired: Desired, plan: ReadingsPlan, annotations: Mapping[str, str]
) -> Readings:
    """The SLO readings `plan` names (principle 4: each one classified, none raises)."""
    spec = desired.spec
    slo = spec.slo
    if slo is None or not plan.current:
        return Readings()
    ns, name, rev = desired.namespace, desired.name, desired.revision
    try:
        url = metrics.allowed_prometheus_url(
            annotations, runtime.settings.prometheus_url, runtime.settings.prometheus_allowed_urls
        )
    except ValueError as exc:
        url, problem = "", str(exc)
    else:
        problem = "" if url else "no Prometheus URL configured (--prometheus-url)"
    if problem:
        broken = metrics.Reading(metrics.Outcome.ERROR, None, None, problem)
        return Readings(p95={t.name: broken for t in spec.targets}, analysis=broken, guard=broken)
    client = runtime.prometheus_client(url)
    objectives = latency_objectives(spec)
    window = plan.window_s
    p95s = await asyncio.gather(
        *(_latency(client, ns, name, None, t.name, window, objectives) for t in spec.targets)
    )
    errs = await asyncio.gather(
        *(client.error_rate(ns, name, None, t.name, window, slo) for t in spec.targets)
    )
    shed_line = spec.autoscaling.scale_up_at_shed_fraction
    sheds = (
        await asyncio.gather(
            *(client.shed_fraction(ns, name, None, t.name, window, shed_line) for t in spec.targets)
        )
        if spec.autoscaling.enabled
        else []
    )
    analysis: metrics.Reading | None = None
    guard: metrics.Reading | None = None
    analysis_window = plan.analysis_window_s
    if plan.canary_vs:
        analysis = _worst(
            [
                check
                for target in spec.targets
                for check in await _canary_checks(
                    client, desired, plan.canary_vs, target.name, analysis_window, objectives
                )
            ]
        )
    if plan.guard:
        checks = []
        for target in spec.targets:
            g_p95, g_err = await asyncio.gather(
                _latency(client, ns, name, rev, target.name, analysis_window, objectives),
                client.error_rate(ns, name, rev, target.name, analysis_window, slo),
            )
            checks.append(_worst([g_p95, g_err]))
        guard = _worst(checks)
    return Readings(
        p95={t.name: r for t, r in zip(spec.targets, p95s, strict=True)},
        errors={t.name: r for t, r in zip(spec.targets, errs, strict=True)},
        shed={t.name: r for t, r in zip(spec.targets, sheds, strict=True)} if sheds else {},
        analysis=analysis,
        guard=guard,
    )


async def _sync_pull_secrets(runtime: Runtime, kube: Kube, namespace: str) -> None:
    """Copy the operator's image pull secrets into `namespace` (kept in sync each pass).

    Pods can only pull with a Secret of their own namespace. A failure here (the Secret
    missing, RBAC) is logged and does not stop the reconcile: the pods' ImagePullBackOff
    says the rest.
    """
    settings = runtime.settings
    if not settings.image_pull_secrets or namespace == settings.namespace:
        return
    names = settings.image_pull_secrets
    try:
        found = await asyncio.gather(
            *(kube.get("v1", "Secret", settings.namespace, n) for n in names),
            *(kube.get("v1", "Secret", namespace, n) for n in names),
        )
        copies, problems = builders.pull_secret_copies(
            settings,
            namespace,
            dict(zip(names, found[: len(names)], strict=True)),
            dict(zip(names, found[len(names) :], strict=True)),
        )
        for manifest in copies:
            await kube.apply(manifest)
    except KubeError as exc:
        problems = [f"cannot copy image pull secrets into {namespace!r}: {exc}"]
    for problem in problems:
        log.warning("image pull secret", extra={"namespace": namespace, "error": problem})


async def _artifact_base_url(runtime: Runtime, kube: Kube) -> str | None:
    settings = runtime.settings
    if settings.artifact_lookup_url:
        return settings.artifact_lookup_url
    if not runtime.resolve_services:
        return settings.artifact_url
    address = await kube.service_address(settings.namespace, settings.artifact_service, "http")
    return f"http://{address}" if address else None


async def _apply_owned(kube: Kube, action: Apply, cache: OwnedCache | None) -> str | None:
    """Applies one manifest; the conflict's text when the object is someone else's.

    What the watch-fed cache says saves the ownership GET (kube.Kube.apply): an object it
    shows as this EdgeModel's is written at once, one it does not know is written
    create-only (the API server refuses that write if the object exists after all)."""
    meta, kind = action.manifest["metadata"], action.manifest["kind"]
    watched = cache is not None and kind in OWNED_KINDS
    known = (
        cache.find(kind, meta.get("namespace") or "", meta["name"]) if cache is not None else None
    )
    try:
        await kube.apply(action.manifest, known, absent=watched and known is None)
    except OwnershipConflict as exc:
        return str(exc).removeprefix("409: ")
    return None


def ownership_conflict_status(
    status: dict[str, Any], conflicts: list[str], now: str, generation: int
) -> dict[str, Any]:
    """`status` with Ready=False, reason OwnershipConflict, naming every conflicting object.

    The operator never takes over an object it does not control (kube.Kube.apply); until
    the owner renames or deletes theirs, the EdgeModel says which object is in the way.
    """
    message = "; ".join(sorted(conflicts))
    conditions = set_condition(
        status.get("conditions") or [],
        "Ready",
        False,
        "OwnershipConflict",
        message,
        now,
        generation,
    )
    return {**status, "conditions": conditions}


def _conflicted(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("reason") == "OwnershipConflict"
        for c in status.get("conditions") or []
    )


async def _apply(kube: Kube, body: dict[str, Any], action: Apply | Delete | Event) -> None:
    if isinstance(action, Apply):
        await kube.apply(action.manifest)
    elif isinstance(action, Delete):
        await kube.delete(action.api_version, action.kind, action.namespace, action.name)
    else:
        log.info("event", extra={"reason": action.reason, "text": action.message})
        meta = body["metadata"]
        telemetry.record_decision(meta["namespace"], meta["name"], action.reason)
        await kube.event(body, action.type, action.reason, action.message)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())


async def _invalid_spec(
    kube: Kube, body: dict[str, Any], status: dict[str, Any], message: str, generation: int
) -> None:
    now = _now()
    conditions = set_condition(
        status.get("conditions") or [], "Ready", False, "InvalidSpec", message, now, generation
    )
    # Stalled: nothing changes until the spec does (kstatus/Flux fail it at once).
    conditions = set_condition(conditions, "Stalled", True, "InvalidSpec", message, now, generation)
    await _refuse(kube, body, status, conditions, generation, "InvalidSpec", message)


async def _host_path_refused(
    kube: Kube, body: dict[str, Any], status: dict[str, Any], message: str, generation: int
) -> None:
    """A `file://` source outside the host path allowlist: refused, like an invalid spec."""
    now, reason = _now(), "HostPathNotAllowed"
    conditions = set_condition(
        status.get("conditions") or [],
        "Ready",
        False,
        "HostPathNotAllowed",
        message,
        now,
        generation,
    )
    conditions = set_condition(
        conditions, "Stalled", True, "HostPathNotAllowed", message, now, generation
    )
    await _refuse(kube, body, status, conditions, generation, reason, message)


async def _refuse(
    kube: Kube,
    body: dict[str, Any],
    status: dict[str, Any],
    conditions: list[Any],
    generation: int,
    reason: str,
    message: str,
) -> None:
    new = {"phase": "Failed", "observedGeneration": generation, "conditions": conditions}
    if _changed(status, new):
        meta = body["metadata"]
        await kube.patch_status(EM_API, KIND, meta["namespace"], meta["name"], new)
        await kube.event(body, "Warning", reason, message)


async def _ensure_artifact_store(runtime: Runtime) -> None:
    kube = runtime.kube
    assert kube is not None
    await kube.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": runtime.settings.namespace}}
    )
    for manifest in builders.artifact_store(runtime.settings):
        await kube.apply(manifest)
