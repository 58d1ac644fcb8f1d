"""Owns `edgemodel publish`: push a compression output to the artifact server, tell the operator.

Steps: find the single artifact under DIR, check model.onnx against the report's sha256, upload
it (skipped when the server already has it), store the revision record, then write the summary
(see `artifacts.publish`) to the termination log and stdout. On failure the termination log
gets `{"schema", "revision", "error"}` instead, so the operator can show why.

Exit codes: 0 published, 2 bad input or refused by the server (one line on stderr), 1 the server
stayed unreachable for `--timeout-s`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
EXIT_UNREACHABLE = 1
EXIT_BAD_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "output", type=Path, metavar="DIR", help="`edgemodel compress --output` dir"
    )
    parser.add_argument("--server", required=True, metavar="URL", help="artifact server base URL")
    parser.add_argument("--revision", required=True, metavar="R", help="revision name to record")
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


def run(args: argparse.Namespace) -> int:
    from edgemodel_runtime.artifacts import client
    from edgemodel_runtime.artifacts.publish import (
        SUMMARY_SCHEMA,
        PublishError,
        check_revision,
        dumps,
        find_artifact,
        summary,
    )
    from edgemodel_runtime.sources import sha256_file

    termination = _termination_path(args)

    def fail(code: int, reason: str) -> int:
        print(f"edgemodel publish: {reason}", file=sys.stderr)
        failure = {"schema": SUMMARY_SCHEMA, "revision": args.revision, "error": reason[:3000]}
        _write_termination(termination, json.dumps(failure, separators=(",", ":")))
        return code

    try:
        server = client.normalize_server(args.server)
        revision = check_revision(args.revision)
        if not args.timeout_s > 0:
            raise PublishError("--timeout-s must be positive")
        artifact = find_artifact(args.output)
        actual = sha256_file(artifact.model)
        if actual != artifact.sha256:
            raise PublishError(
                f"{artifact.model}: sha256 {actual} does not match report.json's {artifact.sha256}"
            )
        size = artifact.model.stat().st_size
        result = summary(
            revision=revision,
            server=server,
            sha256=artifact.sha256,
            size_bytes=size,
            report=artifact.report,
        )
    except (ValueError, OSError) as exc:  # PublishError is a ValueError
        return fail(EXIT_BAD_INPUT, str(exc))

    def on_retry(exc: client.ClientError, delay: float) -> None:
        print(f"edgemodel publish: retrying in {delay:.2g} s: {exc}", file=sys.stderr)

    def push() -> None:
        if not client.has_artifact(server, artifact.sha256):
            client.upload_artifact(server, artifact.sha256, artifact.model)

    # The summary's fields ride along at the top level, so the operator's store lookup (an
    # artifact reused across EdgeModels) reads the same shape as the termination message.
    record = {**result, "artifactSha256": artifact.sha256, "report": artifact.report}
    try:
        client.retry(push, deadline_s=args.timeout_s, on_retry=on_retry)
        client.retry(
            lambda: client.put_revision(server, revision, record),
            deadline_s=args.timeout_s,
            on_retry=on_retry,
        )
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
