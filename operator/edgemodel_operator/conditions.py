"""Owns status conditions in the kstatus shape: type, status, reason, message,
lastTransitionTime (moved only when status flips) and observedGeneration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ORDER = (
    "Ready",
    "Compressed",
    "Available",
    "Progressing",
    "Degraded",
    "Stalled",
    "MetricsAvailable",
)


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    kind: str,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int,
) -> list[Mapping[str, Any]]:
    """A new list with condition `kind` set; its transition time stays unless the status flips."""
    text = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.get("type") == kind), None)
    since = (
        previous.get("lastTransitionTime") if previous and previous.get("status") == text else now
    )
    updated = {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }
    rest = [c for c in conditions if c.get("type") != kind]
    merged = [*rest, updated]
    return sorted(
        merged, key=lambda c: ORDER.index(c["type"]) if c["type"] in ORDER else len(ORDER)
    )


def get(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)
