"""Compression benchmark for a language model: fp32 vs int8-weight vs int4-weight.

The generated Llama-shaped decoder (edgemodel_sandbox.decoder, bench size: 4 layers, hidden
512, 12.1 M parameters, byte tokens) compressed by `edgemodel compress` in the weight-only modes,
each judged by the language-model gate on held-out text; with calibration windows the run also
builds a GPTQ candidate and the row says which rounding the gate kept. Per artifact: size and
wire ratio against fp32, p50 latency at batch 1 (2 intra-op threads) of a 128-token prompt
(prefill) and of one decode step with a 128-token KV cache, next-token agreement with fp32 and
perplexity.

Run: .venv/bin/python bench/compress/lm_table.py [--runs N]  (run.py runs it too)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgemodel_runtime.compress import Request, compress, lm_gate
from edgemodel_runtime.compress.report import zstd_size
from edgemodel_runtime.compress.runner import make_session, p50_latency_ms
from edgemodel_sandbox.decoder import DecoderConfig, ensure_decoder

BENCH = DecoderConfig(layers=4, hidden=512, heads=8, kv_heads=4, intermediate=1408)
PROMPT = 128


@dataclass
class Row:
    """One artifact of the table and its measured figures."""

    name: str
    path: Path
    seconds: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0


def _ours(folder: Path, work: Path, label: str, **request: object) -> Row:
    start = time.monotonic()
    outcome = compress(
        Request(
            source=str(folder / "model.onnx"),
            output=work / "store",
            evaluation=folder / "evaluation.npz",
            measure_latency=False,
            search_budget_s=0,
            **request,  # type: ignore[arg-type]
        )
    )
    if not outcome.passed:
        print(f"{label} failed the gate: {outcome.report['gate']['reasons']}")
    path = outcome.directory / ("model.onnx" if outcome.passed else "report.json")
    if request.get("calibration") is not None:  # which rounding the gate kept (rtn or gptq)
        label = f"{label}: {outcome.report['effective']['weight_method']}"
    return Row(label, path, time.monotonic() - start)


def _feeds(
    interface: lm_gate.DecoderInterface, ids: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(a PROMPT-token prefill, one decode step after a PROMPT-token cache), batch 1."""
    prefill = lm_gate.feeds(interface, ids[:1, :PROMPT])
    step = lm_gate.feeds(interface, ids[:1, PROMPT : PROMPT + 1])
    step[lm_gate.MASK] = np.ones((1, PROMPT + 1), np.int64)
    rng = np.random.default_rng(0)
    for past in interface.past:
        shape = (1, past.heads, PROMPT, past.head_dim)
        step[past.name] = rng.standard_normal(shape).astype(past.dtype)
    return prefill, step


def measure(folder: Path, rows: list[Row], runs: int) -> dict[str, dict[str, float]]:
    """Print the table; returns per row: size, decode latency ratio, agreement, ppl ratio."""
    interface = lm_gate.decoder_interface(onnx.load_model(str(rows[0].path)))
    assert interface is not None
    sequences = np.load(folder / "evaluation.npz")[lm_gate.IDS]
    prompts, targets = lm_gate.split_sequences({lm_gate.IDS: sequences})
    prefill, step = _feeds(interface, np.concatenate([prompts, prompts], axis=1))
    paths = [r.path for r in rows]
    for row, ms in zip(rows, p50_latency_ms(paths, prefill, runs), strict=True):
        row.prefill_ms = ms
    for row, ms in zip(rows, p50_latency_ms(paths, step, runs * 4), strict=True):
        row.decode_ms = ms
    reference = lm_gate.run_logits(make_session(rows[0].path), interface, prompts)
    base = rows[0].path.stat().st_size
    print(
        f"\n## Llama-shaped decoder {BENCH.layers}x{BENCH.hidden} (byte tokens, "
        f"{len(prompts)} held-out sequences of {prompts.shape[1]}); p50 at batch 1, 2 threads"
    )
    header = (
        "| model | MB | size x | wire x | prefill 128 ms | decode step ms | decode x "
        "| next-token agreement | perplexity | made in s |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    results: dict[str, dict[str, float]] = {}
    for row in rows:
        got = lm_gate.run_logits(make_session(row.path), interface, prompts)
        fig = lm_gate.figures(reference, got, targets)
        size = row.path.stat().st_size
        results[row.name] = {
            "size": size / base,
            "decode": row.decode_ms / rows[0].decode_ms,
            "agreement": fig.agreement,
            "perplexity_ratio": fig.perplexity_ratio,
        }
        print(
            f"| {row.name} | {size / 1e6:.1f} | {size / base:.3f} | "
            f"{zstd_size(row.path) / base:.3f} | {row.prefill_ms:.3g} | {row.decode_ms:.3g} | "
            f"{row.decode_ms / rows[0].decode_ms:.3f} | {fig.agreement:.4f} | "
            f"{fig.perplexity_compressed:.3f} | {row.seconds:.1f} |"
        )
    return results


def check(name: str, ok: bool) -> bool:
    print(f"- [{'x' if ok else ' '}] {name}")
    return ok


def run(runs: int) -> bool:
    """Build the bench decoder, compress it three ways, print the table and the targets."""
    start = time.monotonic()
    folder = ensure_decoder(BENCH)
    built = time.monotonic() - start
    with tempfile.TemporaryDirectory(prefix="edgemodel-lm-bench-") as tmp:
        work = Path(tmp)
        rows = [
            Row("fp32", folder / "model.onnx", built),
            _ours(folder, work, "int8-weight (block 32)", mode="int8-weight"),
            _ours(folder, work, "int4-weight (block 32)", mode="int4-weight"),
            _ours(
                folder,
                work,
                "int4-weight (block 32) + calibration",
                mode="int4-weight",
                calibration=folder / "calibration.npz",
            ),
            _ours(folder, work, "int4-weight (block 128)", mode="int4-weight", block_size=128),
        ]
        if any(r.path.name != "model.onnx" for r in rows):
            return False
        r = measure(folder, rows, runs)
    four = r[rows[2].name]
    print()
    ok = check(f"int4 size {four['size']:.3f}x <= 0.30x fp32", four["size"] <= 0.30)
    ok &= check(
        f"int4 next-token agreement {four['agreement']:.3f} >= {lm_gate.DEFAULT_MIN_AGREEMENT}",
        four["agreement"] >= lm_gate.DEFAULT_MIN_AGREEMENT,
    )
    ok &= check(
        f"int4 perplexity ratio {four['perplexity_ratio']:.3f} >= "
        f"{lm_gate.MIN_PERPLEXITY_RATIO:.3f}",
        four["perplexity_ratio"] >= lm_gate.MIN_PERPLEXITY_RATIO,
    )
    ok &= check(
        f"int4 decode tokens/s {1 / four['decode']:.2f}x >= 1.8x fp32 at batch 1",
        1 / four["decode"] >= 1.8,
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    return 0 if run(args.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
