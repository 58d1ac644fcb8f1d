"""Owns the question "can any node host this target?", answered from the node list alone.

The real scheduler decides placement; this pure check explains a target no node can host,
naming what is missing — a label, a resource or an untolerated taint — so the condition
says what to fix instead of leaving pods Pending in silence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgemodel_operator.quantity import parse_quantity


@dataclass(frozen=True)
class Requirements:
    """What a target's pods need from a node."""

    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, Any]]
    requests: Mapping[str, str]


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for tol in tolerations:
        effect = tol.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def explain_unplaceable(req: Requirements, nodes: Sequence[Mapping[str, Any]]) -> str | None:
    """None when at least one node can host the target; else what is missing, in one line."""
    if not nodes:
        return "no nodes in the cluster"
    selected = [
        n
        for n in nodes
        if all(
            (n.get("metadata", {}).get("labels") or {}).get(k) == v
            for k, v in req.node_selector.items()
        )
    ]
    if not selected:
        wanted = ",".join(f"{k}={v}" for k, v in sorted(req.node_selector.items()))
        return f"no node has labels {wanted} (0/{len(nodes)} nodes match)"
    tolerated = [
        n
        for n in selected
        if all(
            _tolerates(req.tolerations, t)
            for t in (n.get("spec", {}).get("taints") or [])
            if t.get("effect") in ("NoSchedule", "NoExecute")
        )
    ]
    if not tolerated:
        taints = sorted(
            {
                f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}"
                for n in selected
                for t in (n.get("spec", {}).get("taints") or [])
            }
        )
        listed = ", ".join(taints)
        return f"{len(selected)} node(s) match the selector but have untolerated taints {listed}"
    for resource, amount in sorted(req.requests.items()):
        wanted_amount = parse_quantity(amount)
        fitting = [
            n
            for n in tolerated
            if parse_quantity(
                str((n.get("status", {}).get("allocatable") or {}).get(resource, "0"))
            )
            >= wanted_amount
        ]
        if not fitting:
            return (
                f"no node matching the selector has allocatable {resource} >= {amount} "
                f"({len(tolerated)} node(s) checked)"
            )
        tolerated = fitting
    return None
