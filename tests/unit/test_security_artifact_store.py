"""The artifact store's defences, each test named after the attack it plays: records keyed by
EdgeModel and full digest, write-once records, who may write what (the Job -> EdgeModel chain a
token must lead to), the operator's type-check of what it reads, the quota and the collector
(the HTTP side is in tests/integration/artifacts/test_store_auth.py and test_store_quota.py)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from edgemodel_operator import builders
from edgemodel_operator.api import parse_spec
from edgemodel_operator.artifact_lookup import check_record, lookup
from edgemodel_operator.revision import revision_of
from edgemodel_runtime.artifacts.auth import MANAGER, StaticTokens, compression_scope
from edgemodel_runtime.artifacts.store import (
    ArtifactStore,
    Conflict,
    InvalidName,
    QuotaExceeded,
    RecordKey,
    References,
    plan_collection,
    references_from,
)

UID = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
OTHER_UID = "0b9d3a52-5c4e-4f7e-9a43-1d2c3b4a5f60"
DIGEST = hashlib.sha256(b"revision material").hexdigest()
KEY = RecordKey("ns1", UID, DIGEST, "amd64")


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    opened = ArtifactStore(tmp_path / "root", max_bytes=1000, quota_bytes=2000)
    opened.open()
    return opened


def _put_blob(store: ArtifactStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    upload = store.begin()
    upload.write(data)
    store.commit(upload, sha)
    return sha


# --- record keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("namespace", "../etc"),
        ("namespace", "NS"),
        ("uid", "not-a-uid"),
        ("uid", UID.upper()),
        ("digest", DIGEST[:10]),  # a short revision name is not a key: 40 bits can collide
        ("variant", "amd64/../../x"),
    ],
)
def test_a_forged_key_part_is_refused_naming_it(part: str, value: str) -> None:
    parts = {"namespace": "ns1", "uid": UID, "digest": DIGEST, "variant": "amd64"}
    parts[part] = value
    with pytest.raises(InvalidName, match=part):
        RecordKey.parse(**parts)


def test_records_of_two_edgemodels_never_share_a_file(store: ArtifactStore) -> None:
    sha = _put_blob(store, b"artifact")
    mine = {"artifactSha256": sha, "report": {}}
    store.put_record(KEY, mine)
    theirs = RecordKey("ns1", OTHER_UID, DIGEST, "amd64")  # same name, same revision digest
    assert store.get_record(theirs) is None
    assert store.record_path(KEY) != store.record_path(theirs)


# --- write-once -----------------------------------------------------------------------------


def test_overwriting_a_record_with_another_artifact_is_a_conflict(store: ArtifactStore) -> None:
    good, evil = _put_blob(store, b"gated artifact"), _put_blob(store, b"ungated artifact")
    assert store.put_record(KEY, {"artifactSha256": good, "report": {}}) is True
    with pytest.raises(Conflict, match="write-once"):
        store.put_record(KEY, {"artifactSha256": evil, "report": {}})
    assert store.get_record(KEY) == {"artifactSha256": good, "report": {}}
    # The same record again is idempotent (a retried publish), not a conflict.
    assert store.put_record(KEY, {"artifactSha256": good, "report": {}}) is False
    assert [p.name for p in store.record_path(KEY).parent.iterdir()] == [f"{DIGEST}-amd64.json"]


# --- who may write --------------------------------------------------------------------------


def _pod_and_job(**job_changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    job: dict[str, Any] = {
        "metadata": {
            "name": "digits-r1-amd64",
            "namespace": "ns1",
            "uid": "job-uid",
            "labels": {
                "app.kubernetes.io/managed-by": MANAGER,
                "app.kubernetes.io/component": "compression",
            },
            "ownerReferences": [
                {
                    "apiVersion": "edgemodel.dev/v1alpha1",
                    "kind": "EdgeModel",
                    "name": "digits",
                    "uid": UID,
                    "controller": True,
                }
            ],
        }
    }
    job["metadata"].update(job_changes)
    pod = {
        "metadata": {
            "name": "digits-r1-amd64-x",
            "namespace": "ns1",
            "uid": "pod-uid",
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "digits-r1-amd64",
                    "uid": "job-uid",
                    "controller": True,
                }
            ],
        }
    }
    return pod, job


def test_a_compression_job_pod_may_write_its_own_edgemodel_only() -> None:
    pod, job = _pod_and_job()
    assert compression_scope(pod, job) == ("ns1", UID)


@pytest.mark.parametrize(
    "forgery",
    ["job-not-the-operators", "job-not-compression", "job-owned-by-no-edgemodel", "other-job-uid"],
)
def test_a_pod_of_a_job_the_operator_did_not_create_may_not_write_records(forgery: str) -> None:
    pod, job = _pod_and_job()
    meta = job["metadata"]
    if forgery == "job-not-the-operators":
        meta["labels"]["app.kubernetes.io/managed-by"] = "someone"
    elif forgery == "job-not-compression":
        meta["labels"]["app.kubernetes.io/component"] = "runtime"
    elif forgery == "job-owned-by-no-edgemodel":
        meta["ownerReferences"] = []
    else:  # the pod names a Job of the same name that was deleted and re-created by someone
        meta["uid"] = "another-job-uid"
    assert compression_scope(pod, job) is None


def test_a_static_token_is_compared_whole_and_scoped(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# writers\nadmin-token-0123456789\nscoped-token-0123456789 ns1/{UID}\n")
    tokens = StaticTokens.load(path)
    admin = asyncio.run(tokens.authenticate("admin-token-0123456789"))
    scoped = asyncio.run(tokens.authenticate("scoped-token-0123456789"))
    assert admin is not None and admin.may_write_record("any", OTHER_UID)
    assert scoped is not None and scoped.may_write_record("ns1", UID)
    assert not scoped.may_write_record("ns1", OTHER_UID)
    assert asyncio.run(tokens.authenticate("admin-token-012345678")) is None  # a prefix
    assert asyncio.run(tokens.authenticate("")) is None


def test_a_guessable_static_token_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="shorter than 16"):
        StaticTokens.load(path)


# --- what the operator reads ----------------------------------------------------------------


SHA = "a" * 64


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ([1, 2], "not a JSON object"),
        ({}, "artifactSha256"),
        ({"artifactSha256": "A" * 64}, "artifactSha256"),
        ({"artifactSha256": SHA, "result": "failed"}, "result"),
        ({"artifactSha256": SHA, "sizeBytes": "12"}, "sizeBytes"),
        ({"artifactSha256": SHA, "sizeBytes": -1}, "sizeBytes"),
        ({"artifactSha256": SHA, "sizeBytes": True}, "sizeBytes"),
        ({"artifactSha256": SHA, "ratio": "0.3"}, "ratio"),
        ({"artifactSha256": SHA, "mode": 3}, "mode"),
        ({"artifactSha256": SHA, "report": []}, "report"),
        ({"artifactSha256": SHA, "accuracy": {"agreement": "high"}}, "accuracy.agreement"),
    ],
)
def test_a_malformed_stored_record_is_a_problem_naming_the_field(record: Any, field: str) -> None:
    checked = check_record(record)
    assert checked.summary is None
    assert checked.problem is not None and field in checked.problem


def test_a_well_formed_record_becomes_a_summary() -> None:
    checked = check_record(
        {"artifactSha256": SHA, "sizeBytes": 10, "ratio": 0.3, "accuracy": {"agreement": 0.99}}
    )
    assert checked.problem is None
    assert checked.summary == {
        "artifactSha256": SHA,
        "result": "passed",
        "sizeBytes": 10,
        "ratio": 0.3,
        "accuracy": {"agreement": 0.99},
    }


def test_a_short_revision_key_never_skips_compression() -> None:
    """The old lookup by `<revision>-<variant>` (40 bits, any EdgeModel's) answers nothing."""
    assert asyncio.run(lookup("http://127.0.0.1:1", "r0123456789-amd64")) is None


def test_the_job_publishes_under_the_full_revision_digest_with_a_store_token() -> None:
    spec = parse_spec(
        {
            "model": {"uri": "https://m.example/m.onnx", "sha256": SHA},
            "targets": [{"name": "cpu", "arch": "amd64"}],
        }
    )
    revision = revision_of(spec)
    digest = builders.revision_digest(spec)
    assert len(digest) == 64 and revision == "r" + digest[:10]
    job = builders.compression_job("m", "ns1", UID, spec, revision, "amd64", builders_settings())
    pod = job["spec"]["template"]["spec"]
    publish = pod["containers"][0]
    args = publish["args"]
    flags = dict(itertools.pairwise(args))
    assert (flags["--namespace"], flags["--uid"], flags["--revision-digest"]) == (
        "ns1",
        UID,
        digest,
    )
    (token,) = [v for v in pod["volumes"] if v["name"] == "artifact-token"]
    source = token["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == builders.ARTIFACT_AUDIENCE
    assert pod["automountServiceAccountToken"] is False  # no API token, only the store's
    # The compress step runs model code: it never sees the token.
    compress = pod["initContainers"][0]
    assert all(m["name"] != "artifact-token" for m in compress["volumeMounts"])
    assert any(m["name"] == "artifact-token" for m in publish["volumeMounts"])


def builders_settings() -> Any:
    from edgemodel_operator.settings import Settings

    return Settings()


# --- quota ----------------------------------------------------------------------------------


def test_filling_the_store_past_its_quota_is_refused_and_leaves_nothing(
    store: ArtifactStore,
) -> None:
    _put_blob(store, b"x" * 900)
    _put_blob(store, b"y" * 900)
    upload = store.begin()
    upload.write(b"z" * 900)
    with pytest.raises(QuotaExceeded, match="quota of 2000"):
        store.commit(upload, hashlib.sha256(b"z" * 900).hexdigest())
    assert len(list(store.blobs.iterdir())) == 2 and not any(store.tmp.iterdir())
    assert store.used == 1800
    # Collection frees room, and the store accepts again.
    store.delete([hashlib.sha256(b"x" * 900).hexdigest()], [])
    assert store.used == 900
    _put_blob(store, b"z" * 900)
    # The count survives a restart: it is recomputed from the disk.
    reopened = ArtifactStore(store.root, quota_bytes=2000)
    reopened.open()
    assert reopened.used == 1800


# --- collection -----------------------------------------------------------------------------


def _edgemodel(uid: str, artifact: str, revision: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns1", "name": "m", "uid": uid},
        "spec": {"model": {"uri": f"http://store/v1/artifacts/{'b' * 64}", "sha256": "b" * 64}},
        "status": {"revisions": [{"revision": revision, "artifactDigest": artifact}]},
    }


def test_references_cover_history_and_sources_and_survive_odd_shapes() -> None:
    refs = references_from(
        [
            _edgemodel(UID, "c" * 64, "r" + DIGEST[:10]),
            {"metadata": "broken"},
            {"metadata": {"namespace": "ns2", "uid": OTHER_UID}, "status": {"revisions": "x"}},
        ]
    )
    assert {"b" * 64, "c" * 64} <= refs.shas
    assert ("ns1", UID, "r" + DIGEST[:10]) in refs.revisions
    assert ("ns2", OTHER_UID) in refs.edgemodels


def test_a_blob_referenced_by_any_revision_history_is_never_collected() -> None:
    old, now = 1000.0, 1000.0 + 10 * 86400
    history = "c" * 64
    refs = references_from([_edgemodel(UID, history, "r" + DIGEST[:10])])
    blobs = {history: old, "b" * 64: old, "e" * 64: old, "f" * 64: now - 60}
    records = {KEY: (old, "e" * 64), RecordKey("ns1", OTHER_UID, DIGEST, "amd64"): (old, "d" * 64)}
    doomed_blobs, doomed_records = plan_collection(blobs, records, refs, now=now, grace_s=3600)
    # Kept: the history's artifact, the spec's source, the artifact of a kept record, and
    # anything younger than the grace period (an upload whose record is not written yet).
    assert history not in doomed_blobs and "b" * 64 not in doomed_blobs
    assert "e" * 64 not in doomed_blobs and "f" * 64 not in doomed_blobs
    # Gone: the record of an EdgeModel that no longer exists.
    assert doomed_records == {RecordKey("ns1", OTHER_UID, DIGEST, "amd64")}
    assert doomed_blobs == set()


def test_an_unreferenced_blob_older_than_the_grace_period_is_collected(
    store: ArtifactStore,
) -> None:
    kept = _put_blob(store, b"in a revision history")
    orphan = _put_blob(store, b"nobody's")
    store.put_record(KEY, {"artifactSha256": orphan, "report": {}})  # a revision since dropped
    long_ago = 1000.0
    for path in [store.blob_path(kept), store.blob_path(orphan), store.record_path(KEY)]:
        os.utime(path, (long_ago, long_ago))
    refs = References(
        edgemodels=frozenset({("ns1", UID)}),
        shas=frozenset({kept}),
        revisions=frozenset({("ns1", UID, "r0000000000")}),  # not KEY's revision
    )
    blobs, records = store.inventory()
    doomed_blobs, doomed_records = plan_collection(
        blobs, records, refs, now=long_ago + 7200, grace_s=3600
    )
    assert (doomed_blobs, doomed_records) == ({orphan}, {KEY})
    freed = store.delete(doomed_blobs, doomed_records)
    assert freed > len(b"nobody's")
    assert store.has(kept) and not store.has(orphan) and store.get_record(KEY) is None
    assert not (store.records / "ns1").exists()  # empty namespace/uid directories go too
