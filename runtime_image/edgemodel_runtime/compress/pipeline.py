"""Owns the order of a compression run, from request to published artifact and report.

fetch + verify -> cache lookup -> validate model and data -> prepare -> convert -> gate
-> (search) -> measure -> publish. Nothing touches DIR/<key> until the final rename; on a
gate failure the report is published without model.onnx (see store), so nothing can deploy it.
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

from edgemodel_runtime import __version__
from edgemodel_runtime.compress import inputs, quantize, runner, search
from edgemodel_runtime.compress.errors import EXIT_INTERNAL, CompressError, one_line
from edgemodel_runtime.compress.gate import Figures, compare, verdict
from edgemodel_runtime.compress.report import SCHEMA, dumps, ratio, tool_versions, zstd_size
from edgemodel_runtime.compress.settings import CALIBRATION_METHODS, Settings, artifact_key, resolve
from edgemodel_runtime.compress.store import MODEL_FILE, REPORT_FILE, ArtifactStore
from edgemodel_runtime.sources import display_uri, sha256_file

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 << 30


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

    with _quiet_ort_logging():
        prepared = quantize.prepare(model, settings, work, label)
        del model
        reference: dict[str, np.ndarray] | None = None
        if evaluation is not None:
            reference = runner.run_all(runner.make_session(source), evaluation, specs)
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
                return compare(reference, got, float_outputs, labels)
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
                    verdict(figures, settings.max_accuracy_drop, settings.min_agreement)
                )
            return search.Attempt(variant, figures, reasons, path)

        def sensitivity(node: str) -> float:
            path = convert(
                quantize.Variant(calibration_method=settings.calibration_method, only_node=node)
            )
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
        artifact: Path = chosen.artifact
        latency: dict[str, Any] | None = None
        if request.measure_latency:
            feed = runner.sample_feed(evaluation if evaluation is not None else calibration, specs)
            try:
                before, after = runner.p50_latency_ms([source, artifact], feed)
            except Exception as exc:
                raise CompressError(
                    f"latency measurement failed: {one_line(str(exc), 200)}", EXIT_INTERNAL
                ) from None
            latency = {
                "original_p50_ms": round(before, 3),
                "compressed_p50_ms": round(after, 3),
                "ratio": ratio(after, before),
                "runs": runner.LATENCY_RUNS,
                "batch": 1,
                "intra_op_threads": runner.THREADS,
            }

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
            "reason": "accuracy search: most sensitive nodes kept in float",
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
            "min_agreement": settings.min_agreement,
            "passed": passed,
            "reasons": list(chosen.reasons),
        },
        "latency": latency,
        "kept_in_float": kept,
        "search": {
            "attempts": [
                {
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
