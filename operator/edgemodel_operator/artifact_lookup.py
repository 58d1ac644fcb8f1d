"""Owns asking the artifact store whether a revision's artifact already exists, and judging it.

Used before launching a compression Job: a record the store holds for *this* EdgeModel (its
namespace and UID), this revision's full digest and this variant is reused — a run whose status
was lost. The store lets only a compression Job the operator created for that EdgeModel write
there (TokenReview of the Job pod's projected token), and never replaces a record, so a record
found there passed that Job's accuracy gate. Records of other EdgeModels are never looked at.

A record is type-checked field by field (`check_record`): a malformed one is a `Lookup` with a
`problem` naming the field (for a condition), never an exception.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger("edgemodel.artifacts")

SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NUMBERS = ("agreement", "accuracyOriginal", "accuracyCompressed", "accuracyDrop", "cosine")


@dataclass(frozen=True)
class Lookup:
    """What the store said: a usable publish summary, a problem naming a field, or neither."""

    summary: dict[str, Any] | None = None
    problem: str | None = None


def record_path(namespace: str, uid: str, digest: str, variant: str) -> str:
    """The store's URL path of a record (the server's `/v1/records/...` route)."""
    return f"/v1/records/{namespace}/{uid}/{digest}/{variant}"


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


async def lookup_record(
    base_url: str, namespace: str, uid: str, digest: str, variant: str
) -> Lookup:
    """The store's record of this EdgeModel's revision variant; empty Lookup if absent or the
    store is unreachable (then the revision is compressed), a problem if malformed."""
    url = base_url.rstrip("/") + record_path(namespace, uid, digest, variant)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                return Lookup()
            record = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info("artifact store not reachable; compressing", extra={"url": url, "error": str(exc)})
        return Lookup()
    checked = check_record(record)
    if checked.problem:
        log.warning("malformed artifact record", extra={"url": url, "error": checked.problem})
        return Lookup(problem=f"artifact record {namespace}/{uid}/{variant}: {checked.problem}")
    return checked


async def lookup(base_url: str, key: str) -> dict[str, Any] | None:
    """Superseded: records are keyed by EdgeModel namespace + UID + full revision digest; a
    short key names no record, so this always answers None (compress). Use `lookup_record`."""
    del base_url, key
    return None
