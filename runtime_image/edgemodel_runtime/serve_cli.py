"""Owns the `edgemodel serve` command line: flags, environment fallbacks, exit codes.

Labels for the metrics come from flags first, then from the environment the operator sets on
the pod (EDGEMODEL_MODEL, EDGEMODEL_REVISION, EDGEMODEL_TARGET, EDGEMODEL_SLO_MS). Exit codes:
0 after a clean drain, 1 when a port cannot be bound, 2 for bad input (flags, model missing,
sha256 mismatch, model onnxruntime cannot load) with a one-line reason and no traceback, 3 when
`--require-provider` is set and the session did not get the provider asked for (the reason,
one JSON line, goes to `--termination-log` too). Every default is `ServeOptions`' own (`_DEFAULTS`),
written once (docs/architecture.md, "One convention each").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from edgemodel_runtime.errors import EXIT_BAD_INPUT
from edgemodel_runtime.generate_cli import add_generation_arguments, generation_options
from edgemodel_runtime.logs import add_log_format_argument, configure
from edgemodel_runtime.serve.cpu import default_intra_op_threads
from edgemodel_runtime.serve.server import ServeOptions, serve
from edgemodel_runtime.sources import SourceError, normalize_sha256

_DEFAULTS = ServeOptions(model_uri="", name="")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_model_arguments(parser)
    _add_capacity_arguments(parser)
    _add_runtime_arguments(parser)
    _add_lifecycle_arguments(parser)
    add_generation_arguments(parser)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """What is served, where, and the labels its metrics carry."""
    parser.add_argument("model", metavar="MODEL", help="model path, file://, http:// or https://")
    parser.add_argument("--name", required=True, help="model name clients address (v2 protocol)")
    parser.add_argument("--http-port", type=_port, default=_DEFAULTS.http_port)
    parser.add_argument("--grpc-port", type=_port, default=_DEFAULTS.grpc_port)
    parser.add_argument("--metrics-port", type=_port, default=_DEFAULTS.metrics_port)
    parser.add_argument("--host", default=_DEFAULTS.host, help="address to bind (the pod IP)")
    parser.add_argument("--sha256", help="expected sha256 of the model file (64 hex characters)")
    parser.add_argument(
        "--revision",
        default=os.environ.get("EDGEMODEL_REVISION", _DEFAULTS.revision),
        help="metrics label (default: $EDGEMODEL_REVISION)",
    )
    parser.add_argument(
        "--target",
        default=os.environ.get("EDGEMODEL_TARGET", _DEFAULTS.target),
        help="metrics label (default: $EDGEMODEL_TARGET)",
    )


def _add_capacity_arguments(parser: argparse.ArgumentParser) -> None:
    """Batching, timeouts and the admission limits."""
    parser.add_argument(
        "--max-batch-size",
        type=_non_negative_int,
        default=_DEFAULTS.max_batch_size,
        help="rows per merged execution; 0 or 1 disables dynamic batching "
        f"(default {_DEFAULTS.max_batch_size})",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=_non_negative_int,
        default=_DEFAULTS.max_queue_delay_us,
        help=f"how long a batch may wait to fill (default {_DEFAULTS.max_queue_delay_us}: merge "
        "only what is already queued)",
    )
    parser.add_argument(
        "--request-timeout-s", type=_positive_float, default=_DEFAULTS.request_timeout_s
    )
    parser.add_argument(
        "--max-request-bytes",
        type=_positive_int,
        default=_DEFAULTS.max_request_bytes,
        help="largest request body (default: the model's largest valid request, JSON-encoded; "
        "64 MiB for models with dynamic non-batch dims or string inputs)",
    )
    parser.add_argument(
        "--max-inflight",
        type=_positive_int,
        default=_DEFAULTS.max_inflight,
        help="requests admitted at once; beyond it HTTP 503 + Retry-After / gRPC "
        "RESOURCE_EXHAUSTED (default: 4 x CPUs x max batch size, at least 16)",
    )
    parser.add_argument(
        "--max-inflight-bytes",
        type=_positive_int,
        default=_DEFAULTS.max_inflight_bytes,
        help="request body bytes buffered at once before shedding (default: 4 x the request "
        "limit, at least 256 MiB)",
    )


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """onnxruntime: providers, threads, where remote models are cached."""
    parser.add_argument(
        "--providers", choices=("cpu", "cuda", "tensorrt"), default=_DEFAULTS.providers
    )
    parser.add_argument(
        "--require-provider",
        action="store_true",
        help="exit 3 instead of serving when the session does not get the first provider of "
        "--providers (e.g. cuda falling back to cpu)",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=_DEFAULTS.termination_log,
        help="where to leave the reason for exit 3 (the pod's terminationMessagePath)",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=_positive_int,
        default=None,
        help="onnxruntime threads (default: from the container CPU limit)",
    )
    parser.add_argument(
        "--model-cache", type=Path, default=_DEFAULTS.model_cache, help="where remote models go"
    )


def _add_lifecycle_arguments(parser: argparse.ArgumentParser) -> None:
    """The SLO, shutdown and drain timing, execution mode and logging."""
    parser.add_argument(
        "--slo-ms",
        type=_positive_float,
        default=None,
        help="latency SLO, a histogram bucket boundary "
        f"(default: $EDGEMODEL_SLO_MS or {_DEFAULTS.slo_ms:g})",
    )
    parser.add_argument(
        "--shutdown-delay-s",
        type=float,
        default=_DEFAULTS.shutdown_delay_s,
        help="after SIGTERM, keep serving (reported not ready) this long before draining",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=_positive_float,
        default=_DEFAULTS.drain_timeout_s,
        help="grace period for in-flight requests after SIGTERM",
    )
    parser.add_argument(
        "--execution",
        choices=("auto", "thread", "inline"),
        default=_DEFAULTS.execution,
        help="run onnxruntime on a worker thread, on the event loop, or decide from warm-up",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    add_log_format_argument(parser)


def _slo_ms(flag: float | None) -> float:
    if flag is not None:
        return flag
    text = os.environ.get("EDGEMODEL_SLO_MS", "")
    try:
        value = float(text) if text else _DEFAULTS.slo_ms
    except ValueError:
        raise ValueError(f"EDGEMODEL_SLO_MS={text!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"EDGEMODEL_SLO_MS={text!r} must be greater than 0")
    return value


def run(args: argparse.Namespace) -> int:
    configure(args.log_level, args.log_format)
    try:
        sha256 = normalize_sha256(args.sha256) if args.sha256 else None
        slo_ms = _slo_ms(args.slo_ms)
        generation = generation_options(args)
    except (SourceError, ValueError) as exc:
        print(f"edgemodel serve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    options = ServeOptions(
        model_uri=args.model,
        name=args.name,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        sha256=sha256,
        revision=args.revision,
        target=args.target,
        model_label=os.environ.get("EDGEMODEL_MODEL") or args.name,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        request_timeout_s=args.request_timeout_s,
        max_request_bytes=args.max_request_bytes,
        max_inflight=args.max_inflight,
        max_inflight_bytes=args.max_inflight_bytes,
        providers=args.providers,
        intra_op_threads=args.intra_op_threads or default_intra_op_threads(),
        model_cache=args.model_cache,
        slo_ms=slo_ms,
        drain_timeout_s=args.drain_timeout_s,
        shutdown_delay_s=args.shutdown_delay_s,
        execution=args.execution,
        require_provider=args.require_provider,
        termination_log=args.termination_log,
        generation=generation,
    )
    return asyncio.run(serve(options))
