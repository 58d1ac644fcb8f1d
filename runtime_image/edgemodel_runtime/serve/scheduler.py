"""Owns iteration-level batching of generations: admission, the decode loop, join and leave.

The decode loop runs on a thread of its own (docs/architecture.md, "Generative serving"):
between two decode steps it prefills the generations that arrived (each one's first token comes
out of its own prefill), joins them to the running batch, runs one decode step for every running
sequence at once, picks each one's next token, and lets the finished and the cancelled leave.
Step follows step on that thread with nothing in between but sampling: the event loop only
admits generations and streams tokens, which a courier thread hands it in one
`call_soon_threadsafe` per step once the next run has started — so neither an event loop busy
writing streams nor a thread hand-off sits between two steps (that gap is the server's overhead
per token).

Admission is decided at submit time, before any work (`admission_refusal`, pure): at most
`max_sequences` generations admitted at once, and the KV cache the admitted ones can reach —
every row padded to the longest prompt + max_tokens, past and present alive together during a
step — within `max_kv_bytes`. Beyond either: 503 + Retry-After, never an unbounded queue and
never an out-of-memory kill. A generation that could not fit even alone is the client's (413).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .decoder import Batch, DecoderModel
from .errors import ErrorKind, ServeError, invalid
from .sampling import SamplingParams, finish_reason, next_token
from .tensors import Array
from .token_metrics import TokenMetrics
from .tokenizer import StreamDecoder, Tokenizer

log = logging.getLogger(__name__)


# A step holds the batch's past cache and the present it returns at once.
CACHE_COPIES_PER_STEP = 2


@dataclass(frozen=True)
class GenerationLimits:
    """How much generation one server admits at once."""

    max_sequences: int
    max_kv_bytes: int
    max_context: int  # prompt + max_tokens of one sequence
    bytes_per_token: int


def kv_bytes(rows: int, longest: int, bytes_per_token: int) -> int:
    """Peak KV bytes of a batch of `rows` sequences padded to `longest` tokens."""
    return CACHE_COPIES_PER_STEP * rows * longest * bytes_per_token


def check_fits_alone(prompt: int, max_tokens: int, limits: GenerationLimits) -> None:
    """Refuse (400 / 413) a generation no server state could ever admit."""
    total = prompt + max_tokens
    if total > limits.max_context:
        raise invalid(
            f"prompt of {prompt} tokens + max_tokens {max_tokens} exceeds the model's context "
            f"of {limits.max_context} tokens"
        )
    alone = kv_bytes(1, total, limits.bytes_per_token)
    if alone > limits.max_kv_bytes:
        raise ServeError(
            ErrorKind.TOO_LARGE,
            f"a generation of {total} tokens needs {alone} bytes of KV cache, more than the "
            f"server's {limits.max_kv_bytes}",
        )


def admission_refusal(reserved: Sequence[int], total: int, limits: GenerationLimits) -> str | None:
    """Why a generation of `total` tokens cannot join the `reserved` ones now, or None."""
    if len(reserved) >= limits.max_sequences:
        return f"{limits.max_sequences} sequences already generating"
    need = kv_bytes(len(reserved) + 1, max([*reserved, total]), limits.bytes_per_token)
    if need > limits.max_kv_bytes:
        return f"KV cache budget of {limits.max_kv_bytes} bytes would be exceeded ({need})"
    return None


@dataclass(frozen=True)
class TokenEvent:
    """One generated token handed to a client, with its text and why it was the last."""

    token: int
    text: str
    index: int
    finish_reason: str | None = None


@dataclass(eq=False)
class Generation:
    """One admitted generation: its prompt, its sampling state, and the tokens it emits."""

    id: int
    prompt: list[int]
    params: SamplingParams
    admitted_at: float
    decoder: StreamDecoder | None = None
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None
    cancelled: bool = False
    last_at: float = 0.0
    _events: asyncio.Queue[TokenEvent | ServeError] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.params.seed)

    @property
    def reserved(self) -> int:
        return len(self.prompt) + self.params.max_tokens

    @property
    def done(self) -> bool:
        return self.finish is not None or self.cancelled

    def cancel(self) -> None:
        """The client went away: the decode loop frees its slot before the next step."""
        if self.finish is None:
            self.cancelled = True

    async def events(self) -> AsyncIterator[TokenEvent]:
        """The tokens as they come; the last carries `finish_reason`. Raises on a failure."""
        while True:
            event = await self._events.get()
            if isinstance(event, ServeError):
                raise event
            yield event
            if event.finish_reason is not None:
                return

    def push(self, event: TokenEvent | ServeError) -> None:
        """Hand `event` to the reader (event loop thread only)."""
        self._events.put_nowait(event)

    def fail(self, error: ServeError) -> None:
        self.finish = "error"
        self._events.put_nowait(error)


Outbox = list[tuple[Generation, TokenEvent | ServeError]]


def _deliver(outbox: Outbox) -> None:
    """Hand a step's events to their readers (runs on the event loop thread)."""
    for generation, event in outbox:
        generation.push(event)


class Scheduler:
    """The decode loop over one `DecoderModel`: generations join and leave between steps.

    `submit`, `active` and `stop` belong to the event loop; the decode thread alone touches the
    running batches and the generations' token state. `_cond` guards what both share: the
    admitted generations, the waiting ones and the stop flag.
    """

    def __init__(
        self,
        model: DecoderModel,
        limits: GenerationLimits,
        metrics: TokenMetrics,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.model = model
        self.limits = limits
        self._metrics = metrics
        self.tokenizer = tokenizer
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._admitted: dict[int, Generation] = {}
        self._waiting: list[Generation] = []
        self._stopping = False
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._courier: threading.Thread | None = None
        self._handoff: queue.SimpleQueue[Outbox | None] = queue.SimpleQueue()
        # The decode thread's own state.
        self._running: dict[int, Generation] = {}
        self._batches: list[Batch] = []
        self._outbox: Outbox = []
        self.steps = 0  # decode steps run (each step serves every running sequence)

    @property
    def active(self) -> int:
        """Generations admitted and not yet released (waiting or running)."""
        with self._cond:
            return len(self._admitted)

    def submit(self, prompt: list[int], params: SamplingParams) -> Generation:
        """Admit a generation now (it joins before the next step), or refuse it at once."""
        check_fits_alone(len(prompt), params.max_tokens, self.limits)
        generation = Generation(
            id=next(self._ids),
            prompt=prompt,
            params=params,
            admitted_at=time.perf_counter(),
            decoder=StreamDecoder(self.tokenizer) if self.tokenizer else None,
        )
        with self._cond:
            reserved = [admitted.reserved for admitted in self._admitted.values()]
            refusal = admission_refusal(reserved, generation.reserved, self.limits)
            if refusal is None:
                self._admitted[generation.id] = generation
                self._waiting.append(generation)
        if refusal is not None:
            raise ServeError(ErrorKind.OVERLOADED, f"server at capacity ({refusal}), retry later")
        self._wake_soon()
        return generation

    def _wake_soon(self) -> None:
        # Once the current callback is done: generations submitted together join together.
        if self._loop is not None and not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        with self._cond:
            self._cond.notify()

    def start(self) -> None:
        """Start the decode thread; its events go to the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._decode_loop, name="decode-loop", daemon=True)
        self._courier = threading.Thread(target=self._carry, name="token-courier", daemon=True)
        self._thread.start()
        self._courier.start()
        self._wake_soon()

    async def stop(self) -> None:
        """Stop the loop after the step in progress; generations still admitted get UNAVAILABLE."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None and self._courier is not None:
            await asyncio.to_thread(self._thread.join)
            self._handoff.put(None)  # after the decode loop's last events
            await asyncio.to_thread(self._courier.join)
        with self._cond:
            left = list(self._admitted.values())
            self._admitted.clear()
            self._waiting.clear()
        for generation in left:
            generation.fail(ServeError(ErrorKind.UNAVAILABLE, "the server is shutting down"))

    # The decode thread from here on.

    def _decode_loop(self) -> None:
        while self._has_work():
            try:
                self._drop_done()  # first: their slots may already hold the next arrivals
                self._join_waiting()
                self._step()
            except Exception:  # never let one bad step end the loop for everyone
                log.exception("decode loop step failed")
                self._fail_running(ServeError(ErrorKind.INTERNAL, "the decode step failed"))
        self._flush()

    def _has_work(self) -> bool:
        """Wait until something is waiting or running; False once stopped."""
        with self._cond:
            while not (self._stopping or self._waiting or self._batches):
                self._flush()  # no run comes next to hand the last events over before it
                self._cond.wait()
            return not self._stopping

    def _next_waiting(self) -> Generation | None:
        with self._cond:
            return self._waiting.pop(0) if self._waiting else None

    def _free_slot(self, generation: Generation) -> None:
        # Before its last event goes out: a client that saw its stream end finds the slot free.
        with self._cond:
            self._admitted.pop(generation.id, None)

    def _release(self, generation: Generation) -> None:
        self._running.pop(generation.id, None)
        self._free_slot(generation)

    def _fail(self, generation: Generation, error: ServeError) -> None:
        generation.finish = "error"
        self._outbox.append((generation, error))
        self._release(generation)

    def _flush(self) -> None:
        """Hand the events so far to the courier, which wakes the event loop to stream them.

        Called just before the next run (`before_run`), not right after sampling, and through
        the courier thread, not `call_soon_threadsafe` here: waking the event loop is a system
        call that gives up the GIL, and the woken loop would hold it while this thread prepares
        the run. The courier gets the GIL once the run has released it.
        """
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._handoff.put(outbox)

    def _carry(self) -> None:
        """The courier thread: each outbox to the event loop, in order, until stopped."""
        assert self._loop is not None
        while (outbox := self._handoff.get()) is not None:
            try:
                self._loop.call_soon_threadsafe(_deliver, outbox)
            except RuntimeError:  # the event loop is closed: nobody reads these any more
                log.warning("decode loop: %d events after the event loop closed", len(outbox))

    def _emit(self, generation: Generation, token: int) -> None:
        """Hand `token` to its generation, time it, and decide whether it was the last."""
        now = time.perf_counter()
        if generation.tokens:
            self._metrics.inter_token_latency.observe(now - generation.last_at)
        else:
            self._metrics.time_to_first_token.observe(now - generation.admitted_at)
        self._metrics.generated_tokens.inc()
        generation.last_at = now
        generation.tokens.append(token)
        piece = generation.decoder.push(token) if generation.decoder else ""
        text = generation.decoder.text if generation.decoder else ""
        generation.finish = finish_reason(token, len(generation.tokens), text, generation.params)
        if generation.finish is not None:
            self._free_slot(generation)  # its row leaves the batch before the next step
            if generation.decoder:  # what a split character held back
                piece += generation.decoder.flush()
        event = TokenEvent(token, piece, len(generation.tokens) - 1, generation.finish)
        self._outbox.append((generation, event))

    def _join_waiting(self) -> None:
        """Prefill every generation that arrived; each gets its first token and joins."""
        while (generation := self._next_waiting()) is not None:
            if generation.cancelled:
                self._release(generation)
                continue
            try:
                logits, row = self.model.prefill(generation.id, generation.prompt, self._flush)
            except ServeError as exc:
                self._fail(generation, exc)
                continue
            self._running[generation.id] = generation
            self._emit(generation, next_token(logits, generation.params, generation.rng))
            if generation.done:
                self._release(generation)
            elif self._batches and self.model.padding_safe:
                self._batches[0] = self._batches[0].join(row)
            else:
                self._batches.append(row)

    def _drop_done(self) -> None:
        """The finished and the cancelled leave the running batches."""
        self._batches = [self._without_done(batch) for batch in self._batches]
        self._batches = [batch for batch in self._batches if batch.rows]

    def _step(self) -> None:
        """One decode step for every running sequence."""
        if not self._batches:
            return
        self.steps += 1
        stepped: list[Batch] = []
        for batch in self._batches:
            rows = [self._running[sequence] for sequence in batch.ids]
            try:
                tokens = [row.tokens[-1] for row in rows]
                logits, after = self.model.decode(batch, tokens, self._flush)
            except ServeError as exc:
                for row in rows:
                    self._fail(row, exc)
                continue
            self._sample_rows(rows, logits)
            stepped.append(after)
        self._batches = stepped

    def _sample_rows(self, rows: Sequence[Generation], logits: Array) -> None:
        for index, generation in enumerate(rows):
            if not generation.done:  # cancelled while the step ran: nobody reads it
                self._emit(generation, next_token(logits[index], generation.params, generation.rng))

    def _without_done(self, batch: Batch) -> Batch:
        done = [sequence for sequence in batch.ids if self._running[sequence].done]
        if not done:
            return batch
        for sequence in done:
            self._release(self._running[sequence])
        return batch.keep([sequence for sequence in batch.ids if sequence not in done])

    def _fail_running(self, error: ServeError) -> None:
        """Fail every admitted generation, waiting or running (the step itself broke)."""
        with self._cond:
            failed = list(self._admitted.values())
            self._admitted.clear()
            self._waiting.clear()
        self._running.clear()
        self._batches = []
        for generation in failed:
            generation.finish = "error"
            self._outbox.append((generation, error))
