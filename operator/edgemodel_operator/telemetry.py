"""Owns the operator's own metrics: reconcile duration, decisions, rollbacks, per-target
replicas and the SLO each EdgeModel is held to, served on the operator's metrics port.

Labels are bounded by the objects the operator manages (namespace, EdgeModel, target, Event
reason) — never a request, pod or revision id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
RECONCILE_SECONDS = Histogram(
    "edgemodel_operator_reconcile_duration_seconds",
    "Time of one reconcile pass over one EdgeModel.",
    ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
DECISIONS = Counter(
    "edgemodel_operator_decisions_total",
    "Decisions the operator acted on, by Event reason (ScaledUp, CanaryAdvanced, Promoted, ...).",
    ["namespace", "name", "reason"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "edgemodel_operator_rollbacks_total",
    "Automatic rollbacks (failed canary or post-promotion guard).",
    ["namespace", "name"],
    registry=REGISTRY,
)
REPLICAS = Gauge(
    "edgemodel_operator_target_replicas",
    "Replicas the operator asks for, per target.",
    ["namespace", "name", "target"],
    registry=REGISTRY,
)
READY_REPLICAS = Gauge(
    "edgemodel_operator_target_ready_replicas",
    "Ready replicas per target.",
    ["namespace", "name", "target"],
    registry=REGISTRY,
)
SLO_P95_SECONDS = Gauge(
    "edgemodel_operator_slo_p95_seconds",
    "The p95 latency objective of each EdgeModel (a line to draw p95 against).",
    ["namespace", "name"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "edgemodel_operator_queue_depth", "EdgeModels waiting for a reconcile.", registry=REGISTRY
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)


def record_decision(namespace: str, name: str, reason: str) -> None:
    DECISIONS.labels(namespace, name, reason).inc()
    if reason == "RolledBack":
        ROLLBACKS.labels(namespace, name).inc()


def record_status(
    namespace: str, name: str, status: Mapping[str, Any], slo_ms: float | None
) -> None:
    for target in status.get("targets") or []:
        REPLICAS.labels(namespace, name, target["name"]).set(target.get("replicas") or 0)
        READY_REPLICAS.labels(namespace, name, target["name"]).set(target.get("readyReplicas") or 0)
    if slo_ms is not None:
        SLO_P95_SECONDS.labels(namespace, name).set(slo_ms / 1000.0)


def forget(namespace: str, name: str) -> None:
    """Drop an EdgeModel's series once it is deleted (keeps the label set bounded)."""
    for gauge in (REPLICAS, READY_REPLICAS):
        for labels in [k for k in list(gauge._metrics) if k[:2] == (namespace, name)]:
            gauge.remove(*labels)
    for labels in [k for k in list(SLO_P95_SECONDS._metrics) if k == (namespace, name)]:
        SLO_P95_SECONDS.remove(*labels)
