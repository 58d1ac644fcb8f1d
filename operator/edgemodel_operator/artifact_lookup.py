"""Owns asking the artifact store whether a revision's artifact already exists, and judging it.

Used before launching a compression Job: a record the store holds for *this* EdgeModel (its
namespace and UID), this revision's full digest and this variant is reused — a run whose status
was lost. The store lets only a compression Job the operator created for that EdgeModel write
there (TokenReview of the Job pod's projected token), and never replaces a record, so a record
found there passed that Job's accuracy gate. Records of other EdgeModels are never looked at.

A record is type-checked field by field (`records.check_record`, pure, shared with the check of
a Job's publish summary): a malformed one is a `Lookup` with a `problem` naming the field (for
the ArtifactRecordValid condition), never an exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import aiohttp

from edgemodel_operator.records import SHA256_RE, Lookup, check_record, summary_from_record

__all__ = [
    "SHA256_RE",
    "Lookup",
    "check_record",
    "lookup",
    "lookup_record",
    "lookup_records",
    "record_path",
    "summary_from_record",
]

log = logging.getLogger("edgemodel.artifacts")

V = TypeVar("V", bound=str)  # a variant name, as the caller types it

LOOKUP_TIMEOUT = aiohttp.ClientTimeout(total=5)  # per record: a slow store means "compress"


def record_path(namespace: str, uid: str, digest: str, variant: str) -> str:
    """The store's URL path of a record (the server's `/v1/records/...` route)."""
    return f"/v1/records/{namespace}/{uid}/{digest}/{variant}"


async def lookup_record(
    base_url: str,
    namespace: str,
    uid: str,
    digest: str,
    variant: str,
    session: aiohttp.ClientSession | None = None,
) -> Lookup:
    """The store's record of this EdgeModel's revision variant; empty Lookup if absent or the
    store is unreachable (then the revision is compressed), a problem if malformed. Never
    raises for anything the store answers."""
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await lookup_record(base_url, namespace, uid, digest, variant, own)
    url = base_url.rstrip("/") + record_path(namespace, uid, digest, variant)
    try:
        async with session.get(url, timeout=LOOKUP_TIMEOUT) as response:
            if response.status != 200:
                return Lookup()
            record = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info("artifact store not reachable; compressing", extra={"url": url, "error": str(exc)})
        return Lookup()
    checked = check_record(record)
    if checked.problem:
        log.warning("malformed artifact record", extra={"url": url, "error": checked.problem})
    return checked


async def lookup_records(
    base_url: str,
    namespace: str,
    uid: str,
    digest: str,
    variants: Sequence[V],
    session: aiohttp.ClientSession | None = None,
) -> dict[V, Lookup]:
    """variant -> `lookup_record`, all asked at once over one connection pool: `session`
    (the operator's shared one, so a reconcile opens no connection of its own), else one
    opened for these lookups."""
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await lookup_records(base_url, namespace, uid, digest, variants, own)
    found = await asyncio.gather(
        *(lookup_record(base_url, namespace, uid, digest, v, session) for v in variants)
    )
    return dict(zip(variants, found, strict=True))


async def lookup(base_url: str, key: str) -> dict[str, Any] | None:
    """Superseded: records are keyed by EdgeModel namespace + UID + full revision digest; a
    short key names no record, so this always answers None (compress). Use `lookup_record`."""
    del base_url, key
    return None
