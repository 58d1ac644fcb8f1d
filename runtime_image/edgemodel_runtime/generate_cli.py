"""Owns the `edgemodel serve` flags of generative serving (`--generative` and its limits).

The SLO boundaries of the token histograms come from flags first, then from the environment
the operator sets on the pod (EDGEMODEL_TTFT_SLO_MS, EDGEMODEL_ITL_SLO_MS), like the request
latency SLO. Bad values are `ValueError`s naming the flag; `edgemodel serve` exits 2 on them.
"""

from __future__ import annotations

import argparse
import os

from edgemodel_runtime.serve.generative import (
    DEFAULT_MAX_CONTEXT,
    DEFAULT_MAX_SEQUENCES,
    GenerationOptions,
)
from edgemodel_runtime.serve.token_metrics import DEFAULT_ITL_SLO_S, DEFAULT_TTFT_SLO_S
from edgemodel_runtime.serve.tokenizer import load_tokenizer


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """--generative and the limits of the decode loop."""
    parser.add_argument(
        "--generative",
        action="store_true",
        help="serve the model as a decoder (past/present KV cache): adds the v2 generate "
        "extension, /generate and /generate_stream (server-sent events)",
    )
    parser.add_argument(
        "--max-sequences",
        type=_positive_int,
        default=DEFAULT_MAX_SEQUENCES,
        help=f"generations admitted at once; beyond it 503 (default {DEFAULT_MAX_SEQUENCES})",
    )
    parser.add_argument(
        "--max-kv-bytes",
        type=_positive_int,
        default=None,
        help="KV cache bytes the admitted generations may reach; beyond it 503 (default: "
        "1 GiB, at most a quarter of the container's memory limit)",
    )
    parser.add_argument(
        "--max-context",
        type=_positive_int,
        default=DEFAULT_MAX_CONTEXT,
        help=f"prompt + max_tokens of one generation (default {DEFAULT_MAX_CONTEXT})",
    )
    parser.add_argument(
        "--tokenizer",
        default="none",
        help="none (token ids only), bytes (UTF-8 byte tokens), or the path of a Hugging Face "
        'tokenizer.json (or of a JSON file {"type": "bytes", "offset": N})',
    )
    parser.add_argument(
        "--ttft-slo-ms",
        type=float,
        default=None,
        help="time-to-first-token SLO, a histogram bucket boundary (default: "
        "$EDGEMODEL_TTFT_SLO_MS or 500)",
    )
    parser.add_argument(
        "--itl-slo-ms",
        type=float,
        default=None,
        help="inter-token latency SLO, a histogram bucket boundary (default: "
        "$EDGEMODEL_ITL_SLO_MS or 100)",
    )


def _slo_s(flag: float | None, variable: str, default_s: float) -> float:
    text = os.environ.get(variable, "")
    if flag is None and not text:
        return default_s
    try:
        value = flag if flag is not None else float(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"{variable} / its flag must be greater than 0, got {value}")
    return value / 1000.0


def generation_options(args: argparse.Namespace) -> GenerationOptions | None:
    """The generation options the flags ask for; None without --generative."""
    if not args.generative:
        return None
    return GenerationOptions(
        max_sequences=args.max_sequences,
        max_kv_bytes=args.max_kv_bytes,
        max_context=args.max_context,
        tokenizer=load_tokenizer(args.tokenizer),
        ttft_slo_s=_slo_s(args.ttft_slo_ms, "EDGEMODEL_TTFT_SLO_MS", DEFAULT_TTFT_SLO_S),
        itl_slo_s=_slo_s(args.itl_slo_ms, "EDGEMODEL_ITL_SLO_MS", DEFAULT_ITL_SLO_S),
    )
