"""Owns the type-check of an artifact record: what the operator may take from a stored record
or a compression Job's publish summary (pure: no client, no clock).

Both come from outside the operator's trust (a store's volume, a termination message that
repeats the store's record when a publish finds one already there), so every field the lifecycle
reads is checked for its type before anything converts it: a wrong one is a `Lookup` whose
`problem` names the field, which the lifecycle turns into a condition (ArtifactRecordValid, or
the Job's failure), never an exception in every pass (docs/security.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NUMBERS = ("agreement", "accuracyOriginal", "accuracyCompressed", "accuracyDrop", "cosine")


@dataclass(frozen=True)
class Lookup:
    """A record judged: a usable publish summary, a problem naming a field, or neither (the
    store held nothing, or could not be asked)."""

    summary: dict[str, Any] | None = None
    problem: str | None = None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_record(record: Any) -> Lookup:
    """The publish-summary shape of a stored record, or the first field that is wrong (pure)."""
    if not isinstance(record, Mapping):
        return Lookup(problem="the record is not a JSON object")
    sha = record.get("artifactSha256")
    if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
        return Lookup(problem="field artifactSha256: expected 64 lowercase hex characters")
    result = record.get("result", "passed")
    if result != "passed":
        return Lookup(problem=f"field result: {str(result)[:40]!r}, only 'passed' is reused")
    checks: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
        ("sizeBytes", _is_count, "a non-negative integer"),
        ("wireBytes", _is_count, "a non-negative integer"),
        ("ratio", _is_number, "a number"),
        ("mode", lambda v: isinstance(v, str), "a string"),
        ("artifactUri", lambda v: isinstance(v, str), "a string"),
        ("report", lambda v: isinstance(v, dict), "an object"),
        ("accuracy", lambda v: isinstance(v, dict), "an object"),
    )
    summary: dict[str, Any] = {"artifactSha256": sha, "result": "passed"}
    for name, valid, expected in checks:
        value = record.get(name)
        if value is None:
            continue
        if not valid(value):
            return Lookup(problem=f"field {name}: expected {expected}")
        if name != "report":
            summary[name] = value
    accuracy = summary.get("accuracy")
    if isinstance(accuracy, dict):
        for key in _NUMBERS:
            value = accuracy.get(key)
            if value is not None and not _is_number(value):
                return Lookup(problem=f"field accuracy.{key}: expected a number")
        summary["accuracy"] = {key: accuracy.get(key) for key in _NUMBERS if key in accuracy}
    return Lookup(summary=summary)


def summary_from_record(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The publish summary of a stored record, or None when it is not usable."""
    return check_record(record).summary
