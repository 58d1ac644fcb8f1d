"""Owns the order of a compression run, from request to published artifact and report.

fetch + verify -> cache lookup -> validate model and data -> prepare -> convert -> gate
-> (search) -> candidates (int8 modes: weight-only int8 beside the int8 kernels) -> latency
check -> pick -> publish. The pick: of the candidates that pass the gate, those not slower
than the original on this CPU, the smallest (then the fastest); an int8-kernel artifact that
runs slower than fp32 here is reported as such and not chosen while another candidate passes.
Nothing touches DIR/<key> until the final rename; on a gate failure the report is published
without model.onnx (see store), so nothing can deploy it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgemodel_runtime import __version__
from edgemodel_runtime.compress import cpu, graph, inputs, quantize, runner, search, tasks
from edgemodel_runtime.compress.errors import EXIT_INTERNAL, CompressError, one_line
from edgemodel_runtime.compress.gate import Figures, compare, verdict
from edgemodel_runtime.compress.report import SCHEMA, dumps, ratio, tool_versions, zstd_size
from edgemodel_runtime.compress.settings import (
    CALIBRATION_METHODS,
    Settings,
    artifact_key,
    effective_min_agreement,
    resolve,
)
from edgemodel_runtime.compress.store import MODEL_FILE, REPORT_FILE, ArtifactStore
from edgemodel_runtime.sources import display_uri, sha256_file

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 << 30
SENSITIVITY_ROWS = 16  # evaluation rows the per-node sensitivity probes run on


@dataclass(frozen=True)
class Request:
    """Everything `edgemodel compress` was asked, before validation."""

    source: str
    output: Path
    mode: str | None = None
    target: str | None = None
    calibration: Path | None = None
    calibration_method: str | None = None
    evaluation: Path | None = None
    prune_sparsity: float | None = None
    sha256: str | None = None
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    search_budget_s: float | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    measure_latency: bool = True
    embedding_bits: int | None = None
    output_kind: str | None = None


@dataclass(frozen=True)
class Outcome:
    """The published result: its directory and report (result is "passed" or "gate-failed")."""

    directory: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.report.get("result") == "passed")


def _settings(request: Request) -> Settings:
    return resolve(
        mode=request.mode,
        target=request.target,
        calibration_sha256=inputs.digest_of(request.calibration, "--calibration")
        if request.mode == "static-int8"
        else None,
        calibration_method=request.calibration_method,
        evaluation_sha256=inputs.digest_of(request.evaluation, "--eval"),
        prune_sparsity=request.prune_sparsity,
        max_accuracy_drop=request.max_accuracy_drop,
        min_agreement=request.min_agreement,
        search_budget_s=request.search_budget_s,
        embedding_bits=request.embedding_bits,
        output_kind=request.output_kind,
        vnni=cpu.this_machine_has_vnni(),
    )


def _cached(store: ArtifactStore, key: str, started: float) -> Outcome | None:
    report = store.lookup(key)
    if report is None:
        return None
    report = dict(report, cache_hit=True, elapsed_s=round(time.monotonic() - started, 3))
    return Outcome(store.path(key), report)


def compress(request: Request, clock: Callable[[], float] = time.monotonic) -> Outcome:
    """Run one compression request; raises CompressError for bad input or internal failure."""
    started = clock()
    expected = inputs.expected_digest(request.sha256)
    settings = _settings(request)
    store = ArtifactStore(request.output)
    try:
        request.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompressError(f"--output {request.output}: cannot create ({exc.strerror})") from None
    store.clean_stale()
    if expected is not None:  # the key is known before downloading anything
        hit = _cached(store, artifact_key(expected, settings, __version__), started)
        if hit is not None:
            return hit
    with store.staging("run") as staged:
        work = staged / "work"
        work.mkdir()
        source_copy = work / "input.onnx"
        digest = inputs.fetch_model(request.source, source_copy, expected, request.max_bytes)
        key = artifact_key(digest, settings, __version__)
        hit = _cached(store, key, started)
        if hit is not None:
            return hit
        report = _build(
            request,
            settings=settings,
            source=source_copy,
            digest=digest,
            key=key,
            staged=staged,
            work=work,
            clock=clock,
            started=started,
        )
        shutil.rmtree(work)
        (staged / REPORT_FILE).write_text(_dumps(report))
        directory = store.publish(staged, key)
    return Outcome(directory, report)


def _weight_only_base_is_smaller(prepared: quantize.Prepared, chosen: search.Attempt) -> bool:
    """The int8 kernels placed nothing, and weight-only int8 starts from a graph 3% smaller."""
    if prepared.unprocessed is None or graph.int8_compute_ops(
        onnx.load_model(str(chosen.artifact), load_external_data=False)
    ):
        return False
    return prepared.unprocessed.stat().st_size < 0.97 * prepared.path.stat().st_size


def _recipe(mode: str, attempt: search.Attempt) -> str:
    """What a candidate is, by its content: int8 kernels only when some op computes in int8."""
    if mode not in ("dynamic-int8", "static-int8"):
        return mode
    if attempt.variant.weight_only:
        return "weight-only int8"
    ops = graph.int8_compute_ops(onnx.load_model(str(attempt.artifact), load_external_data=False))
    return f"int8 kernels ({ops} int8 ops)" if ops else "weight-only int8 (no int8 kernel placed)"


def _check_judgeable(
    reference: dict[str, np.ndarray],
    float_outputs: list[str],
    labels: np.ndarray | None,
    settings: Settings,
    label: str,
) -> None:
    """A gate that can measure nothing is an input error, never a pass."""
    try:
        figures = compare(reference, reference, float_outputs, labels, settings.output_kind)
    except ValueError as exc:
        raise CompressError(f"--eval: {exc}") from None
    if figures.agreement is None and figures.accuracy_drop is None:
        raise CompressError(
            f"{label}: the accuracy gate cannot judge output {figures.output!r} "
            f"(shape {list(reference[figures.output].shape)}): it has no class dimension and "
            f"--eval has no labels; give --output-kind ({', '.join(tasks.OUTPUT_KINDS)})"
        )


def _dumps(report: dict[str, Any]) -> str:
    return dumps(report) + "\n"


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """The quantizer logs warnings through the root logger; they are not ours to print."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def _build(
    request: Request,
    *,
    settings: Settings,
    source: Path,
    digest: str,
    key: str,
    staged: Path,
    work: Path,
    clock: Callable[[], float],
    started: float,
) -> dict[str, Any]:
    label = request.source
    model = inputs.load_model(source, label)
    inputs.check_loadable(source, label)
    specs = inputs.input_specs(model)
    if not specs:
        raise CompressError(f"{label}: the model has no inputs to feed")
    float_outputs = inputs.float_output_names(model)
    calibration: dict[str, np.ndarray] | None = None
    if settings.mode == "static-int8":
        assert request.calibration is not None
        calibration = inputs.load_arrays(request.calibration, "--calibration")
        inputs.check_arrays(calibration, specs, "--calibration", allow_labels=True)
        calibration.pop(inputs.LABELS_KEY, None)
    evaluation: dict[str, np.ndarray] | None = None
    labels: np.ndarray | None = None
    if request.evaluation is not None:
        evaluation = inputs.load_arrays(request.evaluation, "--eval")
        inputs.check_arrays(evaluation, specs, "--eval", allow_labels=True)
        labels = evaluation.pop(inputs.LABELS_KEY, None)
        if not float_outputs:
            raise CompressError(
                f"{label}: no floating-point output to compare for the accuracy gate"
            )

    min_agreement = effective_min_agreement(settings, labels is not None)
    with _quiet_ort_logging():
        reference: dict[str, np.ndarray] | None = None
        if evaluation is not None:  # judged before any conversion work: refuse early
            reference = runner.run_all(runner.make_session(source), evaluation, specs)
            _check_judgeable(reference, float_outputs, labels, settings, label)
        prepared = quantize.prepare(model, settings, work, label)
        del model
        counter = iter(range(1_000_000))

        def convert(variant: quantize.Variant) -> Path:
            out = work / f"candidate-{next(counter)}.onnx"
            quantize.convert(
                prepared,
                out,
                settings=settings,
                variant=variant,
                calibration=calibration,
                specs=specs,
                workdir=work,
            )
            return out

        def evaluate(path: Path) -> Figures | None:
            if evaluation is None or reference is None:
                return None
            try:
                got = runner.run_all(runner.make_session(path), evaluation, specs)
                return compare(reference, got, float_outputs, labels, settings.output_kind)
            except Exception as exc:
                raise CompressError(
                    f"evaluating the {settings.mode} model failed: {one_line(str(exc), 240)}",
                    EXIT_INTERNAL,
                ) from None

        def attempt(variant: quantize.Variant) -> search.Attempt:
            path = convert(variant)
            figures = evaluate(path)
            reasons: tuple[str, ...] = ()
            if figures is not None:
                reasons = tuple(
                    verdict(
                        figures,
                        settings.max_accuracy_drop,
                        min_agreement,
                        tasks.DEFAULT_TASK_THRESHOLDS.get(figures.kind or ""),
                    )
                )
            return search.Attempt(variant, figures, reasons, path)

        # Sensitivity only ranks nodes: a few rows rank them as well as many, at a fraction of
        # the cost (46 probes x 64 OCR lines did not fit a 120 s budget).
        probe_rows: dict[str, np.ndarray] | None = None
        probe_reference: dict[str, np.ndarray] | None = None
        if evaluation is not None and reference is not None:
            rows = int(next(iter(evaluation.values())).shape[0])
            if rows > SENSITIVITY_ROWS:
                probe_rows = {k: v[:SENSITIVITY_ROWS] for k, v in evaluation.items()}
                probe_reference = {k: v[:SENSITIVITY_ROWS] for k, v in reference.items()}

        def sensitivity(node: str, weight_only: bool = False) -> float:
            variant = quantize.Variant(
                calibration_method=settings.calibration_method, only_node=node
            )
            if weight_only:  # weight-only: every other weight keeps fp32, this one goes int8
                others = tuple(n for n, _ in prepared.weight_candidates if n != node)
                variant = quantize.Variant(nodes_to_exclude=others, weight_only=True)
            path = convert(variant)
            if probe_rows is not None and probe_reference is not None:
                got = runner.run_all(runner.make_session(path), probe_rows, specs)
                path.unlink(missing_ok=True)
                figures: Figures | None = compare(
                    probe_reference, got, float_outputs, None, settings.output_kind
                )
            else:
                figures = evaluate(path)
                path.unlink(missing_ok=True)
            return figures.relative_error if figures is not None else 0.0

        first = attempt(quantize.Variant(calibration_method=settings.calibration_method))
        chosen, search_log = first, search.SearchLog(attempts=[first])
        if evaluation is not None and not first.passed:
            methods = search.method_order(settings.calibration_method, CALIBRATION_METHODS)
            chosen, search_log = search.run_search(
                first,
                candidates=prepared.candidates,
                methods=methods,
                attempt=attempt,
                sensitivity=sensitivity,
                budget_s=settings.search_budget_s,
                clock=clock,
            )
        int8 = settings.mode in ("dynamic-int8", "static-int8")
        feed = runner.sample_feed(evaluation if evaluation is not None else calibration, specs)
        timings: dict[int, tuple[float, float, float]] = {}  # fp32 p50, p50, paired ratio
        same: dict[int, bool] = {}  # runs the original's kernels (graph.runs_as_original)

        def time_it(candidate: search.Attempt) -> None:
            if not request.measure_latency or id(candidate) in timings:
                return
            try:
                p50s, ratios = runner.paired_latency([source, candidate.artifact], feed)
            except Exception as exc:
                raise CompressError(
                    f"latency measurement failed: {one_line(str(exc), 200)}", EXIT_INTERNAL
                ) from None
            timings[id(candidate)] = (p50s[0], p50s[1], ratios[1])
            if candidate.passed and int8:
                same[id(candidate)] = graph.int8_compute_ops(
                    onnx.load_model(str(candidate.artifact))
                ) == 0 and graph.runs_as_original(source, candidate.artifact, work)

        def slow(candidate: search.Attempt) -> bool:
            measured = timings.get(id(candidate))
            return (
                measured is not None
                and measured[2] > 1 + search.LATENCY_TOLERANCE
                and not same.get(id(candidate), False)
            )

        pool: list[search.Attempt] = [chosen]
        time_it(chosen)
        # The search moves on to weight-only int8 when the int8 kernels lose accuracy, run
        # slower than fp32 on this CPU, or were never placed while the graph weight-only int8
        # starts from is smaller (the artifact is weight-only already, but built from the
        # pre-processed graph, which can hold more weights: silero-vad's 1.5x). Never with a
        # zero budget: that asks for no search.
        if (
            int8
            and evaluation is not None
            and settings.search_budget_s > 0
            and (
                not chosen.passed or slow(chosen) or _weight_only_base_is_smaller(prepared, chosen)
            )
        ):
            light = attempt(quantize.Variant(weight_only=True))
            if not light.passed and light.figures is not None:
                light = search.weight_only_search(
                    light,
                    candidates=prepared.weight_candidates,
                    attempt=attempt,
                    sensitivity=lambda node: sensitivity(node, weight_only=True),
                    budget_s=settings.search_budget_s,
                    clock=clock,
                    log=search_log,
                )
            else:
                search_log.attempts.append(light)
            pool.append(light)
            if light.passed:
                time_it(light)
        chosen, notes = search.pick(
            pool,
            size=lambda a: Path(a.artifact).stat().st_size,
            latency_ratio=lambda a: timings[id(a)][2] if id(a) in timings else None,
            runs_as_original=lambda a: same.get(id(a), False),
        )
        artifact: Path = chosen.artifact
        latency: dict[str, Any] | None = None
        if id(chosen) in timings:
            before, after, paired = timings[id(chosen)]
            latency = {
                "original_p50_ms": round(before, 3),
                "compressed_p50_ms": round(after, 3),
                "ratio": round(paired, 4),
                "ratio_method": "median over interleaved rounds of paired block medians",
                "runs": runner.LATENCY_RUNS * 2,
                "batch": 1,
                "intra_op_threads": runner.THREADS,
                "runs_original_kernels": same.get(id(chosen), False),
                "slower_than_original": slow(chosen),
            }
        input_size = source.stat().st_size
        recipes: dict[int, str] = {}

        def recipe_of(a: search.Attempt) -> str:
            if id(a) not in recipes:
                recipes[id(a)] = _recipe(settings.mode, a)
            return recipes[id(a)]

        # The Pareto table: every candidate the run converted, with its figures.
        candidates_table = [
            {
                "recipe": recipe_of(a),
                "calibration_method": a.variant.calibration_method,
                "kept_in_float": len(a.variant.nodes_to_exclude),
                "bytes": Path(a.artifact).stat().st_size,
                "size_ratio": ratio(Path(a.artifact).stat().st_size, input_size),
                "agreement": None if a.figures is None else a.figures.agreement,
                "task_metric": None if a.figures is None else a.figures.task_metric,
                "latency_ratio": None if id(a) not in timings else round(timings[id(a)][2], 4),
                "runs_original_kernels": same.get(id(a)),
                "passed": a.passed,
                "chosen": a is chosen,
                "note": notes.get(id(a))
                or ("failed the gate: " + "; ".join(a.reasons) if a.reasons else ""),
            }
            for a in search_log.attempts
            if Path(a.artifact).exists()
        ]

    chosen_recipe = recipe_of(chosen)
    passed = chosen.passed
    input_bytes = source.stat().st_size
    artifact_bytes = artifact.stat().st_size
    wire = zstd_size(artifact)
    artifact_digest = sha256_file(artifact)
    if passed:
        artifact.rename(staged / MODEL_FILE)
    op_of = dict(prepared.candidates)
    sens_of = {s.node: s.relative_error for s in search_log.sensitivities}
    kept = [
        {
            "node": node,
            "op_type": op_of.get(node, "?"),
            "reason": "accuracy search: most sensitive nodes kept in float"
            + (" (fp32 weights)" if chosen.variant.weight_only else ""),
            "sensitivity_relative_error": sens_of.get(node),
        }
        for node in chosen.variant.nodes_to_exclude
    ]
    figures = chosen.figures
    return {
        "schema": SCHEMA,
        "result": "passed" if passed else "gate-failed",
        "key": key,
        "cache_hit": False,
        "tool": tool_versions(),
        "input": {"source": display_uri(request.source), "sha256": digest, "bytes": input_bytes},
        "settings": settings.canonical(),
        "effective": {
            "calibration_method": chosen.variant.calibration_method,
            "preprocessing": prepared.preprocessing,
            "opset_upgraded_from": prepared.opset_upgraded_from,
            "quantized_op_types": list(quantize.op_types(settings)),
            "candidate_nodes": len(prepared.candidates),
            "embedding_tables_4bit": list(prepared.embeddings),
            "recipe": chosen_recipe,
            "reduce_range": settings.reduce_range,
            "output_kind": None if chosen.figures is None else chosen.figures.kind,
        },
        "pruning": None
        if prepared.pruning is None
        else {
            "tensors": prepared.pruning.tensors,
            "parameters": prepared.pruning.parameters,
            "zeroed": prepared.pruning.zeroed,
        },
        "artifact": {
            "file": MODEL_FILE if passed else None,
            "sha256": artifact_digest,
            "bytes": artifact_bytes,
            "zstd_bytes": wire,
            "kept": passed,
        },
        "sizes": {
            "input_bytes": input_bytes,
            "artifact_bytes": artifact_bytes,
            "ratio": ratio(artifact_bytes, input_bytes),
            "wire_bytes": wire,
            "wire_ratio": ratio(wire, input_bytes),
            "wire_codec": "zstd-10",
        },
        "accuracy": None if figures is None else figures.as_dict(),
        "gate": {
            "evaluated": figures is not None,
            "max_accuracy_drop": settings.max_accuracy_drop,
            "min_agreement": min_agreement,
            "min_agreement_source": "request"
            if settings.min_agreement is not None
            else ("default for data without labels" if min_agreement is not None else None),
            "min_task_metric": None
            if chosen.figures is None
            else tasks.DEFAULT_TASK_THRESHOLDS.get(chosen.figures.kind or ""),
            "passed": passed,
            "reasons": list(chosen.reasons),
        },
        "latency": latency,
        "kept_in_float": kept,
        "activations": {
            "int8": not chosen.variant.weight_only,
            "reason": "weight-only int8: every op computes in fp32 from int8-stored weights; "
            + (notes.get(id(chosen)) or "")
            if chosen.variant.weight_only
            else "int8 kernels where the quantizer placed them; other weights stored int8",
        },
        "candidates": candidates_table,
        "search": {
            "attempts": [
                {
                    "recipe": a.variant.recipe,
                    "calibration_method": a.variant.calibration_method,
                    "kept_in_float": list(a.variant.nodes_to_exclude),
                    "agreement": None if a.figures is None else a.figures.agreement,
                    "accuracy_drop": None if a.figures is None else a.figures.accuracy_drop,
                    "cosine": None if a.figures is None else a.figures.cosine,
                    "passed": a.passed,
                }
                for a in search_log.attempts
            ],
            "sensitivity": [
                {"node": s.node, "op_type": s.op_type, "relative_error": s.relative_error}
                for s in search_log.sensitivities
            ],
            "budget_s": settings.search_budget_s,
            "budget_exhausted": search_log.budget_exhausted,
            "elapsed_s": round(search_log.elapsed_s, 3),
        },
        "elapsed_s": round(clock() - started, 3),
    }
