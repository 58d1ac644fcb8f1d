"""Compression benchmark: fp32 vs onnxruntime's default quantize_dynamic vs `edgemodel compress`.

One table per fixture (BERT-base-shaped encoder, 12 layers; digits MLP classifier): size and
on-the-wire (zstd-10) ratios against fp32, p50 latency at batch 1 with 2 intra-op threads
(measured in interleaved rounds of short blocks so background load hits every model alike;
see runner.p50_latency_ms), and accuracy
figures against fp32 on the fixture's evaluation set. Targets are checked and printed.

Then a language model (lm_table.py): the generated Llama-shaped decoder in fp32, int8-weight
and int4-weight (size, prefill and decode-step latency, next-token agreement, perplexity).

Then the model zoo (zoo_table.py): real pretrained models with their task metrics, our modes
beside onnxruntime's default quantize_dynamic / quantize_static, targets checked.

Run: .venv/bin/python bench/compress/run.py [--layers N] [--runs N] [--no-zoo] [--no-lm]
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
import onnxruntime as ort
from onnxruntime.quantization import quantize_dynamic

from edgemodel_runtime.compress import Request, compress
from edgemodel_runtime.compress.gate import compare
from edgemodel_runtime.compress.inputs import float_output_names, input_specs
from edgemodel_runtime.compress.report import zstd_size
from edgemodel_runtime.compress.runner import make_session, p50_latency_ms, run_all
from edgemodel_sandbox.models import ModelFixture, bert_encoder, digits_classifier


@dataclass
class Row:
    name: str
    path: Path
    seconds: float = 0.0  # time to produce it
    p50_ms: float = 0.0


def table(
    title: str, fixture: ModelFixture, rows: list[Row], runs: int
) -> dict[str, dict[str, float]]:
    model = onnx.load_model(str(fixture.model), load_external_data=False)
    specs = input_specs(model)
    floats = float_output_names(model)
    evaluation = dict(np.load(fixture.evaluation))
    labels = evaluation.pop("labels", None)
    feed = {s.name: evaluation[s.name][:1] for s in specs}
    for row, p50 in zip(rows, p50_latency_ms([r.path for r in rows], feed, runs), strict=True):
        row.p50_ms = p50
    reference = run_all(make_session(rows[0].path), evaluation, specs)
    base_size = rows[0].path.stat().st_size
    results: dict[str, dict[str, float]] = {}
    print(
        f"\n## {title}  ({len(next(iter(evaluation.values())))} eval rows; "
        f"p50 over {runs} runs in interleaved blocks, batch 1, 2 threads)"
    )
    header = (
        "| model | MB | size x | wire MB | wire x | p50 ms | latency x "
        "| top-1 acc % | agreement | cosine | made in s |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        size = row.path.stat().st_size
        wire = zstd_size(row.path)
        got = run_all(make_session(row.path), evaluation, specs)
        fig = compare(reference, got, floats, labels)
        acc = f"{fig.accuracy_compressed:.2f}" if fig.accuracy_compressed is not None else "-"
        agree = f"{fig.agreement:.4f}" if fig.agreement is not None else "-"
        results[row.name] = {
            "size": size / base_size,
            "wire": wire / base_size,
            "latency": row.p50_ms / rows[0].p50_ms,
            "cosine": fig.cosine,
            "accuracy_drop": fig.accuracy_drop or 0.0,
        }
        print(
            f"| {row.name} | {size / 1e6:.1f} | {size / base_size:.3f} | {wire / 1e6:.1f} | "
            f"{wire / base_size:.3f} | {row.p50_ms:.4g} | {row.p50_ms / rows[0].p50_ms:.3f} | "
            f"{acc} | {agree} | {fig.cosine:.5f} | {row.seconds:.1f} |"
        )
    return results


def naive(fixture: ModelFixture, work: Path) -> Row:
    out = work / f"naive-{fixture.sha256[:8]}.onnx"
    start = time.monotonic()
    quantize_dynamic(str(fixture.model), str(out))  # default arguments, as a user would first try
    return Row("naive quantize_dynamic", out, time.monotonic() - start)


def ours(fixture: ModelFixture, work: Path, label: str, **request: object) -> Row:
    start = time.monotonic()
    outcome = compress(
        Request(
            source=str(fixture.model),
            output=work / "store",
            evaluation=fixture.evaluation,
            measure_latency=False,
            **request,  # type: ignore[arg-type]
        )
    )
    if not outcome.passed:
        print(f"ours ({label}) failed the gate: {outcome.report['gate']['reasons']}")
    return Row(f"ours: {label}", outcome.directory / "model.onnx", time.monotonic() - start)


def check(name: str, ok: bool) -> bool:
    print(f"- [{'x' if ok else ' '}] {name}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-zoo", action="store_true", help="skip the model zoo tables")
    parser.add_argument("--no-lm", action="store_true", help="skip the language-model table")
    parser.add_argument("--zoo-size", choices=["small", "large"], default="large")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="edgemodel-bench-") as tmp:
        work = Path(tmp)
        bert = bert_encoder(layers=args.layers, attention_mask=True)
        rows = [
            Row("fp32", bert.model),
            naive(bert, work),
            ours(bert, work, "dynamic-int8 (--target amd64)", target="amd64"),
            ours(bert, work, "+ --embedding-bits 4", target="amd64", embedding_bits=4),
        ]
        r = table(f"BERT-base-shaped encoder, {args.layers} layers, seq 128", bert, rows, args.runs)
        mine, base = r[rows[2].name], r[rows[1].name]
        print()
        ok &= check(f"size {mine['size']:.3f}x <= 0.26x fp32", mine["size"] <= 0.26)
        ok &= check(f"latency {mine['latency']:.3f}x <= 0.40x fp32", mine["latency"] <= 0.40)
        ok &= check(f"cosine {mine['cosine']:.4f} >= 0.99", mine["cosine"] >= 0.99)
        ok &= check("smaller than naive", mine["size"] < base["size"])
        ok &= check("faster than naive", mine["latency"] < base["latency"])
        four = r[rows[3].name]
        print(
            f"- (opt-in) 4-bit embedding tables: {four['size']:.3f}x size, "
            f"{four['wire']:.3f}x on the wire, cosine {four['cosine']:.4f}"
        )

        digits = digits_classifier()
        rows = [
            Row("fp32", digits.model),
            naive(digits, work),
            ours(digits, work, "static-int8", mode="static-int8", calibration=digits.calibration),
            ours(digits, work, "dynamic-int8", mode="dynamic-int8"),
        ]
        r = table("digits MLP classifier (64-256-128-10)", digits, rows, args.runs * 10)
        drop = r[rows[2].name]["accuracy_drop"]
        print()
        ok &= check(f"static-int8 top-1 accuracy drop {drop:.2f} points <= 0.5", drop <= 0.5)
    if not args.no_lm:
        import lm_table  # beside this script

        ok &= lm_table.run(args.runs)
    if not args.no_zoo:
        import zoo_table  # beside this script

        ok &= zoo_table.run(args.zoo_size, list(zoo_table.zoo.MODELS), 40, 120.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
