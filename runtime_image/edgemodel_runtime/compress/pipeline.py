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
import dataclasses
import itertools
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgemodel_runtime import __version__
from edgemodel_runtime.compress import (
    cpu,
    graph,
    inputs,
    lm_gate,
    quantize,
    runner,
    search,
    tasks,
    weightonly,
)
from edgemodel_runtime.compress.errors import CompressError, FailureKind, one_line
from edgemodel_runtime.compress.gate import Figures, compare, score, verdict
from edgemodel_runtime.compress.report import SCHEMA, dumps, ratio, tool_versions, zstd_size
from edgemodel_runtime.compress.settings import (
    CALIBRATION_METHODS,
    WEIGHT_ONLY_MODES,
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
    block_size: int | None = None  # weight-only modes
    symmetric: bool | None = None


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
        if request.mode == "static-int8" or request.mode in WEIGHT_ONLY_MODES
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
        block_size=request.block_size,
        symmetric=request.symmetric,
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


def _weight_only_base_is_smaller(prepared: quantize.Prepared) -> bool:
    """Weight-only int8 starts from a graph 3% smaller than the int8 kernels' pre-processed one.

    Whether or not the int8 kernels placed an op: silero-vad's DynamicQuantizeLSTM candidate
    is 0.36x of the original (its pre-processed graph holds 1.4x the weights), weight-only
    int8 0.26x; both go to the pick, which weighs size and latency.
    """
    if prepared.unprocessed is None:
        return False
    return prepared.unprocessed.stat().st_size < 0.97 * prepared.path.stat().st_size


def _recipe(mode: str, attempt: search.Attempt) -> str:
    """What a candidate is, by its content: int8 kernels only when some op computes in int8."""
    if mode == "fp16" and attempt.variant.weight_only:
        return "fp16 weights, fp32 compute"
    if mode not in ("dynamic-int8", "static-int8"):
        return mode
    if attempt.variant.weight_only:
        return "weight-only int8"
    ops = graph.int8_compute_ops(onnx.load_model(str(attempt.artifact), load_external_data=False))
    layout = ", QOperator" if attempt.variant.qoperator else ""
    return (
        f"int8 kernels ({ops} int8 ops{layout})"
        if ops
        else "weight-only int8 (no int8 kernel placed)"
    )


def _check_judgeable(
    reference: dict[str, np.ndarray],
    float_outputs: list[str],
    labels: np.ndarray | None,
    kind: str | None,
    label: str,
) -> None:
    """A gate that can measure nothing is an input error, never a pass."""
    try:
        figures = compare(reference, reference, float_outputs, labels, kind)
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


@dataclass(frozen=True)
class _Data:
    """The model's interface and the data the request brought, validated against it."""

    specs: list[inputs.InputSpec]
    float_outputs: list[str]
    calibration: dict[str, np.ndarray] | None
    evaluation: dict[str, np.ndarray] | None
    labels: np.ndarray | None  # a language model's: the next tokens (see lm_gate)
    kind: str | None = None  # the output kind the gate judges (settings' or language-model)
    decoder: lm_gate.DecoderInterface | None = None

    def outputs(self, path: Path, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model at `path` run on evaluation `rows`."""
        session = runner.make_session(path)
        if self.decoder is not None:
            logits = lm_gate.run_logits(session, self.decoder, rows[lm_gate.IDS])
            return {self.decoder.logits: logits}
        return runner.run_all(session, rows, self.specs)

    def latency_feed(self) -> dict[str, np.ndarray]:
        """One batch-1 request for the latency comparison."""
        rows = self.evaluation if self.evaluation is not None else self.calibration
        if self.decoder is not None and rows is not None:  # token windows (weight-only)
            return lm_gate.feeds(self.decoder, rows[lm_gate.IDS][:1])
        return runner.sample_feed(rows, self.specs)


def _load_data(request: Request, settings: Settings, model: onnx.ModelProto, label: str) -> _Data:
    """Reads --calibration and --eval and checks them against the model's inputs."""
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
    decoder = _decoder(model, settings, label)
    if settings.mode in WEIGHT_ONLY_MODES and request.calibration is not None:
        calibration = _weight_only_calibration(request.calibration, specs, decoder is not None)
    if decoder is not None:
        data = _language_model_data(request, specs, float_outputs, decoder)
        return replace(data, calibration=calibration)
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
    return _Data(specs, float_outputs, calibration, evaluation, labels, settings.output_kind)


def _weight_only_calibration(
    path: Path, specs: list[inputs.InputSpec], language_model: bool
) -> dict[str, np.ndarray]:
    """--calibration of a weight-only mode, the activations GPTQ rounds for: a language
    model's token windows (`input_ids` int [N, L]), any other model's input rows."""
    arrays = inputs.load_arrays(path, "--calibration")
    if not language_model:
        inputs.check_arrays(arrays, specs, "--calibration", allow_labels=True)
        arrays.pop(inputs.LABELS_KEY, None)
        return arrays
    ids = arrays.get(lm_gate.IDS)
    if set(arrays) != {lm_gate.IDS} or ids is None:
        raise CompressError(
            f"--calibration: a language model's calibration data is {lm_gate.IDS!r} [N, L] "
            f"only, not {sorted(arrays)}"
        )
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise CompressError(
            f"--calibration: {lm_gate.IDS!r} must be integer token ids [N, L], got "
            f"{ids.dtype} {list(ids.shape)}"
        )
    return {lm_gate.IDS: ids.astype(np.int64)}


def _decoder(
    model: onnx.ModelProto, settings: Settings, label: str
) -> lm_gate.DecoderInterface | None:
    """The decoder interface when the gate judges a language model: asked for with
    --output-kind language-model, or a token-ids model with a KV cache."""
    asked = settings.output_kind == lm_gate.KIND
    if settings.output_kind is not None and not asked:
        return None
    decoder = lm_gate.decoder_interface(model)
    if asked and decoder is None:
        raise CompressError(
            f"{label}: --output-kind {lm_gate.KIND} needs a model fed {lm_gate.IDS!r}"
        )
    if decoder is not None and (asked or decoder.past):
        return decoder
    return None


def _language_model_data(
    request: Request,
    specs: list[inputs.InputSpec],
    float_outputs: list[str],
    decoder: lm_gate.DecoderInterface,
) -> _Data:
    """Evaluation token sequences split into prompts and the next tokens they are judged on."""
    if decoder.logits not in float_outputs:
        raise CompressError(f"the language model's first output {decoder.logits!r} is not float")
    if request.evaluation is None:
        return _Data(specs, float_outputs, None, None, None, lm_gate.KIND, decoder)
    prompts, targets = lm_gate.split_sequences(inputs.load_arrays(request.evaluation, "--eval"))
    evaluation = {lm_gate.IDS: prompts}
    return _Data(specs, float_outputs, None, evaluation, targets, lm_gate.KIND, decoder)


def better_method(
    rtn: search.Attempt, calibrated: search.Attempt
) -> tuple[search.Attempt, search.Attempt]:
    """(better, other) of a round-to-nearest and a GPTQ candidate by the gate (pure): the
    one that passes, else the higher score (agreement first); round to nearest at a tie.
    Without evaluation data nothing is judged: GPTQ, which minimises each MatMul's output
    error on the calibration data the request gave for it."""
    if rtn.figures is None and calibrated.figures is None:
        return calibrated, rtn
    if rtn.passed != calibrated.passed:
        return (rtn, calibrated) if rtn.passed else (calibrated, rtn)
    if score(calibrated.figures) > score(rtn.figures):
        return calibrated, rtn
    return rtn, calibrated


def _shown(attempt: search.Attempt) -> str:
    figures = attempt.figures
    return "n/a" if figures is None or figures.agreement is None else f"{figures.agreement:.4f}"


def _statistics_rows(data: _Data) -> dict[str, np.ndarray] | None:
    """Rows for the int8 Conv bias correction's input means (quantize.Prepared.statistics):
    the calibration set, else the first evaluation rows; none for a language model."""
    if data.decoder is not None:
        return None
    if data.calibration is not None:
        return data.calibration
    return None if data.evaluation is None else _first_rows(data.evaluation)


def _first_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[:SENSITIVITY_ROWS] for k, v in arrays.items()}


class _Run:
    """One run's candidates: converting, gating, probing and timing them, keyed by attempt.

    Holds what the steps of a run share (the prepared graph, the data, the fp32 reference
    outputs, the latencies measured so far), so each step is a method of its own.
    """

    def __init__(
        self,
        request: Request,
        settings: Settings,
        *,
        source: Path,
        work: Path,
        data: _Data,
        reference: dict[str, np.ndarray] | None,
        prepared: quantize.Prepared,
        clock: Callable[[], float],
    ) -> None:
        self.request = request
        self.settings = settings
        self.source = source
        self.work = work
        self.data = data
        self.reference = reference
        self.prepared = prepared
        self.clock = clock
        self.min_agreement = effective_min_agreement(
            settings, data.labels is not None, language_model=data.decoder is not None
        )
        self.int8 = settings.mode in ("dynamic-int8", "static-int8")
        self.counter = itertools.count()
        self.timings: dict[int, tuple[float, float, float]] = {}  # fp32 p50, p50, paired ratio
        self.same: dict[int, bool] = {}  # runs the original's kernels (graph.runs_as_original)
        self.recipes: dict[int, str] = {}
        self.format_notes: dict[int, str] = {}  # QDQ vs QOperator (see qoperator)
        self.method_notes: dict[int, str] = {}  # weight-only: rtn vs gptq (see weight_method)
        # Sensitivity only ranks nodes: a few rows rank them as well as many, at a fraction of
        # the cost (46 probes x 64 OCR lines did not fit a 120 s budget).
        self.probe_rows: dict[str, np.ndarray] | None = None
        self.probe_reference: dict[str, np.ndarray] | None = None
        self.probe_labels: np.ndarray | None = None  # a language model's next tokens
        if data.evaluation is not None and reference is not None:
            rows = int(next(iter(data.evaluation.values())).shape[0])
            if rows > SENSITIVITY_ROWS:
                self.probe_rows = _first_rows(data.evaluation)
                self.probe_reference = _first_rows(reference)
                if data.decoder is not None and data.labels is not None:
                    self.probe_labels = data.labels[:SENSITIVITY_ROWS]

    def convert(self, variant: quantize.Variant) -> Path:
        out = self.work / f"candidate-{next(self.counter)}.onnx"
        quantize.convert(
            self.prepared,
            out,
            settings=self.settings,
            variant=variant,
            calibration=self.data.calibration,
            specs=self.data.specs,
            workdir=self.work,
        )
        return out

    def evaluate(self, path: Path) -> Figures | None:
        data = self.data
        if data.evaluation is None or self.reference is None:
            return None
        try:
            got = data.outputs(path, data.evaluation)
            return compare(self.reference, got, data.float_outputs, data.labels, data.kind)
        except Exception as exc:
            raise CompressError(
                f"evaluating the {self.settings.mode} model failed: {one_line(str(exc), 240)}",
                FailureKind.INTERNAL,
            ) from None

    def attempt(self, variant: quantize.Variant) -> search.Attempt:
        path = self.convert(variant)
        figures = self.evaluate(path)
        reasons: tuple[str, ...] = ()
        if figures is not None:
            reasons = tuple(
                verdict(
                    figures,
                    self.settings.max_accuracy_drop,
                    self.min_agreement,
                    tasks.DEFAULT_TASK_THRESHOLDS.get(figures.kind or ""),
                )
            )
        return search.Attempt(variant, figures, reasons, path)

    def sensitivity(self, node: str, weight_only: bool = False) -> float:
        variant = quantize.Variant(
            calibration_method=self.settings.calibration_method, only_node=node
        )
        if weight_only:  # weight-only: every other weight keeps fp32, this one goes int8
            others = tuple(n for n, _ in self.prepared.weight_candidates if n != node)
            variant = quantize.Variant(nodes_to_exclude=others, weight_only=True)
        path = self.convert(variant)
        if self.probe_rows is not None and self.probe_reference is not None:
            got = self.data.outputs(path, self.probe_rows)
            path.unlink(missing_ok=True)
            figures: Figures | None = compare(
                self.probe_reference,
                got,
                self.data.float_outputs,
                self.probe_labels,
                self.data.kind,
            )
        else:
            figures = self.evaluate(path)
            path.unlink(missing_ok=True)
        return figures.relative_error if figures is not None else 0.0

    def accuracy_search(self) -> tuple[search.Attempt, search.SearchLog]:
        """The first conversion, then the accuracy search when it fails the gate."""
        settings = self.settings
        first = self.attempt(quantize.Variant(calibration_method=settings.calibration_method))
        if self.data.evaluation is None or first.passed:
            return first, search.SearchLog(attempts=[first])
        return search.run_search(
            first,
            candidates=self.prepared.candidates,
            methods=search.method_order(settings.calibration_method, CALIBRATION_METHODS),
            attempt=self.attempt,
            sensitivity=self.sensitivity,
            budget_s=settings.search_budget_s,
            clock=self.clock,
        )

    def time_it(self, candidate: search.Attempt, feed: dict[str, np.ndarray]) -> None:
        if not self.request.measure_latency or id(candidate) in self.timings:
            return
        try:
            p50s, ratios = runner.paired_latency([self.source, candidate.artifact], feed)
        except Exception as exc:
            raise CompressError(
                f"latency measurement failed: {one_line(str(exc), 200)}", FailureKind.INTERNAL
            ) from None
        self.timings[id(candidate)] = (p50s[0], p50s[1], ratios[1])
        if candidate.passed and self.int8:
            self.same[id(candidate)] = graph.int8_compute_ops(
                onnx.load_model(str(candidate.artifact))
            ) == 0 and graph.runs_as_original(self.source, candidate.artifact, self.work)

    def slow(self, candidate: search.Attempt) -> bool:
        measured = self.timings.get(id(candidate))
        return (
            measured is not None
            and measured[2] > 1 + search.LATENCY_TOLERANCE
            and not self.same.get(id(candidate), False)
        )

    def wants_weight_only(self, chosen: search.Attempt) -> bool:
        """The search moves on to weight-only int8 when the int8 kernels lose accuracy, run
        slower than fp32 on this CPU, or when the graph weight-only int8 starts from is
        smaller (the int8 kernels start from the pre-processed graph, which can hold more
        weights: silero-vad's 1.4x). Never with a zero budget: that asks for no search."""
        if self.data.evaluation is None or self.settings.search_budget_s <= 0:
            return False
        if self.settings.mode == "fp16":  # fp16 storage with fp32 compute, when fp16 loses
            return not chosen.passed
        return self.int8 and (
            not chosen.passed or self.slow(chosen) or _weight_only_base_is_smaller(self.prepared)
        )

    def weight_only(self, search_log: search.SearchLog) -> search.Attempt:
        """Weight-only int8, searched for the weights to keep fp32 when it fails the gate."""
        light = self.attempt(quantize.Variant(weight_only=True))
        if light.passed or light.figures is None or self.settings.mode == "fp16":
            search_log.attempts.append(light)
            return light
        return search.weight_only_search(
            light,
            candidates=self.prepared.weight_candidates,
            attempt=self.attempt,
            sensitivity=lambda node: self.sensitivity(node, weight_only=True),
            budget_s=self.settings.search_budget_s,
            clock=self.clock,
            log=search_log,
        )

    def qoperator(
        self, chosen: search.Attempt, search_log: search.SearchLog, feed: dict[str, np.ndarray]
    ) -> list[search.Attempt]:
        """The QOperator twin of a passing static-int8 pick, when measurably faster on amd64
        (search.wants_qoperator, search.qoperator_faster); it is logged either way."""
        if not search.wants_qoperator(self.settings.mode, self.settings.target, chosen):
            return []
        twin = self.attempt(dataclasses.replace(chosen.variant, qoperator=True))
        search_log.attempts.append(twin)
        if not twin.passed:
            return []
        self.time_it(twin, feed)
        qdq, qop = (
            self.timings[id(a)][2] if id(a) in self.timings else None for a in (chosen, twin)
        )
        faster = search.qoperator_faster(qdq, qop)
        self.format_notes[id(twin)] = search.qoperator_note(qdq, qop, faster)
        return [twin] if faster else []

    def wants_gptq(self) -> bool:
        """A weight-only mode given calibration data: GPTQ's activations."""
        return self.settings.mode in WEIGHT_ONLY_MODES and self.data.calibration is not None

    def weight_method(self, rtn: search.Attempt, search_log: search.SearchLog) -> search.Attempt:
        """Weight-only modes with calibration data: GPTQ beside round to nearest (with the
        nodes the search kept in float), and the better one goes to the pick (better_method)."""
        calibrated = self.attempt(replace(rtn.variant, weight_method="gptq"))
        search_log.attempts.append(calibrated)
        better, other = better_method(rtn, calibrated)
        self.method_notes[id(other)] = (
            f"{other.variant.weight_method}: not as good as {better.variant.weight_method} "
            f"by the gate (agreement {_shown(other)} vs {_shown(better)})"
            if better.figures is not None
            else "rtn: no evaluation data to judge by; gptq minimises the output error on "
            "the calibration data"
        )
        return better

    def choose(self) -> tuple[search.Attempt, search.SearchLog, dict[int, str]]:
        """Search, time, maybe try weight-only int8, then pick (see the module docstring)."""
        chosen, search_log = self.accuracy_search()
        if self.wants_gptq():
            chosen = self.weight_method(chosen, search_log)
        data = self.data
        feed = data.latency_feed()
        pool: list[search.Attempt] = [chosen]
        self.time_it(chosen, feed)
        pool.extend(self.qoperator(chosen, search_log, feed))
        if self.wants_weight_only(chosen):
            light = self.weight_only(search_log)
            pool.append(light)
            if light.passed:
                self.time_it(light, feed)
        chosen, notes = search.pick(
            pool,
            size=lambda a: Path(a.artifact).stat().st_size,
            latency_ratio=lambda a: self.timings[id(a)][2] if id(a) in self.timings else None,
            runs_as_original=lambda a: self.same.get(id(a), False),
        )
        for key, note in [*self.format_notes.items(), *self.method_notes.items()]:
            notes[key] = f"{notes[key]}; {note}" if key in notes else note
        return chosen, search_log, notes

    def weight_method_of(self, a: search.Attempt) -> str | None:
        """How a weight-only candidate rounded its weights: "rtn" or "gptq" (None otherwise)."""
        return a.variant.weight_method if self.settings.mode in WEIGHT_ONLY_MODES else None

    def recipe_of(self, a: search.Attempt) -> str:
        if id(a) not in self.recipes:
            self.recipes[id(a)] = _recipe(self.settings.mode, a)
        return self.recipes[id(a)]

    def latency(self, chosen: search.Attempt) -> dict[str, Any] | None:
        if id(chosen) not in self.timings:
            return None
        before, after, paired = self.timings[id(chosen)]
        return {
            "original_p50_ms": round(before, 3),
            "compressed_p50_ms": round(after, 3),
            "ratio": round(paired, 4),
            "ratio_method": "median over interleaved rounds of paired block medians",
            "runs": runner.LATENCY_RUNS * 2,
            "batch": 1,
            "intra_op_threads": runner.THREADS,
            "runs_original_kernels": self.same.get(id(chosen), False),
            "slower_than_original": self.slow(chosen),
        }

    def candidates(
        self, attempts: list[search.Attempt], chosen: search.Attempt, notes: dict[int, str]
    ) -> list[dict[str, Any]]:
        """The Pareto table: every candidate the run converted, with its figures."""
        input_size = self.source.stat().st_size
        return [
            {
                "recipe": self.recipe_of(a),
                "weight_method": self.weight_method_of(a),
                "calibration_method": a.variant.calibration_method,
                "kept_in_float": len(a.variant.nodes_to_exclude),
                "bytes": Path(a.artifact).stat().st_size,
                "size_ratio": ratio(Path(a.artifact).stat().st_size, input_size),
                "agreement": None if a.figures is None else a.figures.agreement,
                "task_metric": None if a.figures is None else a.figures.task_metric,
                "latency_ratio": None
                if id(a) not in self.timings
                else round(self.timings[id(a)][2], 4),
                "runs_original_kernels": self.same.get(id(a)),
                "passed": a.passed,
                "chosen": a is chosen,
                "note": notes.get(id(a))
                or ("failed the gate: " + "; ".join(a.reasons) if a.reasons else ""),
            }
            for a in attempts
            if Path(a.artifact).exists()
        ]


@dataclass(frozen=True)
class _Result:
    """What a run decided, for the report: the pick, the search, and the figures around it."""

    chosen: search.Attempt
    search_log: search.SearchLog
    notes: dict[int, str]
    recipe: str
    latency: dict[str, Any] | None
    candidates: list[dict[str, Any]]
    prepared: quantize.Prepared
    min_agreement: float | None


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
    data = _load_data(request, settings, model, label)
    with _quiet_ort_logging():
        reference: dict[str, np.ndarray] | None = None
        if data.evaluation is not None:  # judged before any conversion work: refuse early
            reference = data.outputs(source, data.evaluation)
            _check_judgeable(reference, data.float_outputs, data.labels, data.kind, label)
        prepared = quantize.prepare(model, settings, work, label)
        prepared.statistics = _statistics_rows(data)
        del model
        run = _Run(
            request,
            settings,
            source=source,
            work=work,
            data=data,
            reference=reference,
            prepared=prepared,
            clock=clock,
        )
        result = _decide(run)
    chosen = result.chosen
    artifact: Path = chosen.artifact
    artifact_section = _artifact_section(artifact, chosen.passed)
    block_bits = _block_bits_section(settings, artifact)
    if chosen.passed:
        artifact.rename(staged / MODEL_FILE)
    return _report(
        request,
        settings,
        result,
        digest=digest,
        key=key,
        input_bytes=source.stat().st_size,
        artifact=artifact_section,
        block_bits=block_bits,
        elapsed_s=round(clock() - started, 3),
    )


def _decide(run: _Run) -> _Result:
    chosen, search_log, notes = run.choose()
    return _Result(
        chosen=chosen,
        search_log=search_log,
        notes=notes,
        latency=run.latency(chosen),
        candidates=run.candidates(search_log.attempts, chosen, notes),
        recipe=run.recipe_of(chosen),
        prepared=run.prepared,
        min_agreement=run.min_agreement,
    )


def _report(
    request: Request,
    settings: Settings,
    result: _Result,
    *,
    digest: str,
    key: str,
    input_bytes: int,
    artifact: dict[str, Any],
    block_bits: dict[str, Any] | None,
    elapsed_s: float,
) -> dict[str, Any]:
    chosen, prepared = result.chosen, result.prepared
    figures = chosen.figures
    return {
        "schema": SCHEMA,
        "result": "passed" if chosen.passed else "gate-failed",
        "key": key,
        "cache_hit": False,
        "tool": tool_versions(),
        "input": {"source": display_uri(request.source), "sha256": digest, "bytes": input_bytes},
        "settings": settings.canonical(),
        "effective": _effective_section(settings, result),
        "pruning": None
        if prepared.pruning is None
        else {
            "tensors": prepared.pruning.tensors,
            "parameters": prepared.pruning.parameters,
            "zeroed": prepared.pruning.zeroed,
        },
        "artifact": artifact,
        "sizes": _sizes_section(artifact, input_bytes),
        "accuracy": None if figures is None else figures.as_dict(),
        "gate": _gate_section(settings, chosen, result.min_agreement),
        "latency": result.latency,
        "kept_in_float": _kept_section(chosen, prepared, result.search_log),
        "activations": _activations_section(settings, result),
        "block_bits": block_bits,
        "candidates": result.candidates,
        "search": _search_section(settings, result.search_log),
        "elapsed_s": elapsed_s,
    }


def _activations_section(settings: Settings, result: _Result) -> dict[str, Any]:
    chosen = result.chosen
    if settings.mode in WEIGHT_ONLY_MODES:
        return {
            "int8": False,
            "reason": f"{settings.mode}: block-quantized weights dequantized in the kernel "
            "(MatMulNBits, GatherBlockQuantized); on CPU targets MatMulNBits quantizes "
            "activation blocks to int8 on the fly (accuracy_level 4)",
        }
    if settings.mode == "fp16":
        fp32 = chosen.variant.weight_only
        return {
            "int8": False,
            "fp16_compute": not fp32,
            "reason": "fp16 weights, fp32 compute: full fp16 failed the gate; "
            + (result.notes.get(id(chosen)) or "")
            if fp32
            else "fp16 weights and ops, inputs and outputs fp32 (keep_io_types)",
        }
    return {
        "int8": not chosen.variant.weight_only,
        "reason": "weight-only int8: every op computes in fp32 from int8-stored weights; "
        + (result.notes.get(id(chosen)) or "")
        if chosen.variant.weight_only
        else "int8 kernels where the quantizer placed them; other weights stored int8",
    }


def _block_bits_section(settings: Settings, artifact: Path) -> dict[str, Any] | None:
    """Weight-only modes: which nodes hold how many bits (the ends of a 4-bit model keep 8;
    see weightonly)."""
    if settings.mode not in WEIGHT_ONLY_MODES or not Path(artifact).is_file():
        return None
    found = weightonly.block_bits(onnx.load_model(str(artifact), load_external_data=False))
    return {
        "counts": {bits: len(names) for bits, names in sorted(found.items())},
        "eight_bit_ends": found.get("8", []) if settings.mode == "int4-weight" else [],
    }


def _artifact_section(artifact: Path, passed: bool) -> dict[str, Any]:
    return {
        "file": MODEL_FILE if passed else None,
        "sha256": sha256_file(artifact),
        "bytes": artifact.stat().st_size,
        "zstd_bytes": zstd_size(artifact),
        "kept": passed,
    }


def _sizes_section(artifact: dict[str, Any], input_bytes: int) -> dict[str, Any]:
    artifact_bytes, wire = artifact["bytes"], artifact["zstd_bytes"]
    return {
        "input_bytes": input_bytes,
        "artifact_bytes": artifact_bytes,
        "ratio": ratio(artifact_bytes, input_bytes),
        "wire_bytes": wire,
        "wire_ratio": ratio(wire, input_bytes),
        "wire_codec": "zstd-10",
    }


def _effective_section(settings: Settings, result: _Result) -> dict[str, Any]:
    """What the run actually did, which the settings alone do not say."""
    chosen, prepared = result.chosen, result.prepared
    return {
        "calibration_method": chosen.variant.calibration_method,
        "preprocessing": prepared.preprocessing,
        "opset_upgraded_from": prepared.opset_upgraded_from,
        "quantized_op_types": list(quantize.op_types(settings)),
        "candidate_nodes": len(prepared.candidates),
        "embedding_tables_4bit": list(prepared.embeddings),
        "recipe": result.recipe,
        "weight_method": chosen.variant.weight_method
        if settings.mode in WEIGHT_ONLY_MODES
        else None,
        "reduce_range": settings.reduce_range,
        "output_kind": None if chosen.figures is None else chosen.figures.kind,
    }


def _agreement_source(
    settings: Settings, figures: Figures | None, min_agreement: float | None
) -> str | None:
    if settings.min_agreement is not None:
        return "request"
    if min_agreement is None:
        return None
    if figures is not None and figures.kind == lm_gate.KIND:
        return "default for language models (next-token agreement)"
    return "default for data without labels"


def _gate_section(
    settings: Settings, chosen: search.Attempt, min_agreement: float | None
) -> dict[str, Any]:
    figures = chosen.figures
    return {
        "evaluated": figures is not None,
        "max_accuracy_drop": settings.max_accuracy_drop,
        "min_agreement": min_agreement,
        "min_agreement_source": _agreement_source(settings, figures, min_agreement),
        "min_task_metric": None
        if figures is None
        else tasks.DEFAULT_TASK_THRESHOLDS.get(figures.kind or ""),
        "passed": chosen.passed,
        "reasons": list(chosen.reasons),
    }


def _kept_section(
    chosen: search.Attempt, prepared: quantize.Prepared, search_log: search.SearchLog
) -> list[dict[str, Any]]:
    weight_only = chosen.variant.weight_only
    op_of = dict(prepared.weight_candidates if weight_only else prepared.candidates)
    ranked = search_log.weight_sensitivities if weight_only else search_log.sensitivities
    sens_of = {s.node: s.relative_error for s in ranked}
    return [
        {
            "node": node,
            "op_type": op_of.get(node, "?"),
            # mixed precision: kept weights are stored fp16 and computed in fp32 (see mixed)
            "reason": "accuracy search: among the most sensitive nodes, kept out of int8 "
            "(weights stored fp16, computed in fp32)",
            "sensitivity_relative_error": sens_of.get(node),
        }
        for node in chosen.variant.nodes_to_exclude
    ]


def _search_section(settings: Settings, search_log: search.SearchLog) -> dict[str, Any]:
    return {
        "attempts": [
            {
                "recipe": settings.mode if settings.mode in WEIGHT_ONLY_MODES else a.variant.recipe,
                "weight_method": a.variant.weight_method
                if settings.mode in WEIGHT_ONLY_MODES
                else None,
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
        "weight_only_sensitivity": [
            {"node": s.node, "op_type": s.op_type, "relative_error": s.relative_error}
            for s in search_log.weight_sensitivities
        ],
        "budget_s": settings.search_budget_s,
        "budget_exhausted": search_log.budget_exhausted,
        "elapsed_s": round(search_log.elapsed_s, 3),
    }
