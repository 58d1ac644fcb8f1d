"""Owns what a failed compression Job means: transient or permanent, and when to try again.

Transient: the source or the infrastructure failed, not the model — the model URI could not
be reached (cannot connect, timeout, HTTP 5xx/408/429), the artifact store was unreachable
(publish exit 1), the Job ran past its deadline or its pod was evicted. Trying again may
succeed, so the revision retries with a backoff that doubles per attempt up to a cap, and at
once when the spec gets a new generation.

Permanent: everything else — a failed accuracy gate (compress exit 3), an invalid model or
input (exit 2 with anything but a transient cause: a 404, a sha256 mismatch, an unreadable
graph), running out of memory. The same revision gives the same answer, so it stays Failed
until the spec's next generation, which re-evaluates it (docs/architecture.md, "Failures").
"""

from __future__ import annotations

import enum
import re

BACKOFF_BASE_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 300.0

_TRANSIENT = re.compile(
    r"cannot connect|timed out|timeout|HTTP (5\d\d|408|429)\b|fetch failed|read failed"
    r"|connection (reset|refused|aborted)|temporary failure|name resolution"
    r"|\bEvicted\b|DeadlineExceeded|publish exited 1\b",
    re.IGNORECASE,
)


class FailureKind(enum.StrEnum):
    """Whether trying the same revision again may help."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify(failure: str, gate_failed: bool) -> FailureKind:
    """A failed Job's kind, from its gate flag and its failure text (exit code, message)."""
    if gate_failed:
        return FailureKind.PERMANENT
    return FailureKind.TRANSIENT if _TRANSIENT.search(failure) else FailureKind.PERMANENT


def backoff_seconds(attempts: int) -> float:
    """The wait after `attempts` failed tries: 10 s, 20 s, 40 s, ... capped at 5 minutes."""
    exponent = min(max(attempts, 1) - 1, 16)
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0**exponent)
