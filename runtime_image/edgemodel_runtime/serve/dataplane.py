"""Owns what both protocols share: request validation, dynamic batching, execution, readiness.

The protocol layers parse their envelope into an `InferRequest` whose tensors are still in wire
form (raw bytes or a value list); the dataplane checks them against the model (name, version,
input names, datatypes, shapes, requested outputs) before decoding, so each failure gets a
message naming the problem, then runs them — merged with other requests by the `Batcher` when
the model has a dynamic batch dimension. Execution happens on a thread pool so the event loop
keeps serving other requests while onnxruntime computes (its `run` releases the GIL). The one
exception: a model measured at warm-up to run faster than the thread hand-off itself costs
(~100 µs) runs on the loop: handing such runs to threads under load was measured to be several
times slower, because each result waits for the GIL held by the busy loop.

It also owns admission (docs/architecture.md, "Serving boundary"): a request is admitted before
its body is read, or refused at once — 503 / RESOURCE_EXHAUSTED when the in-flight count or the
buffered-body budget is spent, 413 when it is larger than the model's largest valid request —
so overload is shed instead of queued without bound. And it decides who is to blame: a client's
own `timeout` parameter expiring is a client outcome, and an onnxruntime failure on input
shapes this process has never run successfully is the client's shape, not a server fault.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import ctypes
import enum
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from edgemodel_runtime import __version__

from .errors import ErrorKind, ServeError, Wire, invalid, not_found
from .metrics import ServeMetrics
from .tensors import CONFIG_TYPES, NUMPY_DTYPES, Array, TensorSpec, from_list, from_raw

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MODEL_VERSION = "1"
# A thread hand-off costs ~50-100 µs of loop and wake-up time; a model whose largest batch runs
# faster than this is cheaper to run on the loop itself than to ship to a worker thread.
INLINE_THRESHOLD_S = 100e-6

# Request size: a JSON number is at most this many characters with its separator
# ("-1.2345678901234567e-05," is 24), plus room for the envelope (names, shapes, parameters).
JSON_BYTES_PER_ELEMENT = 24
ENVELOPE_BYTES = 64 << 10
# Models with dynamic non-batch dims or string inputs have no largest request: this one.
FALLBACK_REQUEST_BYTES = 64 << 20
MAX_DERIVED_REQUEST_BYTES = 1 << 30
# Buffered request bodies may hold this many largest requests at once (at least the floor),
# but never more than this share of the container's memory limit.
BODY_BUDGET_REQUESTS = 4
BODY_BUDGET_FLOOR = 256 << 20
BODY_BUDGET_MEMORY_SHARE = 4  # a quarter: decoding, onnxruntime and Python need the rest
# Queue depth per CPU, in requests (times the batch size when batching).
INFLIGHT_PER_CPU = 4
INFLIGHT_FLOOR = 16
# The largest client `parameters.timeout` accepted: int64 microseconds, what tritonclient sends.
MAX_TIMEOUT_US = (1 << 63) - 1
# Input shapes remembered as "onnxruntime has run this" (bounded: clients choose shapes).
MAX_VERIFIED_SHAPES = 4096
RETRY_AFTER_S = 1
PR_SET_PDEATHSIG = 1  # prctl(2)


def request_size_limit(inputs: Sequence[TensorSpec], rows: int, batching: bool) -> int:
    """The body size of the model's largest valid request, JSON-encoded (the larger form).

    Fixed dims times `rows` on the batch dim when batching; a model with any other dynamic
    dim or a string input has no largest request and gets FALLBACK_REQUEST_BYTES.
    """
    elements = 0
    raw = 0
    for spec in inputs:
        dims = spec.shape[1:] if batching else spec.shape
        if spec.datatype == "BYTES" or any(dim < 0 for dim in dims):
            return FALLBACK_REQUEST_BYTES
        count = math.prod(dims) * (rows if batching else 1)
        elements += count
        raw += count * NUMPY_DTYPES[spec.datatype].itemsize
    largest = max(raw, elements * JSON_BYTES_PER_ELEMENT) + ENVELOPE_BYTES
    return min(largest, MAX_DERIVED_REQUEST_BYTES)


def default_max_inflight(cpus: int, batch_rows: int) -> int:
    """In-flight cap: a few full batches (or requests) queued per CPU, never below the floor."""
    return max(INFLIGHT_FLOOR, INFLIGHT_PER_CPU * max(1, cpus) * max(1, batch_rows))


def default_body_budget(request_limit: int, memory_limit: int | None = None) -> int:
    """Bytes of request bodies the server buffers at once before shedding.

    A few largest requests (at least the floor), capped at a quarter of the memory limit when
    there is one — but always room for one largest request, or it could never be served.
    """
    budget = max(BODY_BUDGET_FLOOR, BODY_BUDGET_REQUESTS * request_limit)
    if memory_limit is not None:
        budget = min(budget, memory_limit // BODY_BUDGET_MEMORY_SHARE)
    return max(budget, request_limit)


def parse_memory_limit(text: str | None) -> int | None:
    """A cgroup memory limit file's contents in bytes; None when unlimited or unreadable."""
    if text is None:
        return None
    value = text.strip()
    if not value.isdigit():  # v2 "max", empty, garbage
        return None
    limit = int(value)
    return None if limit >= 1 << 62 else limit  # v1 "unlimited" is a page-rounded 2**63


def read_memory_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """This process's cgroup memory limit (v2 memory.max, else v1 memory.limit_in_bytes)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            candidate = root / relative / "memory.max"
        elif "memory" in controllers.split(","):
            candidate = root / "memory" / relative / "memory.limit_in_bytes"
        else:
            continue
        try:
            limit = parse_memory_limit(candidate.read_text())
        except OSError:
            continue
        if limit is not None:
            return limit
    return None


def die_with_parent(parent_pid: int) -> None:
    """In the decoder process: exit when the server does, even if it was SIGKILLed."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere best effort
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the server died before prctl took effect
        os._exit(1)


def check_timeout_us(value: Any) -> float | None:
    """A client's `timeout` parameter (integer µs, 0 = none) in seconds; bad values raise 400."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TIMEOUT_US:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise invalid(
            f"'timeout' must be an integer number of microseconds from 0 to {MAX_TIMEOUT_US}, "
            f"got {shown}"
        )
    return value / 1e6 if value else None


class Runner(Protocol):
    """What the dataplane needs from a model (implemented by `model.OnnxModel`)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    output_names: list[str]

    @property
    def batchable(self) -> bool: ...

    def run(self, feeds: Mapping[str, Array], output_names: Sequence[str]) -> list[Array]: ...

    def warm_up(self, batch: int = 1, runs: int = 3) -> float: ...


@dataclass
class InputTensor:
    """A request input as it came off the wire: exactly one of `raw` or `values` is set."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | memoryview | None = None
    values: Any = None


@dataclass
class InferRequest:
    """A protocol-neutral inference request (tensors still in wire form)."""

    model_name: str
    model_version: str
    inputs: list[InputTensor]
    output_names: list[str] | None = None  # None: every model output
    request_id: str = ""
    timeout_s: float | None = None  # the client's own deadline, if it sent one


@dataclass
class InferResponse:
    """The dataplane's answer: each requested output's spec and array, in request order."""

    model_name: str
    model_version: str
    request_id: str
    outputs: list[tuple[TensorSpec, Array]] = field(default_factory=list)


@dataclass(frozen=True)
class DataPlaneConfig:
    """Serving policy for one model: batching, timeouts and where onnxruntime runs."""

    name: str
    max_batch_size: int = 32  # 0 or 1 disables dynamic batching
    max_queue_delay_s: float = 0.0
    request_timeout_s: float = 30.0
    execution: str = "auto"  # auto | thread | inline
    workers: int = 2
    # Admission; 0 = derived at start from the model, the CPUs and the batch size.
    max_inflight: int = 0
    max_inflight_bytes: int = 0
    max_request_bytes: int = 0
    cpus: int = 1
    memory_limit: int | None = None  # the container's, in bytes; caps the body budget


class ServerState(enum.Enum):
    """Where the server is in its life; it only moves forward (docs/architecture.md).

    LOADING: listening, the model downloads and warms up (live, not ready).
    READY: serving and reported ready.
    LEAVING: SIGTERM seen with a shutdown delay: reported not ready, still serving.
    DRAINING: refusing new requests (UNAVAILABLE), in-flight ones finishing.
    CLOSED: batcher stopped, executors shut down.
    """

    LOADING = "loading"
    READY = "ready"
    LEAVING = "leaving"
    DRAINING = "draining"
    CLOSED = "closed"


class DataPlane:
    """The served model behind the v2 endpoints (KServe's `V2Endpoints(dataplane)` split)."""

    def __init__(self, config: DataPlaneConfig, metrics: ServeMetrics) -> None:
        # The model arrives later (`start`): the protocol endpoints answer live / not-ready
        # while it downloads and warms up, so probes can tell "loading" from "dead".
        self.config = config
        self.metrics = metrics
        self.name = config.name
        self._model: Runner | None = None
        self._inputs: dict[str, TensorSpec] = {}
        self._outputs: dict[str, TensorSpec] = {}
        self.batching = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, config.workers), thread_name_prefix="ort"
        )
        # inline: always on the loop; thread: always on a worker; auto: decided at warm-up.
        self._inline = config.execution == "inline"
        self._batcher: Batcher | None = None
        self._state = ServerState.LOADING
        self._inflight = 0
        self._inflight_bytes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Set by `start` (from the model unless configured); nothing is admitted before that.
        self.request_limit = config.max_request_bytes or FALLBACK_REQUEST_BYTES
        self.max_inflight = config.max_inflight or INFLIGHT_FLOOR
        self.max_inflight_bytes = config.max_inflight_bytes or BODY_BUDGET_FLOOR
        self._verified: set[tuple[tuple[str, tuple[int, ...]], ...]] = set()
        # Large JSON bodies decode in one child process, one at a time (started on first use):
        # the loop keeps the GIL and only one body's worth of Python objects exists at once.
        self._decoder: concurrent.futures.ProcessPoolExecutor | None = None

    @property
    def model(self) -> Runner:
        if self._model is None:
            raise ServeError(ErrorKind.UNAVAILABLE, f"model {self.name!r} is still loading")
        return self._model

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return self._executor

    async def decode(
        self, function: Callable[[bytes | bytearray], _T], text: bytes | bytearray
    ) -> _T:
        """`function(text)` in the decoder process (a fresh one if the last one died)."""
        if self._decoder is None:
            self._decoder = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),  # no fork of a gRPC process
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._decoder, function, text)
        except concurrent.futures.BrokenExecutor:
            self._decoder = None
            log.error("the JSON decoder process died; starting a new one for the next request")
            raise ServeError(ErrorKind.INTERNAL, "the JSON decoder process died") from None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is ServerState.READY

    @property
    def serving(self) -> bool:
        """Takes inference requests: ready, or leaving (not ready, but still serving)."""
        return self._state is ServerState.READY or self._state is ServerState.LEAVING

    def announce_shutdown(self) -> None:
        """Report not ready but keep serving, while load balancers take this endpoint out."""
        if self._state is ServerState.READY:
            self._state = ServerState.LEAVING

    async def start(self, model: Runner) -> None:
        """Attach the loaded model, warm it up (off the loop), start the batcher, become ready."""
        self._model = model
        self._inputs = {spec.name: spec for spec in model.inputs}
        self._outputs = {spec.name: spec for spec in model.outputs}
        self.batching = model.batchable and self.config.max_batch_size > 1
        loop = asyncio.get_running_loop()
        largest = self.config.max_batch_size if self.batching else 1
        self.request_limit = self.config.max_request_bytes or request_size_limit(
            model.inputs, largest, self.batching
        )
        self.max_inflight = self.config.max_inflight or default_max_inflight(
            self.config.cpus, largest
        )
        self.max_inflight_bytes = self.config.max_inflight_bytes or default_body_budget(
            self.request_limit, self.config.memory_limit
        )
        # The shapes the warm-up runs (model._zeros: dynamic dims 1, the batch dim aside).
        self._verified.add(
            self._signature(
                {
                    spec.name: tuple(1 if dim < 0 else dim for dim in spec.shape)
                    for spec in model.inputs
                }
            )
        )
        await loop.run_in_executor(self._executor, self.model.warm_up, 1)
        best = await loop.run_in_executor(self._executor, self.model.warm_up, largest)
        if self.config.execution == "auto":
            self._inline = best < INLINE_THRESHOLD_S
        log.info(
            "model warmed up: model=%s largest_batch=%d best_run_us=%.0f inline=%s batching=%s "
            "max_request_bytes=%d max_inflight=%d max_inflight_bytes=%d",
            self.name,
            largest,
            best * 1e6,
            self._inline,
            self.batching,
            self.request_limit,
            self.max_inflight,
            self.max_inflight_bytes,
        )
        if self.batching:
            self._batcher = Batcher(
                self._execute,
                max_batch_size=self.config.max_batch_size,
                max_queue_delay_s=self.config.max_queue_delay_s,
                metrics=self.metrics,
            )
            self._batcher.start()
        if self._state is ServerState.LOADING:  # a drain begun during warm-up stays a drain
            self._state = ServerState.READY

    def stop_accepting(self) -> None:
        """Not ready from now on; new inference requests get UNAVAILABLE."""
        if self._state is not ServerState.CLOSED:
            self._state = ServerState.DRAINING

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is in flight (True) or the grace period ends (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._state = ServerState.CLOSED
        if self._batcher is not None:
            await self._batcher.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one request in flight (metrics gauge and the drain wait) for its whole life."""
        self._inflight += 1
        self._idle.clear()
        self.metrics.inflight.inc()
        try:
            yield
        finally:
            self._inflight -= 1
            self.metrics.inflight.dec()
            if self._inflight == 0:
                self._idle.set()

    def admit(self, body_bytes: int) -> Admission:
        """Admit one request holding `body_bytes` of body (`with dataplane.admit(n):`), or refuse.

        Raises UNAVAILABLE when not serving, TOO_LARGE past the request limit, OVERLOADED when
        the in-flight cap or the body budget is spent — all before any byte of the body is read.
        The admission holds its slot and bytes until the `with` block ends.
        """
        if not self.serving:
            raise ServeError(ErrorKind.UNAVAILABLE, f"model {self.name!r} is not ready")
        if body_bytes > self.request_limit:
            raise ServeError(
                ErrorKind.TOO_LARGE,
                f"request body of {body_bytes} bytes exceeds the limit of {self.request_limit} "
                "bytes (the model's largest valid request)",
            )
        if self._inflight >= self.max_inflight:
            raise ServeError(
                ErrorKind.OVERLOADED,
                f"server at capacity ({self.max_inflight} requests in flight), retry later",
            )
        if self._inflight_bytes + body_bytes > self.max_inflight_bytes:
            raise ServeError(
                ErrorKind.OVERLOADED,
                f"server at capacity ({self._inflight_bytes} bytes of request bodies in "
                "flight), retry later",
            )
        return Admission(self, body_bytes)

    async def instrumented(
        self, wire: Wire, body_bytes: int, work: Callable[[], Awaitable[_T]]
    ) -> _T:
        """Admit one inference request, run `work`, and record it: the path of both protocols.

        The outcome goes to the request metrics under `wire`'s code (refusals included); a
        `ServeError` propagates for the protocol to put on the wire, an unexpected exception
        becomes INTERNAL (logged with its traceback), and a cancellation (the client went
        away) is recorded as DISCONNECTED and propagates.
        """
        started = time.perf_counter()
        kind: ErrorKind | None = ErrorKind.INTERNAL
        try:
            with self.admit(body_bytes):
                result = await work()
            kind = None
            return result
        except ServeError as exc:
            kind = exc.kind
            raise
        except asyncio.CancelledError:  # aiohttp cancels the handler / the RPC's deadline passed
            kind = ErrorKind.DISCONNECTED
            raise
        except Exception as exc:  # the server must answer, whatever the request did
            log.exception("unexpected error handling a %s inference request", wire.value)
            raise ServeError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}") from None
        finally:
            self.metrics.observe_request(
                wire.code(kind), time.perf_counter() - started, timed=kind is None or kind.timed
            )

    def _enter(self, body_bytes: int) -> None:
        self._inflight += 1
        self._inflight_bytes += body_bytes
        self._idle.clear()
        self.metrics.inflight.inc()

    def _leave(self, body_bytes: int) -> None:
        self._inflight -= 1
        self._inflight_bytes -= body_bytes
        self.metrics.inflight.dec()
        if self._inflight == 0:
            self._idle.set()

    # --- metadata --------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "edgemodel",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_configuration"],
        }

    def check_model(self, name: str, version: str = "") -> None:
        if name != self.name:
            raise not_found(f"unknown model {name!r} (this server serves {self.name!r})")
        if version not in ("", MODEL_VERSION):
            raise not_found(
                f"unknown version {version!r} of model {name!r} (available: {MODEL_VERSION})"
            )

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.check_model(name, version)
        except ServeError:
            return False
        return self.ready

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        self.check_model(name, version)
        return {
            "name": self.name,
            "versions": [MODEL_VERSION],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.metadata() for spec in self.model.inputs],
            "outputs": [spec.metadata() for spec in self.model.outputs],
        }

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        """Triton's model configuration (the batch dimension is implicit when batching)."""
        self.check_model(name, version)

        def entry(spec: TensorSpec, key: str) -> dict[str, Any]:
            dims = list(spec.shape[1:] if self.batching else spec.shape)
            return {"name": spec.name, "data_type": CONFIG_TYPES[spec.datatype], key: dims}

        config: dict[str, Any] = {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": self.config.max_batch_size if self.batching else 0,
            "input": [entry(spec, "dims") for spec in self.model.inputs],
            "output": [entry(spec, "dims") for spec in self.model.outputs],
        }
        if self.batching:
            config["dynamic_batching"] = {
                "max_queue_delay_microseconds": round(self.config.max_queue_delay_s * 1e6)
            }
        return config

    # --- inference -------------------------------------------------------------------------

    def validate(self, request: InferRequest) -> tuple[dict[str, Array], list[str], int]:
        """Check a request against the model and decode its tensors: (feeds, outputs, rows)."""
        self.check_model(request.model_name, request.model_version)
        feeds: dict[str, Array] = {}
        for tensor in request.inputs:
            if tensor.name in self._inputs and tensor.name in feeds:
                raise invalid(f"input {tensor.name!r} given more than once")
            feeds[tensor.name] = self._feed(tensor)
        missing = [name for name in self._inputs if name not in feeds]
        if missing:
            raise invalid(f"missing input {', '.join(repr(name) for name in missing)}")
        return feeds, self._output_names(request.output_names), self._rows(feeds)

    def _feed(self, tensor: InputTensor) -> Array:
        """One input checked against its spec (name, datatype, shape) and decoded."""
        spec = self._inputs.get(tensor.name)
        if spec is None:
            raise invalid(
                f"unknown input {tensor.name!r} (model {self.name!r} takes "
                f"{', '.join(self._inputs)})"
            )
        if tensor.datatype != spec.datatype:
            if tensor.datatype == "BYTES":
                raise invalid(
                    f"input {tensor.name!r}: BYTES (string) data is not accepted, the model "
                    f"takes {spec.datatype}"
                )
            raise invalid(
                f"input {tensor.name!r}: datatype {tensor.datatype} does not match the "
                f"model's {spec.datatype}"
            )
        if len(tensor.shape) != len(spec.shape) or any(
            want >= 0 and got != want for got, want in zip(tensor.shape, spec.shape, strict=False)
        ):
            raise invalid(
                f"input {tensor.name!r}: shape {list(tensor.shape)} does not match the "
                f"model's {list(spec.shape)} (-1 is any size)"
            )
        if tensor.raw is not None:
            return from_raw(tensor.name, spec.datatype, tensor.shape, tensor.raw)
        return from_list(tensor.name, spec.datatype, tensor.shape, tensor.values)

    def _output_names(self, requested: Sequence[str] | None) -> list[str]:
        """The outputs to compute: those requested (each once, known to the model) or all."""
        if requested is None:
            return self.model.output_names
        names = list(dict.fromkeys(requested))
        for name in names:
            if name not in self._outputs:
                raise invalid(
                    f"unknown output {name!r} (model {self.name!r} produces "
                    f"{', '.join(self._outputs)})"
                )
        return names

    def _rows(self, feeds: Mapping[str, Array]) -> int:
        """The request's batch rows: the shared leading dim when batching, else for metrics."""
        if self.batching:
            sizes = {array.shape[0] for array in feeds.values()}
            if len(sizes) != 1:
                raise invalid(f"inputs disagree on the batch (first) dimension: {sorted(sizes)}")
            return int(sizes.pop())
        # Only for the batch-size metric: the leading dim, 1 for scalar-only inputs.
        first = next(iter(feeds.values()), None)
        return first.shape[0] if first is not None and first.ndim else 1

    async def infer(self, request: InferRequest) -> InferResponse:
        if not self.serving:
            raise ServeError(ErrorKind.UNAVAILABLE, f"model {self.name!r} is not ready")
        return await self.execute(request, self.validate(request))

    async def execute(
        self, request: InferRequest, validated: tuple[dict[str, Array], list[str], int]
    ) -> InferResponse:
        """Run a request `validate` accepted (possibly on another thread) and answer it."""
        feeds, names, rows = validated
        if self._batcher is None and self._inline:
            # Runs to completion without yielding to the loop, so no timeout could ever fire;
            # skipping the timer saves ~4 us of a ~200 us request.
            self.metrics.batch_size.observe(rows)
            arrays = self._run_model(feeds, names)
            return self._response(request, names, arrays)
        timeout = self.config.request_timeout_s
        clients = request.timeout_s is not None and 0 < request.timeout_s < timeout
        if clients and request.timeout_s is not None:
            timeout = request.timeout_s
        try:
            async with asyncio.timeout(timeout):
                if self._batcher is not None:
                    arrays = await self._batcher.submit(feeds, names, rows)
                else:
                    self.metrics.batch_size.observe(rows)
                    arrays = await self._execute(feeds, names)
        except TimeoutError:
            if clients:  # the client chose this deadline: its outcome, not a slow server
                raise ServeError(
                    ErrorKind.CLIENT_TIMEOUT,
                    f"the request's timeout parameter ({round(timeout * 1e6)} us) expired "
                    "before inference finished",
                ) from None
            raise ServeError(
                ErrorKind.DEADLINE_EXCEEDED, f"inference did not finish within {timeout:g} s"
            ) from None
        return self._response(request, names, arrays)

    def _response(
        self, request: InferRequest, names: list[str], arrays: list[Array]
    ) -> InferResponse:
        outputs = [(self._outputs[name], array) for name, array in zip(names, arrays, strict=True)]
        return InferResponse(self.name, MODEL_VERSION, request.request_id, outputs)

    async def _execute(self, feeds: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
        if self._inline:
            return self._run_model(feeds, names)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_model, feeds, names)

    def _signature(
        self, shapes: Mapping[str, tuple[int, ...]]
    ) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The client-chosen part of the input shapes (all but the batch dim when batching)."""
        return tuple(
            sorted((name, shape[1:] if self.batching else shape) for name, shape in shapes.items())
        )

    def _run_model(self, feeds: Mapping[str, Array], names: Sequence[str]) -> list[Array]:
        """Run onnxruntime; a failure on shapes it never ran before is the client's shape."""
        signature = self._signature({name: array.shape for name, array in feeds.items()})
        try:
            arrays = self.model.run(feeds, names)
        except ServeError as exc:
            if exc.kind is ErrorKind.INTERNAL and signature not in self._verified:
                shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in feeds.items())
                raise ServeError(
                    ErrorKind.INVALID_ARGUMENT,
                    f"onnxruntime rejected the input shapes ({shapes}): {exc.message}",
                ) from None
            raise
        if len(self._verified) < MAX_VERIFIED_SHAPES:
            self._verified.add(signature)
        return arrays


class Admission:
    """One admitted request's slot and body bytes (a plain class: this is the hot path)."""

    __slots__ = ("_body_bytes", "_dataplane")

    def __init__(self, dataplane: DataPlane, body_bytes: int) -> None:
        self._dataplane = dataplane
        self._body_bytes = body_bytes

    def __enter__(self) -> None:
        self._dataplane._enter(self._body_bytes)

    def __exit__(self, *_exc: object) -> None:
        self._dataplane._leave(self._body_bytes)


Execute = Callable[[Mapping[str, Array], Sequence[str]], Awaitable[list[Array]]]


@dataclass
class _Pending:
    feeds: dict[str, Array]
    names: list[str]
    rows: int
    key: tuple[tuple[int, ...], ...]  # non-batch dims: only equal keys can be concatenated
    future: asyncio.Future[list[Array]]
    enqueued: float


class Batcher:
    """Dynamic batching: merge queued requests along dim 0 into one run, split the results.

    One batch executes at a time. While it runs, new requests queue up and the next batch takes
    all of them (up to `max_batch_size` rows), so batches grow with load without a fixed delay;
    `max_queue_delay_s` > 0 additionally waits that long for a batch to fill. A request that
    alone reaches `max_batch_size` rows runs by itself rather than being refused.
    """

    def __init__(
        self,
        execute: Execute,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        metrics: ServeMetrics,
    ) -> None:
        self._execute = execute
        self._max_rows = max_batch_size
        self._delay = max_queue_delay_s
        self._metrics = metrics
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(
                    ServeError(ErrorKind.UNAVAILABLE, "server is shutting down")
                )
        self._queue.clear()

    async def submit(self, feeds: dict[str, Array], names: list[str], rows: int) -> list[Array]:
        loop = asyncio.get_running_loop()
        key = tuple(array.shape[1:] for array in feeds.values())
        future: asyncio.Future[list[Array]] = loop.create_future()
        self._queue.append(_Pending(feeds, names, rows, key, future, time.perf_counter()))
        self._arrived.set()
        # If the caller's timeout cancels this wait, the future is cancelled and the batcher
        # skips it (or drops its result if it was already running).
        return await future

    def _take(self, batch: list[_Pending], rows: int) -> int:
        """Move compatible queued requests into `batch` while they fit; returns total rows."""
        key = batch[0].key
        kept: collections.deque[_Pending] = collections.deque()
        while self._queue:
            pending = self._queue.popleft()
            if pending.future.done():
                continue
            if pending.key == key and rows + pending.rows <= self._max_rows:
                batch.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
                if rows >= self._max_rows:
                    break
        kept.extend(self._queue)
        self._queue = kept
        return rows

    async def _loop(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._queue.popleft()
            if first.future.done():
                continue
            batch = [first]
            rows = self._take(batch, first.rows)
            if self._delay > 0:
                deadline = first.enqueued + self._delay
                while rows < self._max_rows:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._arrived.wait()
                    rows = self._take(batch, rows)
            await self._run(batch, rows)

    async def _run(self, batch: list[_Pending], rows: int) -> None:
        started = time.perf_counter()
        for pending in batch:
            self._metrics.queue_duration.observe(started - pending.enqueued)
        self._metrics.batch_size.observe(max(rows, 1))
        names = _union(pending.names for pending in batch)
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {
                name: np.concatenate([pending.feeds[name] for pending in batch])
                for name in batch[0].feeds
            }
        try:
            arrays = await self._execute(feeds, names)
        except ServeError as exc:
            _fail_all(batch, exc)
            return
        except Exception as exc:  # never let one bad batch kill the batcher task
            log.exception("batch execution failed: rows=%d requests=%d", rows, len(batch))
            _fail_all(batch, ServeError(ErrorKind.INTERNAL, f"inference failed: {exc}"))
            return
        _answer_all(batch, names, arrays)


def _fail_all(batch: list[_Pending], error: ServeError) -> None:
    """Fail every request of the batch still waiting for its result."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _answer_all(batch: list[_Pending], names: list[str], arrays: list[Array]) -> None:
    """Hand each waiting request its rows of the outputs it asked for."""
    index = {name: position for position, name in enumerate(names)}
    offset = 0
    for pending in batch:
        end = offset + pending.rows
        if not pending.future.done():
            if len(batch) == 1:
                result = [arrays[index[name]] for name in pending.names]
            else:
                result = [arrays[index[name]][offset:end] for name in pending.names]
            pending.future.set_result(result)
        offset = end


def _union(groups: Iterable[list[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for name in group:
            seen[name] = None
    return list(seen)
