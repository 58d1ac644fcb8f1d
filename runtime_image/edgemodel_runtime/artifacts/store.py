"""Owns the artifact server's on-disk store and the validation of the names it accepts.

Layout under the root (the server owns it alone):

    artifacts/<sha256>                                  the blob, immutable once there
    records/<namespace>/<uid>/<digest>-<variant>.json   a revision record, write-once:
        {"artifactSha256": ..., "report": {...}, ...other fields as sent}
    .tmp/                   uploads in flight; whatever is there at start is a killed upload

A record is keyed by the EdgeModel it was published for (namespace + UID) and the full
sha256 revision digest, so no other EdgeModel (or a later one re-using the name) can read it as
its own, and a record, once there, is never replaced (a different second write is `Conflict`).
The store holds at most `quota_bytes` of blobs and records (`QuotaExceeded` before anything is
published); `plan_collection` says which unreferenced blobs and records may be deleted.

An upload streams into a private file in `.tmp/` while it is hashed and counted; only after
the digest matches is it hard-linked to `artifacts/<sha256>` (link fails if the name exists,
which makes "created" vs "already there" exact under concurrent uploads of the same blob).
Nothing in this module knows about HTTP; the server maps its exceptions to status codes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind

SHA256_RE = re.compile(r"[0-9a-f]{64}")
REVISION_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
NAMESPACE_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
UID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VARIANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_QUOTA_BYTES = 0  # 0: no quota beyond the disk itself
MAX_RECORD_BYTES = 4 << 20  # a report with a long accuracy-search log stays well under this
_SHOWN = 80  # how much of a bad value an error message quotes


class StoreError(EdgeModelRuntimeError, ValueError):
    """Base of the store's refusals; the message is one line fit for an HTTP error body."""

    failure = FailureKind.INVALID_INPUT


class InvalidName(StoreError):
    """A sha256 or revision name that does not match its pattern."""


class DigestMismatch(StoreError):
    """The uploaded bytes hash to something other than the name they were sent under."""


class TooLarge(StoreError):
    """The body is larger than the store accepts."""


class BadRecord(StoreError):
    """A revision record that is not the JSON object the API describes."""


class MissingArtifact(StoreError):
    """A revision record names an artifact the store does not hold."""

    failure = FailureKind.NOT_FOUND


class Conflict(StoreError):
    """A record is already stored under this key with other content (records are write-once)."""

    failure = FailureKind.CONFLICT


class QuotaExceeded(StoreError):
    """Storing this would take the store past its byte quota."""

    failure = FailureKind.UNAVAILABLE


@dataclass(frozen=True)
class RecordKey:
    """Where a revision record lives: the EdgeModel (namespace + UID), revision digest, variant."""

    namespace: str
    uid: str
    digest: str  # the full sha256 of the revision's material, not the short revision name
    variant: str

    @classmethod
    def parse(cls, namespace: str, uid: str, digest: str, variant: str) -> RecordKey:
        """Validate every part; InvalidName names the part that is wrong."""
        for field_name, value, pattern, expected in (
            ("namespace", namespace, NAMESPACE_RE, "a DNS label"),
            ("uid", uid, UID_RE, "a lowercase UUID"),
            ("digest", digest, SHA256_RE, "64 lowercase hex characters"),
            ("variant", variant, VARIANT_RE, "[a-z0-9][a-z0-9-]{0,30}"),
        ):
            if not pattern.fullmatch(value):
                raise InvalidName(f"invalid {field_name} {_shown(value)}: expected {expected}")
        return cls(namespace, uid, digest, variant)

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.uid}/{self.digest}-{self.variant}"


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def validate_sha256(value: str) -> str:
    """Accept exactly 64 lowercase hex characters; the store never normalises names."""
    if not SHA256_RE.fullmatch(value):
        raise InvalidName(f"invalid sha256 {_shown(value)}: expected 64 lowercase hex characters")
    return value


def validate_revision(value: str) -> str:
    if not REVISION_RE.fullmatch(value):
        raise InvalidName(
            f"invalid revision {_shown(value)}: expected [a-z0-9][a-z0-9-]{{0,62}} "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    return value


def parse_record(body: bytes) -> dict[str, Any]:
    """Validate a revision record body; returns the record as it will be stored."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRecord(f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRecord("the record must be a JSON object")
    sha = value.get("artifactSha256")
    if not isinstance(sha, str):
        raise BadRecord("the record needs 'artifactSha256' (a string)")
    try:
        validate_sha256(sha)
    except InvalidName as exc:
        raise BadRecord(f"artifactSha256: {exc}") from None
    report = value.get("report", {})
    if not isinstance(report, dict):
        raise BadRecord("'report' must be a JSON object")
    # Other top-level fields are kept as sent: publish stores its summary there, so a record
    # read back later gives the operator the same shape as the Job's termination message.
    return {**value, "artifactSha256": sha, "report": report}


class Upload:
    """One blob being received: a temp file plus the running digest and size.

    Not thread-safe; the server feeds one upload from one request at a time.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"body is larger than the limit of {self.max_bytes} bytes")
        self._digest.update(chunk)
        self._file.write(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def finish(self) -> str:
        """Flush to disk and return the digest; the file stays until commit or discard."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ArtifactStore:
    """Blobs by sha256 and write-once revision records, under one root directory."""

    def __init__(
        self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, quota_bytes: int = 0
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes  # 0: unlimited
        self.blobs = root / "artifacts"
        self.records = root / "records"
        self.tmp = root / ".tmp"
        self._lock = threading.Lock()  # guards `used` and quota decisions
        self.used = 0

    def open(self) -> list[Path]:
        """Create the layout and drop what killed uploads left behind; returns what was dropped.

        Only call this before serving: the server is the store's single owner, so anything in
        `.tmp/` at that moment belongs to a process that is gone.
        """
        for directory in (self.blobs, self.records, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        removed: list[Path] = []
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
        # A crash between writing a record's temp file and linking it leaves a dotfile there.
        for entry in self.records.glob("*/*/.*"):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
            removed.append(entry)
        self.used = sum(size for _path, size, _mtime in self._files())
        return removed

    def _files(self) -> Iterator[tuple[Path, int, float]]:
        for path in [*self.blobs.iterdir(), *self.records.glob("*/*/*.json")]:
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                yield path, info.st_size, info.st_mtime

    def _reserve(self, size: int) -> None:
        """Count `size` more bytes against the quota, or raise QuotaExceeded (caller holds lock)."""
        if self.quota_bytes and self.used + size > self.quota_bytes:
            raise QuotaExceeded(
                f"storing {size} bytes would exceed the store's quota of {self.quota_bytes} "
                f"bytes ({self.used} used); unreferenced artifacts are collected over time"
            )
        self.used += size

    def check_room(self, size: int) -> None:
        """Refuse early (before receiving a body) what cannot fit under the quota."""
        with self._lock:
            if self.quota_bytes and self.used + size > self.quota_bytes:
                self._reserve(size)  # raises with the message

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / validate_sha256(sha256)

    def has(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def begin(self) -> Upload:
        return Upload(self.tmp, self.max_bytes)

    def commit(self, upload: Upload, sha256: str) -> bool:
        """Verify and publish an upload under `sha256`; True if created, False if already there.

        QuotaExceeded leaves nothing behind. The temp file is gone afterwards whatever happens.
        """
        try:
            target = self.blob_path(sha256)
            digest = upload.finish()
            if digest != sha256:
                raise DigestMismatch(
                    f"sha256 mismatch: the URL names {sha256} but the body hashes to {digest}"
                )
            os.chmod(upload.path, 0o444)
            with self._lock:
                if target.exists():
                    return False
                self._reserve(upload.size)
                try:
                    os.link(upload.path, target)
                except FileExistsError:
                    self.used -= upload.size
                    return False
                except BaseException:
                    self.used -= upload.size
                    raise
            _fsync_dir(self.blobs)
            return True
        finally:
            upload.discard()

    def record_path(self, key: RecordKey) -> Path:
        return self.records / f"{key.path}.json"

    def put_record(self, key: RecordKey, record: dict[str, Any]) -> bool:
        """Store a validated record; True if new, False if the same record was already there.

        Write-once: a different record under a stored key raises Conflict. A re-run compression
        Job may produce other bytes (time-bounded accuracy search); the first record stands,
        so every reader sees one answer for a revision.
        """
        path = self.record_path(key)
        if not self.has(record["artifactSha256"]):
            raise MissingArtifact(
                f"artifact {record['artifactSha256']} is not in the store; upload it first"
            )
        data = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{key.digest}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(name, 0o444)
            with self._lock:
                if not path.exists():
                    self._reserve(len(data))
                try:
                    os.link(name, path)  # fails if the name exists: create-if-absent, atomic
                except FileExistsError:
                    if path.read_bytes() != data:
                        raise Conflict(
                            f"a different record is already stored for {key.path}; "
                            "records are write-once"
                        ) from None
                    return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        _fsync_dir(path.parent)
        return True

    def get_record(self, key: RecordKey) -> dict[str, Any] | None:
        try:
            value = json.loads(self.record_path(key).read_text())
        except FileNotFoundError:
            return None
        return value if isinstance(value, dict) else None

    def inventory(self) -> tuple[dict[str, float], dict[RecordKey, tuple[float, str]]]:
        """What the store holds: blob sha256 -> mtime, record key -> (mtime, artifact sha256)."""
        blobs: dict[str, float] = {}
        for path in self.blobs.iterdir():
            if SHA256_RE.fullmatch(path.name):
                with contextlib.suppress(FileNotFoundError):
                    blobs[path.name] = path.stat().st_mtime
        records: dict[RecordKey, tuple[float, str]] = {}
        for path in self.records.glob("*/*/*.json"):
            digest, _, variant = path.stem.partition("-")
            try:
                key = RecordKey.parse(path.parent.parent.name, path.parent.name, digest, variant)
                mtime = path.stat().st_mtime
                sha = json.loads(path.read_text()).get("artifactSha256", "")
            except (InvalidName, FileNotFoundError, ValueError, AttributeError):
                continue  # not ours to judge: never collected, never counted as a reference
            records[key] = (mtime, sha if isinstance(sha, str) else "")
        return blobs, records

    def delete(self, blobs: Iterable[str], records: Iterable[RecordKey]) -> int:
        """Remove these blobs and records; returns the bytes freed."""
        freed = 0
        paths = [self.record_path(k) for k in records] + [self.blob_path(s) for s in blobs]
        for path in paths:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            freed += size
            for parent in (path.parent, path.parent.parent):  # empty uid/namespace dirs
                if parent.parent in (self.records, self.records / parent.parent.name):
                    with contextlib.suppress(OSError):
                        parent.rmdir()
        with self._lock:
            self.used = max(0, self.used - freed)
        return freed


@dataclass(frozen=True)
class References:
    """What the cluster still needs: EdgeModels by (namespace, uid) and every sha256 they name
    (revision history artifacts, model/calibration/evaluation sources held in the store)."""

    edgemodels: frozenset[tuple[str, str]]
    shas: frozenset[str]
    revisions: frozenset[tuple[str, str, str]]  # (namespace, uid, short revision name)


def references_from(edgemodels: Iterable[dict[str, Any]]) -> References:
    """The references of a list of EdgeModel objects as the API server returns them (pure).

    Tolerant of any shape: a field of the wrong type references nothing rather than raising,
    and SHA256_RE finds digests wherever they sit (spec sources, status.revisions).
    """
    models: set[tuple[str, str]] = set()
    shas: set[str] = set()
    revisions: set[tuple[str, str, str]] = set()
    for item in edgemodels:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict):
            continue
        ns, uid = str(meta.get("namespace", "")), str(meta.get("uid", ""))
        models.add((ns, uid))
        text = json.dumps([item.get("spec"), item.get("status")], default=str)
        shas.update(re.findall(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", text))
        status = item.get("status")
        history = status.get("revisions") if isinstance(status, dict) else None
        for entry in history if isinstance(history, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("revision"), str):
                revisions.add((ns, uid, entry["revision"]))
    return References(frozenset(models), frozenset(shas), frozenset(revisions))


def plan_collection(
    blobs: dict[str, float],
    records: dict[RecordKey, tuple[float, str]],
    refs: References,
    *,
    now: float,
    grace_s: float,
    revision_length: int = 10,
) -> tuple[set[str], set[RecordKey]]:
    """Which blobs and records may go (pure). Nothing younger than `grace_s` goes (an upload
    whose record or EdgeModel status is not written yet); a record goes when its EdgeModel is
    gone, or its revision is not in that EdgeModel's history; a blob goes when no EdgeModel
    names it and no kept record does."""
    old = now - grace_s
    doomed_records: set[RecordKey] = set()
    for key, (mtime, _sha) in records.items():
        if mtime > old:
            continue
        short = "r" + key.digest[:revision_length]
        if (key.namespace, key.uid) not in refs.edgemodels or (
            (key.namespace, key.uid, short) not in refs.revisions
        ):
            doomed_records.add(key)
    kept_shas = refs.shas | {sha for key, (_m, sha) in records.items() if key not in doomed_records}
    doomed_blobs = {sha for sha, mtime in blobs.items() if mtime <= old and sha not in kept_shas}
    return doomed_blobs, doomed_records


def _fsync_dir(directory: Path) -> None:
    """Make a rename or link durable: a power cut must not lose a blob the client was told of."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
