"""Owns the RFC 3339 timestamps the Kubernetes API uses ("2026-01-02T03:04:05Z", UTC, whole
seconds): formatting a moment and reading one back. Pure: the caller passes the moment (the
decision modules never read a clock); the sandbox's pod runner and image builder use these
too (docs/architecture.md, "One convention each")."""

from __future__ import annotations

from datetime import UTC, datetime

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(moment: datetime | float) -> str:
    """`moment` (seconds since the epoch, or a datetime: aware ones are converted to UTC,
    naive ones taken as UTC already) as the API writes it."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(RFC3339)


def parse_rfc3339(text: str) -> datetime:
    """The moment an API timestamp names; ValueError when `text` is not one."""
    return datetime.strptime(text, RFC3339).replace(tzinfo=UTC)
