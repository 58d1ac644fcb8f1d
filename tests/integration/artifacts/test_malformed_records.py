"""A writer who plants malformed records in a real `edgemodel artifact-server` cannot make the
operator's lookup raise: every one comes back as a problem naming the field (the operator's
`ArtifactRecordValid` condition, tests/unit/test_security_artifact_records.py), never as a
summary that would let the revision skip compression.

The attacker holds a write token (a compromised compression Job of this EdgeModel): the store
accepts any JSON object naming a stored blob, so wrongly typed fields reach the disk. Records
corrupted on the volume itself are planted as files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from edgemodel_operator.artifact_lookup import Lookup, lookup_records, record_path
from tests.integration.artifacts.support import ArtifactServer

NAMESPACE = "ns1"
UID = "2b7e1516-28ae-4d2a-a6f7-15880908f4c3"


def _digest(name: str) -> str:
    return hashlib.sha256(f"malformed-records {name}".encode()).hexdigest()


@pytest.fixture(scope="module")
def blob(server: ArtifactServer) -> str:
    data = b"an artifact the attacker uploaded" * 10
    sha = hashlib.sha256(data).hexdigest()
    status, _, body = server.request("PUT", f"/v1/artifacts/{sha}", data)
    assert status in (200, 201), body
    return sha


def _put(server: ArtifactServer, name: str, record: dict[str, Any]) -> None:
    path = record_path(NAMESPACE, UID, _digest(name), "amd64")
    status, _, body = server.request("PUT", path, json.dumps(record).encode())
    assert status in (200, 201), body  # the store keeps the wrong types as sent


def _plant(server: ArtifactServer, name: str, content: bytes) -> None:
    path = Path(server.root) / "records" / NAMESPACE / UID / f"{_digest(name)}-amd64.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _lookup(server: ArtifactServer, name: str) -> Lookup:
    found = asyncio.run(lookup_records(server.url, NAMESPACE, UID, _digest(name), ["amd64"]))
    return found["amd64"]


@pytest.mark.parametrize(
    ("name", "fields", "field"),
    [
        ("size-as-text", {"sizeBytes": "1e99"}, "sizeBytes"),
        ("negative-size", {"wireBytes": -5}, "wireBytes"),
        ("ratio-as-object", {"ratio": {"$gt": 0}}, "ratio"),
        ("agreement-as-text", {"accuracy": {"agreement": "perfect"}}, "accuracy.agreement"),
        ("accuracy-as-list", {"accuracy": [1.0]}, "accuracy"),
        ("gate-failed", {"result": "failed"}, "result"),
    ],
)
def test_a_record_with_a_forged_field_is_a_problem_naming_it(
    server: ArtifactServer, blob: str, name: str, fields: dict[str, Any], field: str
) -> None:
    _put(server, name, {"artifactSha256": blob, "report": {}, **fields})
    found = _lookup(server, name)
    assert found.summary is None
    assert found.problem is not None and f"field {field}" in found.problem


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("digest-uppercase", b'{"artifactSha256": "' + b"A" * 64 + b'"}', "artifactSha256"),
        ("no-digest", b'{"sizeBytes": 10}', "artifactSha256"),
        ("a-list", b"[1, 2, 3]", None),  # the store answers 404 for a non-object: no record
        ("not-json", b"\x00\xffgarbage{", None),  # the store fails to read it: no record
    ],
)
def test_a_record_corrupted_on_the_volume_never_raises_and_is_never_trusted(
    server: ArtifactServer, name: str, content: bytes, problem: str | None
) -> None:
    _plant(server, name, content)
    found = _lookup(server, name)
    assert found.summary is None
    if problem is None:
        assert found.problem is None  # the same as no record: the revision is compressed
    else:
        assert found.problem is not None and problem in found.problem


def test_a_well_formed_record_beside_the_forged_ones_is_still_used(
    server: ArtifactServer, blob: str
) -> None:
    _put(server, "well-formed", {"artifactSha256": blob, "report": {}, "sizeBytes": 330})
    found = _lookup(server, "well-formed")
    assert found.problem is None
    assert found.summary == {"artifactSha256": blob, "result": "passed", "sizeBytes": 330}
