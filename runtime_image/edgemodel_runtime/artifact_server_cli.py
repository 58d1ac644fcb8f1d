"""Owns `edgemodel artifact-server`: arguments, logging and signal handling around the server.

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad arguments (unusable root), 1 cannot listen.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from edgemodel_runtime.artifacts.store import DEFAULT_MAX_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", required=True, type=Path, metavar="DIR", help="directory holding the store"
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to bind (default 8080; 0 picks a free one)"
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"largest artifact accepted (default {DEFAULT_MAX_BYTES})",
    )


async def _main(args: argparse.Namespace) -> None:
    from edgemodel_runtime.artifacts.server import serve

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    # Kubernetes stops pods with SIGTERM; cancelling lets the runner close sockets cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    await serve(args.root, args.host, args.port, args.max_bytes)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if not 0 <= args.port <= 65535:
        print(f"edgemodel artifact-server: --port {args.port} is not 0..65535", file=sys.stderr)
        return 2
    if args.max_bytes <= 0:
        print("edgemodel artifact-server: --max-bytes must be positive", file=sys.stderr)
        return 2
    try:
        args.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"edgemodel artifact-server: --root {args.root}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_main(args))
    except asyncio.CancelledError:
        return 0
    except OSError as exc:  # port in use, address not available, root unwritable
        print(f"edgemodel artifact-server: {exc}", file=sys.stderr)
        return 1
    return 0
