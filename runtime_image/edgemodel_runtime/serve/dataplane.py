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
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edgemodel_runtime import __version__

from .errors import ErrorKind, ServeError, invalid, not_found
from .metrics import ServeMetrics
from .tensors import CONFIG_TYPES, Array, TensorSpec, from_list, from_raw

log = logging.getLogger(__name__)

MODEL_VERSION = "1"
# A thread hand-off costs ~50-100 µs of loop and wake-up time; a model whose largest batch runs
# faster than this is cheaper to run on the loop itself than to ship to a worker thread.
INLINE_THRESHOLD_S = 100e-6


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
        self._ready = False
        self._draining = False
        self._leaving = False  # SIGTERM seen: not ready, still serving (see announce_shutdown)
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def model(self) -> Runner:
        if self._model is None:
            raise ServeError(ErrorKind.UNAVAILABLE, f"model {self.name!r} is still loading")
        return self._model

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        return self._executor

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready and not self._draining and not self._leaving

    def announce_shutdown(self) -> None:
        """Report not ready but keep serving, while load balancers take this endpoint out."""
        self._leaving = True

    async def start(self, model: Runner) -> None:
        """Attach the loaded model, warm it up (off the loop), start the batcher, become ready."""
        self._model = model
        self._inputs = {spec.name: spec for spec in model.inputs}
        self._outputs = {spec.name: spec for spec in model.outputs}
        self.batching = model.batchable and self.config.max_batch_size > 1
        loop = asyncio.get_running_loop()
        largest = self.config.max_batch_size if self.batching else 1
        await loop.run_in_executor(self._executor, self.model.warm_up, 1)
        best = await loop.run_in_executor(self._executor, self.model.warm_up, largest)
        if self.config.execution == "auto":
            self._inline = best < INLINE_THRESHOLD_S
        log.info(
            "model warmed up: model=%s largest_batch=%d best_run_us=%.0f inline=%s batching=%s",
            self.name,
            largest,
            best * 1e6,
            self._inline,
            self.batching,
        )
        if self.batching:
            self._batcher = Batcher(
                self._execute,
                max_batch_size=self.config.max_batch_size,
                max_queue_delay_s=self.config.max_queue_delay_s,
                metrics=self.metrics,
            )
            self._batcher.start()
        self._ready = True

    def stop_accepting(self) -> None:
        """Not ready from now on; new inference requests get UNAVAILABLE."""
        self._draining = True

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is in flight (True) or the grace period ends (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

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
            spec = self._inputs.get(tensor.name)
            if spec is None:
                raise invalid(
                    f"unknown input {tensor.name!r} (model {self.name!r} takes "
                    f"{', '.join(self._inputs)})"
                )
            if tensor.name in feeds:
                raise invalid(f"input {tensor.name!r} given more than once")
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
                want >= 0 and got != want
                for got, want in zip(tensor.shape, spec.shape, strict=False)
            ):
                raise invalid(
                    f"input {tensor.name!r}: shape {list(tensor.shape)} does not match the "
                    f"model's {list(spec.shape)} (-1 is any size)"
                )
            if tensor.raw is not None:
                feeds[tensor.name] = from_raw(tensor.name, spec.datatype, tensor.shape, tensor.raw)
            else:
                feeds[tensor.name] = from_list(
                    tensor.name, spec.datatype, tensor.shape, tensor.values
                )
        missing = [name for name in self._inputs if name not in feeds]
        if missing:
            raise invalid(f"missing input {', '.join(repr(name) for name in missing)}")
        if request.output_names is None:
            names = self.model.output_names
        else:
            names = list(dict.fromkeys(request.output_names))
            for name in names:
                if name not in self._outputs:
                    raise invalid(
                        f"unknown output {name!r} (model {self.name!r} produces "
                        f"{', '.join(self._outputs)})"
                    )
        if self.batching:
            sizes = {array.shape[0] for array in feeds.values()}
            if len(sizes) != 1:
                raise invalid(f"inputs disagree on the batch (first) dimension: {sorted(sizes)}")
            rows = sizes.pop()
        else:  # only for the batch-size metric: the leading dim, 1 for scalar-only inputs
            first = next(iter(feeds.values()), None)
            rows = first.shape[0] if first is not None and first.ndim else 1
        return feeds, names, rows

    @property
    def serving(self) -> bool:
        """Takes inference requests: loaded and not draining (while leaving, it still serves)."""
        return self._ready and not self._draining

    async def infer(self, request: InferRequest) -> InferResponse:
        if not self.serving:
            raise ServeError(ErrorKind.UNAVAILABLE, f"model {self.name!r} is not ready")
        feeds, names, rows = self.validate(request)
        if self._batcher is None and self._inline:
            # Runs to completion without yielding to the loop, so no timeout could ever fire;
            # skipping the timer saves ~4 us of a ~200 us request.
            self.metrics.batch_size.observe(rows)
            arrays = self.model.run(feeds, names)
            return self._response(request, names, arrays)
        timeout = self.config.request_timeout_s
        if request.timeout_s is not None and request.timeout_s > 0:
            timeout = min(timeout, request.timeout_s)
        try:
            async with asyncio.timeout(timeout):
                if self._batcher is not None:
                    arrays = await self._batcher.submit(feeds, names, rows)
                else:
                    self.metrics.batch_size.observe(rows)
                    arrays = await self._execute(feeds, names)
        except TimeoutError:
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
            return self.model.run(feeds, names)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.model.run, feeds, names)


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
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        except Exception as exc:  # never let one bad batch kill the batcher task
            log.exception("batch execution failed: rows=%d requests=%d", rows, len(batch))
            error = ServeError(ErrorKind.INTERNAL, f"inference failed: {exc}")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
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
