"""Benchmark a generative model side by side in one run: compression, decoding, serving.

One decoder, the sandbox's Llama-shaped fixture at the benchmark size (`edgemodel_sandbox.decoder`,
~130 M parameters, byte tokens; built here on first use and cached), four artifacts:

  fp32          the model as built
  int8-weight   `edgemodel compress --mode int8-weight` (MatMulNBits, 8 bits, blocks of 32)
  int4-weight   `edgemodel compress --mode int4-weight` (MatMulNBits, 4 bits, blocks of 32)
  dynamic-int8  `edgemodel compress --mode dynamic-int8` (MatMulInteger, activations quantized
                per run): slower than int4 at batch 1, but its kernel's cost hardly grows with
                the rows of a batch, where MatMulNBits' grows nearly row by row

Per artifact: size, next-token top-1 agreement with fp32 on held-out sequences (the language
model gate's own figure), time to first token for a 128-token prompt (prefill, batch 1), and
decode tokens/s at batch 1, from a plain onnxruntime greedy loop over the KV cache ("the engine",
no server: bench/serve/generate.py's `engine_row`). Then the int4 artifact behind
`edgemodel serve --generative` (bench/serve/generate.py's `server_row`: aiohttp clients reading
`/generate_stream` events): one stream at a time vs 8 concurrent streams (iteration-level
batching), total tokens/s; and the server's overhead per token against the engine's step time
(inter-token p50, one stream, the same model and thread count). Beside them, the engine doing
what the server does for 8 streams without a server (prompts prefilled one by one, then one
decode step for all 8 rows): the most batching can give on this engine, whatever the server
does. The serving rows run twice: on the int4 artifact and on the dynamic-int8 one, so the
batching gain is shown on a kernel that batches as well as on the one that does not. One intra-op
thread everywhere; client, server and engine share this machine's cores.
Targets (issue 14) are printed beside the figures. Usage:

    .venv/bin/python bench/generate/run.py [--duration 9] [--size bench|small]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

from edgemodel_runtime.compress import Request, compress
from edgemodel_sandbox.decoder import DecoderConfig, empty_past, ensure_decoder
from edgemodel_sandbox.files import cache_dir

# ~134 M parameters (12 layers x 11.2 M, 537 MB fp32); fewer fitting windows than the test size
# so the closed-form LM head is fitted in a couple of minutes on 2 cores.
BENCH = DecoderConfig(
    hidden=1024,
    layers=12,
    heads=16,
    kv_heads=4,
    intermediate=2816,
    train_sequences=64,
    eval_sequences=16,
)
SMALL = DecoderConfig()  # the test size: checks the script in seconds
PROMPT = 128  # tokens of the time-to-first-token prompt
DECODE_TOKENS = 32  # new tokens per engine generation
SERVE_PROMPT = 32  # the serving rows: short prompts, longer outputs (decode-bound, as chat is)
SERVE_TOKENS = 64
STREAMS = 8
ROUNDS = 3  # interleaved rounds of every measurement (the machine's load changes by the second)


def serve_bench() -> ModuleType:
    """bench/serve/generate.py, imported by path (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "serve" / "generate.py"
    spec = importlib.util.spec_from_file_location("bench_serve_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SERVE = serve_bench()


@dataclass
class Artifact:
    """One model of the table and its figures."""

    name: str
    path: Path
    seconds: float  # to build (fp32) or compress
    size: int
    agreement: float = 1.0
    perplexity: float = 0.0
    perplexity_fp32: float = 0.0  # the gate's figure for the original, on the same sequences
    ttft_ms: float = 0.0
    decode_tps: float = 0.0
    step_ms: float = 0.0


def compressed(folder: Path, work: Path, mode: str) -> Artifact:
    """`mode` through the real `edgemodel compress` pipeline, judged by the LM gate. `work` is
    the pipeline's content-addressed store: a rerun on the same model is a cache hit."""
    started = time.monotonic()
    outcome = compress(
        Request(
            source=str(folder / "model.onnx"),
            output=work / mode,
            mode=mode,
            target="amd64",
            evaluation=folder / "evaluation.npz",
            measure_latency=False,
            search_budget_s=0,
        )
    )
    accuracy = outcome.report["accuracy"]
    if not outcome.passed:
        print(f"  {mode}: the gate refused it: {outcome.report['gate']['reasons']}")
    path = outcome.directory / "model.onnx"
    seconds = float(outcome.report["elapsed_s"]) if not outcome.report.get("cache_hit") else 0.0
    print(f"  {mode}: {'cached' if not seconds else f'compressed in {seconds:.0f} s'}")
    return Artifact(
        mode,
        path,
        seconds or time.monotonic() - started,
        path.stat().st_size,
        agreement=float(accuracy["agreement"]),
        perplexity=float(accuracy["perplexity_compressed"]),
        perplexity_fp32=float(accuracy["perplexity_original"]),
    )


def measure_engines(
    artifacts: list[Artifact], cfg: DecoderConfig, prompt: list[int], duration: float
) -> None:
    """TTFT of the 128-token prompt and decode tokens/s at batch 1, from the engine alone:
    medians over ROUNDS interleaved rounds (fp32, int8, int4, fp32, ...), so a change in the
    machine's load falls on every artifact alike."""
    ttft: dict[str, list[float]] = {a.name: [] for a in artifacts}
    steps: dict[str, list[float]] = {a.name: [] for a in artifacts}
    for _ in range(ROUNDS):
        for a in artifacts:
            row = SERVE.engine_row(a.path, cfg, prompt, DECODE_TOKENS, duration / ROUNDS)
            ttft[a.name] += row.ttft
            steps[a.name] += row.itl
    for a in artifacts:
        a.ttft_ms = float(np.median(ttft[a.name])) * 1000
        a.step_ms = float(np.median(steps[a.name])) * 1000
        a.decode_tps = 1000 / a.step_ms


def engine_batched_row(
    model: Path, cfg: DecoderConfig, prompt: list[int], max_tokens: int, duration: float
) -> Any:
    """The plain onnxruntime loop doing what the server does for STREAMS streams, without the
    server: each prompt prefilled alone (batch 1), the caches stacked, then one decode step for
    all rows at once, greedy; generations back to back for `duration` seconds. Its tokens/s
    over the one-row engine's is the most batching can give on this engine and machine: the
    ceiling of the server's "streams vs one at a time" ratio. `itl` holds the batched steps."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    past_names = [name.replace("present", "past_key_values") for name in names[1:]]
    row = SERVE.Row("engine (no server)", STREAMS)
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        firsts, caches = [], []
        for _ in range(STREAMS):  # prefills one by one, as the server's join does
            feeds = {"input_ids": np.asarray([prompt], np.int64), **empty_past(cfg, 1)}
            feeds["attention_mask"] = np.ones((1, len(prompt)), np.int64)
            logits, *present = session.run(names, feeds)
            firsts.append(int(np.argmax(logits[0, -1])))
            caches.append(present)
        past = [np.concatenate(layer) for layer in zip(*caches, strict=True)]
        tokens, length = np.asarray(firsts, np.int64)[:, None], len(prompt)
        for _ in range(max_tokens - 1):
            length += 1
            feeds = dict(zip(past_names, past, strict=True))
            feeds["input_ids"] = tokens
            feeds["attention_mask"] = np.ones((STREAMS, length), np.int64)
            step = time.perf_counter()
            logits, *past = session.run(names, feeds)
            row.itl.append(time.perf_counter() - step)
            tokens = np.argmax(logits[:, -1], axis=-1)[:, None].astype(np.int64)
        row.tokens += STREAMS * max_tokens
    row.seconds = time.perf_counter() - started
    return row


def merge(total: Any, row: Any) -> None:
    """Add one round's figures to a row of the same mode."""
    total.tokens += row.tokens
    total.seconds += row.seconds
    total.ttft += row.ttft
    total.itl += row.itl


def serving(model: Path, cfg: DecoderConfig, prompt: list[int], duration: float) -> list[Any]:
    """The engine alone, `edgemodel serve --generative` at one stream and at STREAMS streams:
    ROUNDS interleaved rounds against one server process (the load of a shared machine changes
    by the second; interleaving makes it fall on every row alike)."""
    rows = [
        SERVE.Row("engine (no server)", 1),
        SERVE.Row("engine (no server)", STREAMS),
        SERVE.Row("edgemodel serve", 1),
        SERVE.Row("edgemodel serve", STREAMS),
    ]
    share = duration / ROUNDS
    with tempfile.TemporaryDirectory(prefix="edgemodel-bench-generate-") as work:
        # Room beyond STREAMS: a client's next request can arrive before the server has
        # dropped its finished sequence from the batch (that would be a 503 at exactly 8).
        process, port = SERVE.start_server(model, 2 * STREAMS, Path(work) / "serve.log")
        try:
            for _ in range(ROUNDS):
                # Each compared pair measured back to back: engine / server at one stream (the
                # overhead), server at 1 / 8 streams (the gain), then the engine's 8 rows.
                merge(rows[0], SERVE.engine_row(model, cfg, prompt, SERVE_TOKENS, share))
                for row in rows[2:]:
                    measured = SERVE.server_row(port, prompt, SERVE_TOKENS, row.concurrency, share)
                    merge(row, asyncio.run(measured))
                merge(rows[1], engine_batched_row(model, cfg, prompt, SERVE_TOKENS, share))
        finally:
            process.terminate()
            process.wait(timeout=30)
    return rows


def print_artifacts(artifacts: list[Artifact], cfg: DecoderConfig, parameters: int) -> None:
    fp32 = artifacts[0]
    print(
        f"\n## Llama-shaped decoder {cfg.layers}x{cfg.hidden} ({parameters / 1e6:.0f} M "
        f"parameters, byte tokens); batch 1, 1 intra-op thread\n"
    )
    print(
        "| artifact | MB | size x fp32 | next-token agreement | perplexity "
        f"| TTFT {PROMPT}-token prompt ms | decode tokens/s | decode x fp32 | made in s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for a in artifacts:
        print(
            f"| {a.name} | {a.size / 1e6:.1f} | {a.size / fp32.size:.3f} | {a.agreement:.4f} "
            f"| {a.perplexity:.2f} | {a.ttft_ms:.0f} | {a.decode_tps:.1f} "
            f"| {a.decode_tps / fp32.decode_tps:.2f} | {a.seconds:.0f} |"  # 0: from the cache
        )


def print_serving(name: str, rows: list[Any]) -> None:
    print(
        f"\n## {name} served: prompt {SERVE_PROMPT} tokens, {SERVE_TOKENS} new tokens, "
        "greedy (client-side times)\n"
    )
    print("| mode | streams | tokens/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row.mode} | {row.concurrency} | {row.rate:.1f} | {SERVE.pct(row.ttft, 50)} "
            f"| {SERVE.pct(row.ttft, 95)} | {SERVE.pct(row.itl, 50)} | {SERVE.pct(row.itl, 95)} |"
        )


def batching_check(name: str, rows: list[Any]) -> tuple[str, str, str, bool]:
    """STREAMS streams against one at a time through the server, beside the engine's ceiling."""
    engine, batched, one, many = rows
    engine_step = float(np.median(engine.itl))
    ceiling = (
        f"; the engine's own: {batched.rate / engine.rate:.2f}x, {STREAMS}-row step "
        f"{np.median(batched.itl) * 1e3:.1f} ms vs {engine_step * 1e3:.1f} ms"
    )
    measured = f"{many.rate / one.rate:.2f}x ({many.rate:.1f} vs {one.rate:.1f} tokens/s){ceiling}"
    met = many.rate >= 3 * one.rate
    return f"{STREAMS} streams vs one at a time, {name}", measured, ">= 3x", met


def overhead_check(name: str, rows: list[Any]) -> tuple[str, str, str, bool]:
    """The server's inter-token p50 at one stream against the engine's step, same model."""
    engine, _, one, _ = rows
    engine_step = float(np.median(engine.itl))
    overhead = (float(np.median(one.itl)) - engine_step) / engine_step
    measured = f"{overhead:+.1%} of the engine's {engine_step * 1e3:.2f} ms step"
    return f"server overhead per token, {name}", measured, "<= 5 %", overhead <= 0.05


def targets(artifacts: dict[str, Artifact], served: dict[str, list[Any]]) -> None:
    """The issue's targets beside the measured figures."""
    fp32, int4 = artifacts["fp32"], artifacts["int4-weight"]
    checks = [
        ("int4 artifact size", f"{int4.size / fp32.size:.3f}x fp32", "<= 0.30x",
         int4.size / fp32.size <= 0.30),
        ("int4 decode tokens/s, batch 1", f"{int4.decode_tps / fp32.decode_tps:.2f}x fp32",
         ">= 1.8x", int4.decode_tps / fp32.decode_tps >= 1.8),
        ("int4 next-token agreement", f"{int4.agreement:.1%}", ">= 95 %", int4.agreement >= 0.95),
        ("int8 next-token agreement", f"{artifacts['int8-weight'].agreement:.1%}", ">= 95 %",
         artifacts["int8-weight"].agreement >= 0.95),
        *(batching_check(name, rows) for name, rows in served.items()),
        *(overhead_check(name, rows) for name, rows in served.items()),
    ]  # fmt: skip
    print("\n## Targets (issue 14)\n")
    print("| target | measured | wanted | met |")
    print("|---|---|---|---|")
    for name, measured, wanted, met in checks:
        print(f"| {name} | {measured} | {wanted} | {'yes' if met else 'NO'} |")


def prompt_of(folder: Path, length: int) -> list[int]:
    ids = np.load(folder / "evaluation.npz")["input_ids"]
    return [int(t) for t in ids[0, :length]]


def run(cfg: DecoderConfig, duration: float) -> None:
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    started = time.monotonic()
    folder = ensure_decoder(cfg)
    parameters = int(json.loads((folder / "decoder.json").read_text())["parameters"])
    model = folder / "model.onnx"
    artifacts = [Artifact("fp32", model, time.monotonic() - started, model.stat().st_size)]
    for mode in ("int8-weight", "int4-weight", "dynamic-int8"):
        artifacts.append(compressed(folder, cache_dir("bench-generate"), mode))
    artifacts[0].perplexity = artifacts[1].perplexity_fp32
    measure_engines(artifacts, cfg, prompt_of(folder, PROMPT), duration)
    print_artifacts(artifacts, cfg, parameters)
    by_name = {a.name: a for a in artifacts}
    served = {}
    for name in ("int4-weight", "dynamic-int8"):
        served[name] = serving(by_name[name].path, cfg, prompt_of(folder, SERVE_PROMPT), duration)
        print_serving(name, served[name])
    targets(by_name, served)
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"total {time.monotonic() - started:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=9.0, help="seconds per measured row")
    parser.add_argument("--size", choices=("bench", "small"), default="bench")
    args = parser.parse_args()
    run(BENCH if args.size == "bench" else SMALL, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
