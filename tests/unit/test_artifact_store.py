"""The artifact store's pure and on-disk logic: names, uploads, records, publish summary,
retry schedule and the node cache (the HTTP side is in tests/integration/artifacts)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgemodel_runtime.artifacts import cache as node_cache
from edgemodel_runtime.artifacts import client, publish
from edgemodel_runtime.artifacts.store import (
    ArtifactStore,
    BadRecord,
    DigestMismatch,
    InvalidName,
    MissingArtifact,
    RecordKey,
    TooLarge,
    parse_record,
    validate_revision,
    validate_sha256,
)

SHA = hashlib.sha256(b"blob").hexdigest()
KEY = RecordKey("ns1", "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f", "d" * 64, "amd64")


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [SHA, "0" * 64])
def test_valid_sha256(value: str) -> None:
    assert validate_sha256(value) == value


@pytest.mark.parametrize(
    "value", ["", SHA.upper(), SHA[:-1], SHA + "0", "z" * 64, SHA[:-1] + "\n", "../" + SHA[3:]]
)
def test_invalid_sha256_names_the_value(value: str) -> None:
    with pytest.raises(InvalidName, match="invalid sha256") as info:
        validate_sha256(value)
    assert repr(value)[:40] in str(info.value)


@pytest.mark.parametrize("value", ["a", "0", "rev-1", "a" * 63, "1-2-3", "digits-7f3a"])
def test_valid_revision(value: str) -> None:
    assert validate_revision(value) == value


@pytest.mark.parametrize("value", ["", "-a", "A", "a" * 64, "a_b", "a.b", "a/b", "..", "a\n", "é"])
def test_invalid_revision(value: str) -> None:
    with pytest.raises(InvalidName, match="invalid revision"):
        validate_revision(value)


@given(st.text(max_size=80))
def test_names_never_escape_their_directory(value: str) -> None:
    """Whatever passes validation is a single path component."""
    for check in (validate_sha256, validate_revision):
        try:
            check(value)
        except InvalidName:
            continue
        assert "/" not in value and value not in (".", "..") and "\0" not in value


# --- records -------------------------------------------------------------------------------


def test_parse_record_defaults_report() -> None:
    assert parse_record(json.dumps({"artifactSha256": SHA}).encode()) == {
        "artifactSha256": SHA,
        "report": {},
    }


def test_parse_record_keeps_extra_fields() -> None:
    body = json.dumps({"artifactSha256": SHA, "report": {"a": 1}, "ratio": 0.25}).encode()
    assert parse_record(body) == {"artifactSha256": SHA, "report": {"a": 1}, "ratio": 0.25}


@pytest.mark.parametrize(
    "body",
    [b"", b"nul", b"[]", b'"x"', b"{}", b'{"artifactSha256": 5}', b'{"artifactSha256": "x"}',
     json.dumps({"artifactSha256": SHA, "report": "x"}).encode(), b"\xff"],
)  # fmt: skip
def test_parse_record_refuses(body: bytes) -> None:
    with pytest.raises(BadRecord):
        parse_record(body)


# --- store ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    opened = ArtifactStore(tmp_path / "root", max_bytes=100)
    opened.open()
    return opened


def _upload(store: ArtifactStore, data: bytes, sha: str) -> bool:
    upload = store.begin()
    upload.write(data)
    return store.commit(upload, sha)


def test_commit_is_exact_about_created(store: ArtifactStore) -> None:
    assert _upload(store, b"blob", SHA) is True
    assert _upload(store, b"blob", SHA) is False
    assert store.blob_path(SHA).read_bytes() == b"blob"
    assert not any(store.tmp.iterdir())


def test_mismatch_stores_nothing(store: ArtifactStore) -> None:
    with pytest.raises(DigestMismatch) as info:
        _upload(store, b"other", SHA)
    assert SHA in str(info.value) and hashlib.sha256(b"other").hexdigest() in str(info.value)
    assert not store.has(SHA)
    assert not any(store.tmp.iterdir())


def test_oversized_upload_is_refused(store: ArtifactStore) -> None:
    upload = store.begin()
    upload.write(b"x" * 100)
    with pytest.raises(TooLarge):
        upload.write(b"x")
    upload.discard()
    assert not any(store.tmp.iterdir())


def test_open_removes_leftovers(store: ArtifactStore) -> None:
    store.begin()  # never finished: the process "died"
    (store.tmp / "dir").mkdir()
    record_dir = store.record_path(KEY).parent
    record_dir.mkdir(parents=True)
    (record_dir / f".{KEY.digest}.abc.part").write_text("{")
    assert len(store.open()) == 3
    assert not any(store.tmp.iterdir())
    assert not any(record_dir.iterdir())


def test_records_need_their_artifact(store: ArtifactStore) -> None:
    record: dict[str, Any] = {"artifactSha256": SHA, "report": {"a": 1}}
    with pytest.raises(MissingArtifact):
        store.put_record(KEY, record)
    _upload(store, b"blob", SHA)
    assert store.put_record(KEY, record) is True
    assert store.put_record(KEY, record) is False
    assert store.get_record(KEY) == record
    assert store.get_record(RecordKey(KEY.namespace, KEY.uid, KEY.digest, "arm64")) is None


# --- client retry schedule -----------------------------------------------------------------


def test_backoff_grows_to_a_cap() -> None:
    delays = client.backoff_delays()
    assert [next(delays) for _ in range(8)] == [0.25, 0.5, 1, 2, 4, 5, 5, 5]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retry_until_success() -> None:
    clock = _Clock()
    attempts = iter([client.Transient("down"), client.Transient("down"), None])

    def call() -> str:
        failure = next(attempts)
        if failure is not None:
            raise failure
        return "ok"

    assert client.retry(call, deadline_s=60, clock=clock, sleep=clock.sleep) == "ok"
    assert clock.sleeps == [0.25, 0.5]


def test_retry_gives_up_at_the_deadline() -> None:
    clock = _Clock()

    def call() -> None:
        raise client.Transient("connection refused")

    with pytest.raises(client.Unreachable, match="gave up after 10 s: connection refused"):
        client.retry(call, deadline_s=10, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(10)  # the last sleep is trimmed to the deadline


def test_retry_does_not_retry_a_rejection() -> None:
    clock = _Clock()

    def call() -> None:
        raise client.Rejected(400, "bad")

    with pytest.raises(client.Rejected):
        client.retry(call, deadline_s=10, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://store:8080", True),
        ("https://store.example/prefix/", True),
        ("store:8080", False),
        ("ftp://store", False),
        ("http://", False),
        ("http://store?x=1", False),
    ],
)
def test_normalize_server(url: str, ok: bool) -> None:
    if ok:
        assert not client.normalize_server(url).endswith("/")
    else:
        with pytest.raises(ValueError, match="invalid server URL"):
            client.normalize_server(url)


# --- publish -------------------------------------------------------------------------------


def _summary(report: dict[str, Any], server: str = "http://store:8080") -> dict[str, Any]:
    return publish.summary(revision="r1", server=server, sha256=SHA, size_bytes=10, report=report)


def test_summary_of_a_minimal_report() -> None:
    value = _summary({"artifact": {"sha256": SHA}})
    assert value["artifactUri"] == f"http://store:8080/v1/artifacts/{SHA}"
    assert value["result"] == "passed"
    assert value["accuracy"] is None
    assert value["ratio"] is None and value["mode"] is None


def test_summary_stays_under_the_termination_limit() -> None:
    hostile = {
        "result": "passed",
        "key": "k" * 10_000,
        "settings": {"mode": "m" * 10_000, "target": "t" * 10_000},
        "sizes": {"ratio": float("nan"), "wire_bytes": True, "input_bytes": "12"},
        "accuracy": {"agreement": 1e308, "cosine": "0.9"},
    }
    value = _summary(hostile)
    assert len(publish.dumps(value).encode()) <= publish.TERMINATION_LIMIT
    assert value["ratio"] is None and value["wireBytes"] is None and value["inputBytes"] is None
    assert value["accuracy"]["cosine"] is None


def test_summary_refuses_a_server_url_that_cannot_fit() -> None:
    with pytest.raises(publish.PublishError, match="too long"):
        _summary({}, server="http://s/" + "p" * 5000)


def test_find_artifact(tmp_path: Path) -> None:
    (tmp_path / ".tmp-run").mkdir()
    failed = tmp_path / ("f" * 64)  # gate failed: report only
    failed.mkdir()
    (failed / "report.json").write_text(json.dumps({"result": "gate-failed"}))
    good = tmp_path / ("a" * 64)
    good.mkdir()
    (good / "model.onnx").write_bytes(b"blob")
    (good / "report.json").write_text(json.dumps({"artifact": {"sha256": SHA}}))
    found = publish.find_artifact(tmp_path)
    assert (found.directory, found.sha256) == (good, SHA)


@pytest.mark.parametrize(
    ("report", "match"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ("{}", "no artifact.sha256"),
        ('{"artifact": {"sha256": "ABC"}}', "invalid sha256"),
        (json.dumps({"result": "gate-failed", "artifact": {"sha256": SHA}}), "gate-failed"),
    ],
)
def test_find_artifact_refuses_a_bad_report(tmp_path: Path, report: str, match: str) -> None:
    directory = tmp_path / "k"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(b"blob")
    (directory / "report.json").write_text(report)
    with pytest.raises(publish.PublishError, match=match):
        publish.find_artifact(tmp_path)


# --- node cache ----------------------------------------------------------------------------


def test_cache_lookup_verifies_and_drops_corrupt_entries(tmp_path: Path) -> None:
    cache = node_cache.NodeCache(tmp_path)
    assert cache.lookup(SHA) is None
    entry = cache.entry(SHA)
    entry.parent.mkdir()
    entry.write_bytes(b"blob")
    assert cache.lookup(SHA) == entry
    entry.write_bytes(b"blub")
    assert cache.lookup(SHA) is None
    assert not entry.exists()


def test_cache_fill_and_stale_cleanup(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"blob")
    cache = node_cache.NodeCache(tmp_path / "cache")
    entry = cache.fill(SHA, str(source), max_bytes=100, timeout_s=5)
    assert entry.read_bytes() == b"blob"
    stale = entry.parent / ".incoming-dead"
    stale.write_bytes(b"partial")
    fresh = entry.parent / ".incoming-live"
    fresh.write_bytes(b"partial")
    old = os.stat(stale).st_mtime - node_cache.STALE_TMP_S - 1
    os.utime(stale, (old, old))
    assert cache.clean_stale(SHA) == [stale]
    assert fresh.exists()


def test_cache_fill_refuses_other_bytes(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"other")
    cache = node_cache.NodeCache(tmp_path / "cache")
    with pytest.raises(node_cache.CacheError, match="mismatch"):
        cache.fill(SHA, str(source), max_bytes=100, timeout_s=5)
    assert not any((tmp_path / "cache" / SHA).iterdir())


def test_layouts(tmp_path: Path) -> None:
    cached = tmp_path / "blob"
    cached.write_bytes(b"blob")
    plain = node_cache.layout_plain(cached, tmp_path / "plain")
    assert plain == tmp_path / "plain" / "model.onnx" and plain.read_bytes() == b"blob"
    # Laying out again (a restarted init container) replaces in place.
    assert node_cache.layout_plain(cached, tmp_path / "plain") == plain
    model_dir = node_cache.layout_triton(cached, tmp_path / "repo", "digits", "name: 'digits'\n")
    assert (model_dir / "1" / "model.onnx").read_bytes() == b"blob"
    assert (model_dir / "config.pbtxt").read_text() == "name: 'digits'\n"
    assert sorted(p.name for p in (tmp_path / "repo").rglob("*")) == [
        "1",
        "config.pbtxt",
        "digits",
        "model.onnx",
    ]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "-x", "x" * 129, "a b"])
def test_bad_model_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        node_cache.validate_model_name(name)
