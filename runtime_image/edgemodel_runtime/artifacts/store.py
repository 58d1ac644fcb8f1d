"""Owns the artifact server's on-disk store and the validation of the names it accepts.

Layout under the root (the server owns it alone):

    artifacts/<sha256>      the blob, immutable once there
    revisions/<name>.json   {"artifactSha256": ..., "report": {...}, ...other fields as sent}
    .tmp/                   uploads in flight; whatever is there at start is a killed upload

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
from pathlib import Path
from typing import Any

SHA256_RE = re.compile(r"[0-9a-f]{64}")
REVISION_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DEFAULT_MAX_BYTES = 4 << 30
MAX_RECORD_BYTES = 4 << 20  # a report with a long accuracy-search log stays well under this
_SHOWN = 80  # how much of a bad value an error message quotes


class StoreError(ValueError):
    """Base of the store's refusals; the message is one line fit for an HTTP error body."""


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
    """Blobs by sha256 and revision records, under one root directory."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.blobs = root / "artifacts"
        self.revisions = root / "revisions"
        self.tmp = root / ".tmp"

    def open(self) -> list[Path]:
        """Create the layout and drop what killed uploads left behind; returns what was dropped.

        Only call this before serving: the server is the store's single owner, so anything in
        `.tmp/` at that moment belongs to a process that is gone.
        """
        for directory in (self.blobs, self.revisions, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        removed: list[Path] = []
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
        # A crash between writing a record's temp file and renaming it leaves a dotfile there.
        for entry in self.revisions.glob(".*"):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
            removed.append(entry)
        return removed

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / validate_sha256(sha256)

    def has(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def begin(self) -> Upload:
        return Upload(self.tmp, self.max_bytes)

    def commit(self, upload: Upload, sha256: str) -> bool:
        """Verify and publish an upload under `sha256`; True if created, False if already there.

        The temp file is gone afterwards whatever happens.
        """
        try:
            target = self.blob_path(sha256)
            digest = upload.finish()
            if digest != sha256:
                raise DigestMismatch(
                    f"sha256 mismatch: the URL names {sha256} but the body hashes to {digest}"
                )
            os.chmod(upload.path, 0o444)
            try:
                os.link(upload.path, target)
            except FileExistsError:
                return False
            _fsync_dir(self.blobs)
            return True
        finally:
            upload.discard()

    def put_record(self, revision: str, record: dict[str, Any]) -> bool:
        """Store a validated record (last write wins); True if the revision is new.

        Last write wins rather than 409 because a re-run compression Job may legitimately
        produce different bytes (time-bounded accuracy search) for the same revision.
        """
        path = self.revisions / f"{validate_revision(revision)}.json"
        if not self.has(record["artifactSha256"]):
            raise MissingArtifact(
                f"artifact {record['artifactSha256']} is not in the store; upload it first"
            )
        created = not path.exists()
        fd, name = tempfile.mkstemp(prefix=f".{revision}.", suffix=".part", dir=self.revisions)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle, separators=(",", ":"), sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(name, 0o644)
            os.replace(name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        _fsync_dir(self.revisions)
        return created

    def get_record(self, revision: str) -> dict[str, Any] | None:
        path = self.revisions / f"{validate_revision(revision)}.json"
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return record


def _fsync_dir(directory: Path) -> None:
    """Make a rename or link durable: a power cut must not lose a blob the client was told of."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
