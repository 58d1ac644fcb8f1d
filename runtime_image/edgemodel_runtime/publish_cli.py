"""Owns `edgemodel publish`: push a compression output to the artifact server, tell the operator.

Steps: find the single artifact under DIR, check model.onnx against the report's sha256, upload
it (skipped when the server already has it), store the revision record under the EdgeModel's
namespace + UID + full revision digest + variant, then write the summary (see
`artifacts.publish`) to the termination log and stdout. On failure the termination log gets
`{"schema", "revision", "error"}` instead, so the operator can show why.

Writes carry the bearer token read from `--token-file` (in a compression Job: the projected
ServiceAccount token for the store's audience, `DEFAULT_TOKEN_FILE`). Records are write-once:
when a record with another artifact is already there (a retried Job whose first try published),
the stored record stands and its summary is the one reported.

Exit codes: 0 published, 2 bad input or refused by the server (one line on stderr), 1 the server
stayed unreachable for `--timeout-s`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemodel_runtime.errors import FailureKind, exit_code

if TYPE_CHECKING:
    from edgemodel_runtime.artifacts.publish import Artifact
    from edgemodel_runtime.artifacts.store import RecordKey

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
DEFAULT_TOKEN_FILE = Path("/var/run/secrets/edgemodel.dev/artifacts/token")
EXIT_UNREACHABLE = exit_code(FailureKind.UNAVAILABLE)
EXIT_BAD_INPUT = exit_code(FailureKind.INVALID_INPUT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "output", type=Path, metavar="DIR", help="`edgemodel compress --output` dir"
    )
    parser.add_argument("--server", required=True, metavar="URL", help="artifact server base URL")
    parser.add_argument(
        "--revision", required=True, metavar="R", help="artifact key reported in the summary"
    )
    parser.add_argument("--namespace", required=True, help="the EdgeModel's namespace")
    parser.add_argument("--uid", required=True, help="the EdgeModel's UID")
    parser.add_argument(
        "--revision-digest",
        required=True,
        metavar="SHA256",
        help="the full sha256 digest of the revision (records are keyed by it)",
    )
    parser.add_argument("--variant", required=True, help="the artifact variant (amd64, gpu...)")
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help=f"bearer token for writes (default {DEFAULT_TOKEN_FILE} when it exists)",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        metavar="PATH",
        help=f"where to write the summary (default {DEFAULT_TERMINATION_LOG} when it exists)",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to retry an unreachable server (default 60)",
    )


def _termination_path(args: argparse.Namespace) -> Path | None:
    if args.termination_log is not None:
        path: Path = args.termination_log
        return path
    # Kubernetes mounts this file into every container; outside a pod there is nothing to write.
    return DEFAULT_TERMINATION_LOG if DEFAULT_TERMINATION_LOG.exists() else None


def _write_termination(path: Path | None, text: str) -> str | None:
    if path is None:
        return None
    try:
        path.write_text(text)
    except OSError as exc:
        return f"cannot write --termination-log {path}: {exc.strerror or exc}"
    return None


def _read_token(path: Path | None) -> str | None:
    """The bearer token for writes; OSError/ValueError when a named file is unusable."""
    if path is None:
        path = DEFAULT_TOKEN_FILE if DEFAULT_TOKEN_FILE.exists() else None
        if path is None:
            return None
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"--token-file {path}: empty")
    return token


def run(args: argparse.Namespace) -> int:
    from edgemodel_runtime.artifacts import client
    from edgemodel_runtime.artifacts.publish import SUMMARY_SCHEMA, dumps

    termination = _termination_path(args)

    def fail(code: int, reason: str) -> int:
        print(f"edgemodel publish: {reason}", file=sys.stderr)
        failure = {"schema": SUMMARY_SCHEMA, "revision": args.revision, "error": reason[:3000]}
        _write_termination(termination, json.dumps(failure, separators=(",", ":")))
        return code

    try:
        prepared = _prepare(args)
    except (ValueError, OSError) as exc:  # PublishError is a ValueError
        return fail(EXIT_BAD_INPUT, str(exc))
    try:
        result = _publish(prepared, args.timeout_s)
    except client.Rejected as exc:
        return fail(EXIT_BAD_INPUT, str(exc))
    except client.Unreachable as exc:
        return fail(EXIT_UNREACHABLE, str(exc))
    text = dumps(result)
    problem = _write_termination(termination, text)
    print(text)
    if problem is not None:
        # The operator reads the summary from there; without it the Job has not done its job.
        print(f"edgemodel publish: {problem}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0


@dataclass(frozen=True)
class _Prepared:
    """A checked compression output, ready to push: where, what, under which record key."""

    server: str
    key: RecordKey
    token: str | None
    artifact: Artifact
    result: dict[str, Any]


def _prepare(args: argparse.Namespace) -> _Prepared:
    """Checks the arguments and the output folder; raises ValueError/OSError naming what."""
    from edgemodel_runtime.artifacts import client
    from edgemodel_runtime.artifacts.publish import (
        PublishError,
        check_revision,
        find_artifact,
        summary,
    )
    from edgemodel_runtime.artifacts.store import InvalidName, RecordKey
    from edgemodel_runtime.sources import sha256_file

    server = client.normalize_server(args.server)
    revision = check_revision(args.revision)
    try:
        key = RecordKey.parse(args.namespace, args.uid, args.revision_digest, args.variant)
    except InvalidName as exc:
        raise PublishError(str(exc)) from None
    token = _read_token(args.token_file)
    if not args.timeout_s > 0:
        raise PublishError("--timeout-s must be positive")
    artifact = find_artifact(args.output)
    actual = sha256_file(artifact.model)
    if actual != artifact.sha256:
        raise PublishError(
            f"{artifact.model}: sha256 {actual} does not match report.json's {artifact.sha256}"
        )
    result = summary(
        revision=revision,
        server=server,
        sha256=artifact.sha256,
        size_bytes=artifact.model.stat().st_size,
        report=artifact.report,
    )
    return _Prepared(server, key, token, artifact, dict(result))


def _publish(prepared: _Prepared, timeout_s: float) -> dict[str, Any]:
    """Pushes the blob and the record (retrying); returns the summary the operator reads."""
    from edgemodel_runtime.artifacts import client

    server, artifact, token, result = (
        prepared.server,
        prepared.artifact,
        prepared.token,
        prepared.result,
    )

    def on_retry(exc: client.ClientError, delay: float) -> None:
        print(f"edgemodel publish: retrying in {delay:.2g} s: {exc}", file=sys.stderr)

    def push() -> None:
        if not client.has_artifact(server, artifact.sha256):
            client.upload_artifact(server, artifact.sha256, artifact.model, token=token)

    # The summary's fields ride along at the top level, so the operator's store lookup reads
    # the same shape as the termination message.
    record = {**result, "artifactSha256": artifact.sha256, "report": artifact.report}
    client.retry(push, deadline_s=timeout_s, on_retry=on_retry)
    try:
        client.retry(
            lambda: client.put_record(server, prepared.key, record, token=token),
            deadline_s=timeout_s,
            on_retry=on_retry,
        )
    except client.Rejected as exc:
        stored = client.get_record(server, prepared.key) if exc.status == 409 else None
        if stored is None or not isinstance(stored.get("artifactSha256"), str):
            raise
        # Write-once: the first record for this revision stands; report it, not ours.
        print(f"edgemodel publish: {exc}; reporting the stored record", file=sys.stderr)
        return {name: stored[name] for name in result if name in stored}
    return result
