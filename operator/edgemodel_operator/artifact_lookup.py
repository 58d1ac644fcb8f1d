"""Owns asking the artifact store whether a revision's artifact already exists.

Used before launching a compression Job: an artifact the store holds (from an earlier
EdgeModel with the same model and settings, or a run whose status was lost) is reused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

log = logging.getLogger("edgemodel.artifacts")


def summary_from_record(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The publish-summary shape of a stored revision record, or None when it is not usable."""
    sha = record.get("artifactSha256")
    if not isinstance(sha, str) or len(sha) != 64:
        return None
    report = record.get("report") or {}
    summary: dict[str, Any] = {"artifactSha256": sha}
    for key in ("sizeBytes", "ratio", "mode", "accuracy", "artifactUri", "wireBytes", "result"):
        if key in record:
            summary[key] = record[key]
    if isinstance(report, Mapping):
        sizes = report.get("sizes") or {}
        if isinstance(sizes, Mapping):
            summary.setdefault("ratio", sizes.get("ratio"))
            summary.setdefault(
                "sizeBytes", sizes.get("artifact_bytes") or sizes.get("output_bytes")
            )
        summary.setdefault("mode", report.get("mode"))
        if isinstance(report.get("accuracy"), Mapping):
            summary.setdefault("accuracy", report["accuracy"])
    if summary.get("result") not in (None, "passed"):
        return None
    return {k: v for k, v in summary.items() if v is not None}


async def lookup(base_url: str, key: str) -> dict[str, Any] | None:
    """The store's record for `key` as a publish summary; None if absent or unreachable."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"{base_url.rstrip('/')}/v1/revisions/{key}") as response,
        ):
            if response.status != 200:
                return None
            record = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info("artifact store not reachable; compressing", extra={"key": key, "error": str(exc)})
        return None
    return summary_from_record(record) if isinstance(record, Mapping) else None
