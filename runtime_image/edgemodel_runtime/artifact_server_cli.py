"""Owns `edgemodel artifact-server`: arguments, logging and signal handling around the server.

Who may write (exactly one, else exit 2): `--token-review` (in a cluster: projected
ServiceAccount tokens for `--audience`, checked with TokenReview; also enables collection of
unreferenced blobs and records), `--write-token-file` (static shared secrets: local use, the
sandbox), or `--insecure-allow-anonymous-writes` (tests and local experiments only; the chart
and the operator never set it).

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad arguments (unusable root), 1 cannot listen.
Defaults are the store's and `ServeOptions`' own, written once (docs/architecture.md,
"One convention each").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgemodel_runtime.artifacts.auth import AUDIENCE
from edgemodel_runtime.artifacts.store import DEFAULT_MAX_BYTES
from edgemodel_runtime.errors import EXIT_BAD_INPUT, FailureKind, exit_code
from edgemodel_runtime.logs import add_log_format_argument, configure

DEFAULT_PORT = 8080
# With --token-review: how often unreferenced blobs and records are collected. (The server's
# own default, 0, means no collector: the other write modes have no API server to ask.)
DEFAULT_GC_INTERVAL_S = 600.0

if TYPE_CHECKING:
    from edgemodel_runtime.artifacts.server import ServeOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgemodel_runtime.artifacts.server import ServeOptions

    defaults = ServeOptions(max_bytes=DEFAULT_MAX_BYTES)
    parser.add_argument(
        "--root", required=True, type=Path, metavar="DIR", help="directory holding the store"
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to bind (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"largest artifact accepted (default {DEFAULT_MAX_BYTES})",
    )
    parser.add_argument(
        "--quota-bytes",
        type=int,
        default=defaults.quota_bytes,
        metavar="N",
        help="most bytes of blobs and records held; writes beyond it get 507 "
        f"(default {defaults.quota_bytes}: none)",
    )
    writers = parser.add_argument_group("who may write (choose one)")
    writers.add_argument(
        "--token-review",
        action="store_true",
        help="accept projected ServiceAccount tokens checked with the API server's TokenReview "
        "(credentials: $KUBECONFIG if set, else the pod's in-cluster account)",
    )
    writers.add_argument(
        "--write-token-file",
        type=Path,
        metavar="PATH",
        help="accept the static bearer tokens listed there, one 'TOKEN [NAMESPACE/UID]' a line",
    )
    writers.add_argument(
        "--insecure-allow-anonymous-writes",
        action="store_true",
        help="accept writes without any credentials (never in a cluster)",
    )
    parser.add_argument(
        "--audience",
        default=AUDIENCE,
        help=f"the token audience --token-review requires (default {AUDIENCE})",
    )
    parser.add_argument(
        "--gc-interval-s",
        type=float,
        default=DEFAULT_GC_INTERVAL_S,
        metavar="S",
        help="with --token-review: collect unreferenced blobs and records this often "
        f"(default {DEFAULT_GC_INTERVAL_S:g}; 0: never)",
    )
    parser.add_argument(
        "--gc-grace-s",
        type=float,
        default=defaults.gc_grace_s,
        metavar="S",
        help=f"never collect what is younger than this (default {defaults.gc_grace_s:g})",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    add_log_format_argument(parser)


def _options(args: argparse.Namespace) -> ServeOptions:
    """The server's options from the arguments; ValueError names the bad one."""
    from edgemodel_runtime.artifacts.auth import StaticTokens, TokenReviewAuth, kube_api_from_env
    from edgemodel_runtime.artifacts.server import ServeOptions

    chosen = [
        args.token_review,
        args.write_token_file is not None,
        args.insecure_allow_anonymous_writes,
    ]
    if sum(chosen) != 1:
        raise ValueError(
            "choose exactly one of --token-review, --write-token-file, "
            "--insecure-allow-anonymous-writes (anonymous writes are refused by default)"
        )
    if args.quota_bytes < 0 or args.gc_interval_s < 0 or args.gc_grace_s < 0:
        raise ValueError("--quota-bytes, --gc-interval-s and --gc-grace-s must not be negative")
    if args.write_token_file is not None:
        try:
            tokens = StaticTokens.load(args.write_token_file)
        except OSError as exc:
            raise ValueError(f"--write-token-file {args.write_token_file}: {exc}") from None
        return ServeOptions(args.max_bytes, args.quota_bytes, tokens)
    if args.insecure_allow_anonymous_writes:
        logging.getLogger(__name__).warning("anonymous writes are allowed (insecure)")
        return ServeOptions(args.max_bytes, args.quota_bytes, None)
    kube = kube_api_from_env()
    return ServeOptions(
        args.max_bytes,
        args.quota_bytes,
        TokenReviewAuth(kube, args.audience),
        kube,
        args.gc_interval_s,
        args.gc_grace_s,
    )


async def _main(args: argparse.Namespace, options: ServeOptions) -> None:
    from edgemodel_runtime.artifacts.server import serve

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    # Kubernetes stops pods with SIGTERM; cancelling lets the runner close sockets cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    await serve(args.root, args.host, args.port, options)


def run(args: argparse.Namespace) -> int:
    configure(args.log_level, args.log_format)
    if not 0 <= args.port <= 65535:
        print(f"edgemodel artifact-server: --port {args.port} is not 0..65535", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.max_bytes <= 0:
        print("edgemodel artifact-server: --max-bytes must be positive", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        args.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"edgemodel artifact-server: --root {args.root}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        options = _options(args)
    except ValueError as exc:
        print(f"edgemodel artifact-server: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        asyncio.run(_main(args, options))
    except asyncio.CancelledError:
        return 0
    except OSError as exc:  # port in use, address not available, root unwritable
        print(f"edgemodel artifact-server: {exc}", file=sys.stderr)
        return exit_code(FailureKind.UNAVAILABLE)
    return 0
