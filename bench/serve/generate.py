"""Benchmark generative serving: `edgemodel serve --generative` at concurrency 1 and 8.

One run, one decoder (the sandbox's Llama-shaped fixture, `ensure_decoder()`, or `--model`),
one client (aiohttp streaming `/generate_stream`, server-sent events parsed by hand). Rows:

  engine        a plain onnxruntime greedy loop in this process, one sequence, its own KV cache:
                the floor, no server, no batching
  edgemodel     `edgemodel serve --generative` over HTTP, c concurrent streams, each stream a
                loop of generations (prompt `--prompt-tokens` bytes of held-out text, greedy,
                `--max-tokens` new tokens)

Columns: generated tokens per second (all streams together), time to first token p50 / p95 (the
client's: request sent to first event), inter-token latency p50 / p95 (between two events of one
stream). Client and server share this machine's cores. Usage:

    .venv/bin/python bench/serve/generate.py [--duration 5] [--concurrency 1,8] [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import onnxruntime as ort

from edgemodel_sandbox.cluster import free_port
from edgemodel_sandbox.decoder import DecoderConfig, empty_past, ensure_decoder


@dataclass
class Row:
    mode: str
    concurrency: int
    tokens: int = 0
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.2f}" if values else "-"


def engine_row(
    model: Path, cfg: DecoderConfig, prompt: list[int], max_tokens: int, duration: float
) -> Row:
    """The plain onnxruntime greedy loop, generations back to back for `duration` seconds."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    row = Row("engine (no server)", 1)
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        past, ids, length = empty_past(cfg, 1), np.asarray([prompt], np.int64), 0
        sent = last = time.perf_counter()
        for index in range(max_tokens):
            length += ids.shape[1]
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, length), np.int64), **past}
            logits, *present = session.run(names, feeds)
            now = time.perf_counter()
            (row.ttft if index == 0 else row.itl).append(now - (sent if index == 0 else last))
            last = now
            token = int(np.argmax(logits[0, -1]))
            past = dict(
                zip(
                    [n.replace("present", "past_key_values") for n in names[1:]],
                    present,
                    strict=True,
                )
            )
            ids = np.asarray([[token]], np.int64)
            row.tokens += 1
    row.seconds = time.perf_counter() - started
    return row


async def _stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], row: Row
) -> None:
    sent = last = time.perf_counter()
    first = True
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(
                f"generate_stream answered {response.status}: {await response.text()}"
            )
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            now = time.perf_counter()
            (row.ttft if first else row.itl).append(now - (sent if first else last))
            first, last = False, now
            row.tokens += len(json.loads(line[6:])["output_ids"])


async def server_row(
    port: int, prompt: list[int], max_tokens: int, concurrency: int, duration: float
) -> Row:
    row = Row("edgemodel serve", concurrency)
    url = f"http://127.0.0.1:{port}/v2/models/lm/generate_stream"
    body = {"input_ids": prompt, "parameters": {"max_tokens": max_tokens}}

    async def worker(session: aiohttp.ClientSession, deadline: float) -> None:
        while time.perf_counter() < deadline:
            await _stream(session, url, body, row)

    async with aiohttp.ClientSession() as session:
        await _stream(session, url, body, Row("warm-up", 1))
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, started + duration) for _ in range(concurrency)))
        row.seconds = time.perf_counter() - started
    return row


def start_server(model: Path, concurrency: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    http = free_port()
    command = [
        sys.executable, "-m", "edgemodel_cli.main", "serve", str(model), "--name", "lm",
        "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(free_port()),
        "--metrics-port", str(free_port()), "--intra-op-threads", "1", "--generative",
        "--tokenizer", "bytes", "--max-sequences", str(max(8, concurrency)),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1):
                return process, http
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server not ready within 60 s")


def print_table(rows: list[Row], model: Path, max_tokens: int, prompt_tokens: int) -> None:
    print(f"\nmodel {model} | prompt {prompt_tokens} tokens | {max_tokens} new tokens, greedy\n")
    print(
        f"{'mode':<20} {'c':>3} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'ITL p50':>8} {'ITL p95':>8}  (ms)"
    )
    for row in rows:
        print(
            f"{row.mode:<20} {row.concurrency:>3} {row.rate:>9.0f} {pct(row.ttft, 50):>9} "
            f"{pct(row.ttft, 95):>9} {pct(row.itl, 50):>8} {pct(row.itl, 95):>8}"
        )
    one = next((r for r in rows if r.mode == "edgemodel serve" and r.concurrency == 1), None)
    many = max(
        (r for r in rows if r.mode == "edgemodel serve"), key=lambda r: r.concurrency, default=None
    )
    if one and many and many is not one:
        gain = many.rate / one.rate
        print(f"\niteration-level batching: c={many.concurrency} gives {gain:.2f}x c=1 tokens/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per row")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument(
        "--model", type=Path, default=None, help="a decoder folder (default: the fixture)"
    )
    args = parser.parse_args()
    folder = args.model or ensure_decoder()
    cfg = DecoderConfig(
        **{k: v for k, v in json.loads((folder / "decoder.json").read_text())["config"].items()}
    )
    model = folder / "model.onnx"
    prompt = [
        int(t) for t in np.load(folder / "evaluation.npz")["input_ids"][0][: args.prompt_tokens]
    ]
    rows = [engine_row(model, cfg, prompt, args.max_tokens, args.duration)]
    with tempfile.TemporaryDirectory() as work:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            process, port = start_server(
                model, concurrency, Path(work) / f"serve-{concurrency}.log"
            )
            try:
                rows.append(
                    asyncio.run(
                        server_row(port, prompt, args.max_tokens, concurrency, args.duration)
                    )
                )
            finally:
                process.terminate()
                process.wait(timeout=30)
    print_table(rows, model, args.max_tokens, len(prompt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
