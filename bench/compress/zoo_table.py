"""Compression benchmark on the model zoo: real pretrained models, their task metrics, targets.

Per zoo model (edgemodel_sandbox.zoo: YOLOv8n detector, PP-OCRv4 text detector and
recognizer, PP-OCR direction classifier, Silero VAD) and per mode: size ratio, agreement with
fp32 and the task's own metric on the "large" evaluation set, latency ratio against fp32 on
this CPU (batch 1, 2 threads; the median over interleaved rounds of paired block medians,
runner.paired_latency), the recipe the search picked and the gate's result; for the OCR
recognizer also the share of lines each model reads exactly as rendered (ground truth beside
agreement: fp32's own misreadings are where rounding flips lines). onnxruntime's
`quantize_dynamic` and `quantize_static` with default arguments run in the same table, as a
user would first try them.

Targets (the issue's): int8 (the default dynamic-int8 run: the search picks the recipe)
>= 0.99 agreement at <= 0.30x size and <= 1.0x fp32 latency (a ratio within the search's
5% noise tolerance counts); fp16 >= 0.995 agreement at <= 0.52x (the fp16 runs ask the gate for
that 0.995: below it the search keeps weights fp16 and computes in fp32).

Run: .venv/bin/python bench/compress/zoo_table.py [--size large|small] [--models a,b] [--runs N]
(bench/compress/run.py ends with the same tables).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edgemodel_runtime.compress import CompressError, Request, compress
from edgemodel_runtime.compress.gate import compare
from edgemodel_runtime.compress.graph import runs_as_original
from edgemodel_runtime.compress.inputs import float_output_names, input_specs, per_request
from edgemodel_runtime.compress.runner import make_session, paired_latency, run_all, sample_feed
from edgemodel_runtime.compress.search import LATENCY_TOLERANCE
from edgemodel_sandbox import zoo

INT8_SIZE, INT8_AGREEMENT, INT8_LATENCY = 0.30, 0.99, 1.0
FP16_SIZE, FP16_AGREEMENT = 0.52, 0.995


@dataclass
class Row:
    name: str
    path: Path | None
    seconds: float = 0.0
    recipe: str = ""
    result: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


class Reader:
    """CalibrationDataReader for onnxruntime's quantize_static: one request per row."""

    def __init__(self, arrays: dict[str, np.ndarray], stacked: bool) -> None:
        rows = len(next(iter(arrays.values())))
        self._feeds = iter(
            {k: np.asarray(v[i]) if stacked else v[i : i + 1] for k, v in arrays.items()}
            for i in range(rows)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def naive_dynamic(entry: zoo.ZooEntry, work: Path) -> Row:
    from onnxruntime.quantization import quantize_dynamic

    out = work / f"{entry.name}-naive-dynamic.onnx"
    start = time.monotonic()
    try:
        quantize_dynamic(str(entry.model), str(out))
    except Exception as exc:
        return Row("ort quantize_dynamic (defaults)", None, result=f"failed: {exc}"[:60])
    return Row("ort quantize_dynamic (defaults)", out, time.monotonic() - start, "ort defaults")


def naive_static(entry: zoo.ZooEntry, work: Path) -> Row:
    from onnxruntime.quantization import quantize_static

    out = work / f"{entry.name}-naive-static.onnx"
    calibration = dict(np.load(entry.calibration))
    specs = input_specs(onnx.load_model(str(entry.model)))
    start = time.monotonic()
    try:
        quantize_static(
            str(entry.model), str(out), Reader(calibration, per_request(calibration, specs))
        )
    except Exception as exc:
        message = " ".join(str(exc).split())
        return Row("ort quantize_static (defaults)", None, result=f"failed: {message}"[:70])
    return Row("ort quantize_static (defaults)", out, time.monotonic() - start, "ort defaults")


def ours(entry: zoo.ZooEntry, work: Path, mode: str, budget: float) -> Row:
    start = time.monotonic()
    try:
        outcome = compress(
            Request(
                source=str(entry.model),
                output=work / "store",
                mode=mode,
                calibration=entry.calibration if mode == "static-int8" else None,
                evaluation=entry.evaluation,
                output_kind=entry.spec.output_kind,
                search_budget_s=budget,
                measure_latency=mode != "fp16",
                # the fp16 target is the user's gate: fp16 must agree on 99.5 %, not the 0.99
                # default (full fp16 falls back to fp16 weights computed in fp32 below it)
                min_agreement=FP16_AGREEMENT if mode == "fp16" else None,
            )
        )
    except CompressError as exc:
        return Row(
            f"edgemodel compress --mode {mode}",
            None,
            time.monotonic() - start,
            mode,
            f"error: {exc}"[:90],
        )
    report = outcome.report
    artifact = outcome.directory / "model.onnx"
    kept = [k for k in report["kept_in_float"] if k["node"] != "*"]
    recipe = report["effective"].get("recipe") or mode
    if kept:
        recipe += f", {len(kept)} kept fp32"
    return Row(
        f"edgemodel compress --mode {mode}",
        artifact if outcome.passed else None,
        time.monotonic() - start,
        recipe,
        report["result"],
        {"report": report},
    )


def measure(entry: zoo.ZooEntry, rows: list[Row], runs: int) -> None:
    model = onnx.load_model(str(entry.model), load_external_data=False)
    specs = input_specs(model)
    floats = float_output_names(model)
    evaluation = dict(np.load(entry.evaluation))
    reference = run_all(make_session(entry.model), evaluation, specs)
    feed = sample_feed(evaluation, specs)
    base = entry.model.stat().st_size
    truth = zoo.read_truth(entry) if entry.truth is not None else None
    charset = zoo.recognizer_charset(entry.model) if truth is not None else []
    for row in rows:
        if row.path is None:
            report = row.figures.get("report")
            if report is not None:  # gate-failed: the report still has every figure
                row.figures.update(
                    size=report["sizes"]["ratio"],
                    agreement=(report["accuracy"] or {}).get("agreement"),
                    task=(report["accuracy"] or {}).get("task_metric"),
                )
            continue
        got = run_all(make_session(row.path), evaluation, specs)
        fig = compare(reference, got, floats, None, entry.spec.output_kind)
        if truth is not None:  # rendered text lines: how many the model reads as rendered
            read = zoo.read_lines(got[floats[0]], charset)
            same = [a == b for a, b in zip(read, truth, strict=True)]
            row.figures["truth"] = float(np.mean(same))
        _, ratios = paired_latency([entry.model, row.path], feed, runs=runs)
        with tempfile.TemporaryDirectory() as scratch:
            same = row.path != entry.model and runs_as_original(
                entry.model, row.path, Path(scratch)
            )
        row.figures.update(
            same_kernels=same,
            size=row.path.stat().st_size / base,
            agreement=fig.agreement,
            task=fig.task_metric,
            task_name=fig.task_metric_name,
            latency=ratios[1],
        )


def show(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(entry: zoo.ZooEntry, rows: list[Row]) -> bool:
    rows_count = len(next(iter(np.load(entry.evaluation).values())))
    task_name = next((r.figures.get("task_name") for r in rows if r.figures.get("task_name")), "")
    print(
        f"\n### {entry.name}: {entry.spec.description}\n"
        f"{entry.model.stat().st_size / 1e6:.2f} MB, {rows_count} evaluation rows without labels, "
        f"output kind `{entry.spec.output_kind}`, task metric: {task_name or 'top-1 only'}"
        + ("; ground truth: the rendered texts (lines read exactly)" if entry.truth else "")
        + "\n"
    )
    print(
        "| model | size x | agreement | task metric | vs ground truth | latency x (measured) "
        "| recipe | gate | made in s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        f = row.figures
        print(
            f"| {row.name} | {show(f.get('size'))} | {show(f.get('agreement'), 4)} | "
            f"{show(f.get('task'), 4)} | {show(f.get('truth'), 4)} | {show(f.get('latency'), 2)}"
            f"{' = fp32 kernels' if f.get('same_kernels') else ''} | {row.recipe} | "
            f"{row.result or '-'} | {row.seconds:.1f} |"
        )
    for row in rows:
        report = row.figures.get("report")
        if report is None:
            continue
        print(f"\n{row.name}: candidates (size x / agreement / latency x / why)")
        for c in report["candidates"]:
            mark = "**chosen**" if c["chosen"] else ""
            kept = f", {c['kept_in_float']} kept fp32" if c["kept_in_float"] else ""
            method = f", {c['calibration_method']}" if c["calibration_method"] else ""
            print(
                f"  - {c['recipe']}{kept}{method}: "
                f"{show(c['size_ratio'])} / {show(c['agreement'], 4)} / "
                f"{show(c['latency_ratio'], 2)} {mark} {c['note']}"
            )
    ok = True
    by_name = {r.name: r.figures for r in rows}
    int8 = by_name.get("edgemodel compress --mode dynamic-int8", {})
    fp16 = by_name.get("edgemodel compress --mode fp16", {})
    print()
    ok &= check(
        f"int8 agreement {show(int8.get('agreement'), 4)} >= {INT8_AGREEMENT}",
        (int8.get("agreement") or 0) >= INT8_AGREEMENT,
    )
    ok &= check(
        f"int8 size {show(int8.get('size'))}x <= {INT8_SIZE}x",
        (int8.get("size") or 9) <= INT8_SIZE,
    )
    latency = int8.get("latency")
    same = bool(int8.get("same_kernels"))
    ok &= check(
        f"int8 latency {show(latency, 2)}x <= {INT8_LATENCY}x fp32 "
        + (
            "(runs fp32's own kernels after load-time folding: measured ratio is noise)"
            if same
            else f"(+{LATENCY_TOLERANCE:.0%} noise tolerance)"
        ),
        same or (latency is not None and latency <= INT8_LATENCY + LATENCY_TOLERANCE),
    )
    ok &= check(
        f"fp16 agreement {show(fp16.get('agreement'), 4)} >= {FP16_AGREEMENT}",
        (fp16.get("agreement") or 0) >= FP16_AGREEMENT,
    )
    ok &= check(
        f"fp16 size {show(fp16.get('size'))}x <= {FP16_SIZE}x", (fp16.get("size") or 9) <= FP16_SIZE
    )
    return ok


def check(name: str, ok: bool) -> bool:
    print(f"- [{'x' if ok else ' '}] {name}")
    return ok


def run(size: str, names: list[str], runs: int, budget: float) -> bool:
    print(f"\n## Model zoo ({size} inputs; onnxruntime {ort.__version__})")
    ok = True
    with tempfile.TemporaryDirectory(prefix="edgemodel-zoo-bench-") as tmp:
        work = Path(tmp)
        for name in names:
            try:
                entry = zoo.entry(name, size)
            except zoo.ZooUnavailable as exc:
                print(f"\n### {name}: unavailable ({exc})")
                ok = False
                continue
            rows = [
                Row("fp32 (original)", entry.model, recipe="-"),
                naive_dynamic(entry, work),
                naive_static(entry, work),
                ours(entry, work, "dynamic-int8", budget),
                ours(entry, work, "static-int8", budget),
                ours(entry, work, "fp16", budget),
            ]
            measure(entry, rows, runs)
            ok &= table(entry, rows)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=sorted(zoo.SIZES), default="large")
    parser.add_argument("--models", default=",".join(zoo.MODELS))
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--search-budget", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    ok = run(args.size, args.models.split(","), args.runs, args.search_budget)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
