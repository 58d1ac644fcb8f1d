"""Owns `edgemodel compress`: its arguments, its output and its exit codes.

Exit codes: 0 the artifact passed (or there was nothing to gate), 2 bad input (one line on
stderr naming the problem, never a traceback), 3 the accuracy gate failed, 1 an internal
failure. On a gate failure the report is still written (DIR/<key>/report.json, result
"gate-failed", with all figures) and printed, but the artifact is not kept: there is no
DIR/<key>/model.onnx for anything to deploy.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
from pathlib import Path

from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.settings import (
    BLOCK_SIZES,
    CALIBRATION_METHODS,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_EMBEDDING_BITS,
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_SEARCH_BUDGET_S,
    MODES,
    TARGETS,
)
from edgemodel_runtime.compress.tasks import OUTPUT_KINDS
from edgemodel_runtime.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_OK
from edgemodel_runtime.sources import SourceError, fetch_to_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="SOURCE", help="model path, file://, http:// or https:// URI"
    )
    parser.add_argument(
        "--output", "-o", required=True, type=Path, metavar="DIR", help="artifact store directory"
    )
    parser.add_argument(
        "--mode", choices=MODES, help="default: from --target (gpu: fp16, else dynamic-int8)"
    )
    parser.add_argument(
        "--calibration",
        metavar="F.npz",
        help="calibration arrays keyed by input name (a language model: 'input_ids' [N, L]); "
        "static-int8 ranges, or for int4-weight/int8-weight a GPTQ candidate beside "
        "round-to-nearest (path, file://, http(s)://)",
    )
    parser.add_argument(
        "--calibration-sha256", metavar="HEX", help="expected sha256 of --calibration"
    )
    parser.add_argument(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        help=f"static-int8 range estimation (default {DEFAULT_CALIBRATION_METHOD})",
    )
    parser.add_argument(
        "--eval",
        metavar="F.npz",
        help="evaluation arrays keyed by input name, optional 'labels' (path, file://, http(s)://)",
    )
    parser.add_argument("--eval-sha256", metavar="HEX", help="expected sha256 of --eval")
    parser.add_argument(
        "--prune-sparsity",
        type=float,
        metavar="X",
        help="magnitude-prune weights to this sparsity (0..0.95)",
    )
    parser.add_argument(
        "--embedding-bits",
        type=int,
        metavar="N",
        help=f"int8 modes: {DEFAULT_EMBEDDING_BITS} (default) or 4 for embedding tables in 4-bit "
        "blocks (CPU targets)",
    )
    _add_weight_only_arguments(parser)
    parser.add_argument(
        "--sha256", metavar="HEX", help="expected sha256 of SOURCE, checked before any work"
    )
    parser.add_argument(
        "--target", choices=TARGETS, help="hardware the artifact is for; picks mode and int8 types"
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="X",
        help=f"allowed top-1 accuracy loss in points (default {DEFAULT_MAX_ACCURACY_DROP})",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        metavar="X",
        help=f"required agreement with the original (0..1; default {DEFAULT_MIN_AGREEMENT} "
        "when the --eval data has no labels)",
    )
    parser.add_argument(
        "--output-kind",
        choices=OUTPUT_KINDS,
        help="what the model's first output means, for the gate's task metric "
        "(default: classifier when it has a class dimension)",
    )
    parser.add_argument(
        "--search-budget-seconds",
        type=float,
        metavar="N",
        help="time for the accuracy search after a gate failure "
        f"(default {DEFAULT_SEARCH_BUDGET_S:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def _add_weight_only_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--block-size",
        type=int,
        choices=BLOCK_SIZES,
        help="int4-weight/int8-weight: values per quantization block "
        f"(default {DEFAULT_BLOCK_SIZE})",
    )
    parser.add_argument(
        "--symmetric",
        action="store_true",
        default=None,
        help="int4-weight/int8-weight: symmetric blocks, no zero points (default asymmetric)",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="edgemodel-inputs-") as scratch:
        try:
            calibration = _data_file(
                args.calibration, args.calibration_sha256, "--calibration", Path(scratch)
            )
            evaluation = _data_file(args.eval, args.eval_sha256, "--eval", Path(scratch))
        except SourceError as exc:
            print(f"edgemodel compress: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return _compress(args, calibration, evaluation)


def _data_file(value: str | None, sha256: str | None, flag: str, scratch: Path) -> Path | None:
    """A local, digest-checked copy of a calibration or evaluation file given as path or URI."""
    if value is None:
        if sha256:
            raise SourceError(f"{flag}-sha256 given without {flag}")
        return None
    if "://" not in value and not sha256:
        return Path(value)  # a plain path: read in place, as before
    dest = scratch / f"{flag.strip('-')}.npz"
    fetch_to_file(value, dest, expected_sha256=sha256)
    return dest


def _compress(args: argparse.Namespace, calibration: Path | None, evaluation: Path | None) -> int:
    # Imported here so `edgemodel compress --help` does not load onnxruntime.
    from edgemodel_runtime.compress.pipeline import Request, compress
    from edgemodel_runtime.compress.report import dumps

    request = Request(
        source=args.source,
        output=args.output,
        mode=args.mode,
        target=args.target,
        calibration=calibration,
        calibration_method=args.calibration_method,
        evaluation=evaluation,
        prune_sparsity=args.prune_sparsity,
        sha256=args.sha256,
        max_accuracy_drop=args.max_accuracy_drop,
        min_agreement=args.min_agreement,
        search_budget_s=args.search_budget_seconds,
        embedding_bits=args.embedding_bits,
        output_kind=args.output_kind,
        block_size=args.block_size,
        symmetric=args.symmetric,
    )
    try:
        # Libraries underneath sometimes print progress; stdout belongs to the report.
        with contextlib.redirect_stdout(sys.stderr):
            outcome = compress(request)
    except CompressError as exc:
        print(f"edgemodel compress: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgemodel compress: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("edgemodel compress: out of memory", file=sys.stderr)
        return EXIT_INTERNAL
    except OSError as exc:  # disk full, permissions: the environment, not a bug to trace
        print(
            f"edgemodel compress: {exc.filename or ''} {exc.strerror or exc}".strip(),
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    if args.json:
        print(dumps(outcome.report))
    else:
        print(_summary(outcome.report, outcome.directory))
    if not outcome.passed:
        reasons = (
            "; ".join(outcome.report.get("gate", {}).get("reasons", [])) or "accuracy gate failed"
        )
        print(f"edgemodel compress: accuracy gate failed: {reasons}", file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK


def _summary(report: dict[str, object], directory: Path) -> str:
    sizes = report.get("sizes") or {}
    accuracy = report.get("accuracy") or {}
    assert isinstance(sizes, dict) and isinstance(accuracy, dict)
    parts = [
        f"{report.get('result')}: {directory}",
        f"ratio {sizes.get('ratio')}",
        f"wire {sizes.get('wire_ratio')}",
    ]
    if accuracy:
        parts.append(f"agreement {accuracy.get('agreement')}")
        if accuracy.get("task_metric") is not None:
            parts.append(f"{accuracy.get('task_metric_name')} {accuracy.get('task_metric')}")
        parts.append(f"cosine {accuracy.get('cosine')}")
    latency = report.get("latency") or {}
    assert isinstance(latency, dict)
    if latency.get("ratio") is not None:
        parts.append(f"latency {latency.get('ratio')}x")
    if report.get("cache_hit"):
        parts.append("(cache hit)")
    return " ".join(parts)
