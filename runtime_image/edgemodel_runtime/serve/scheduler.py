"""Owns iteration-level batching of generations: admission, the decode loop, join and leave.

One asyncio task runs the loop (docs/architecture.md, "Generative serving"): between two decode
steps it prefills the generations that arrived (each one's first token comes out of its own
prefill), joins them to the running batch, runs one decode step for every running sequence at
once, hands each its next token, and lets the finished and the cancelled leave. Model runs go to
the dataplane's worker threads, so the event loop keeps streaming and answering probes.

Admission is decided at submit time, before any work (`admission_refusal`, pure): at most
`max_sequences` generations admitted at once, and the KV cache the admitted ones can reach —
every row padded to the longest prompt + max_tokens, past and present alive together during a
step — within `max_kv_bytes`. Beyond either: 503 + Retry-After, never an unbounded queue and
never an out-of-memory kill. A generation that could not fit even alone is the client's (413).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from .decoder import Batch, DecoderModel
from .errors import ErrorKind, ServeError, invalid
from .sampling import SamplingParams, finish_reason, next_token
from .tensors import Array
from .token_metrics import TokenMetrics
from .tokenizer import ByteTokenizer, StreamDecoder

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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
        """The client went away: the loop frees this sequence's slot before its next step."""
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

    def push(self, event: TokenEvent) -> None:
        self._events.put_nowait(event)

    def fail(self, error: ServeError) -> None:
        self.finish = "error"
        self._events.put_nowait(error)


class Scheduler:
    """The decode loop over one `DecoderModel`: generations join and leave between steps."""

    def __init__(
        self,
        model: DecoderModel,
        limits: GenerationLimits,
        metrics: TokenMetrics,
        executor: concurrent.futures.Executor,
        tokenizer: ByteTokenizer | None = None,
    ) -> None:
        self.model = model
        self.limits = limits
        self._metrics = metrics
        self._executor = executor
        self.tokenizer = tokenizer
        self._ids = itertools.count()
        self._admitted: dict[int, Generation] = {}
        self._waiting: list[Generation] = []
        self._batches: list[Batch] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.steps = 0  # decode steps run (each step serves every running sequence)

    @property
    def active(self) -> int:
        """Generations admitted and not yet released (waiting or running)."""
        return len(self._admitted)

    def submit(self, prompt: list[int], params: SamplingParams) -> Generation:
        """Admit a generation now (it waits for the next step), or refuse it at once."""
        check_fits_alone(len(prompt), params.max_tokens, self.limits)
        reserved = [generation.reserved for generation in self._admitted.values()]
        refusal = admission_refusal(reserved, len(prompt) + params.max_tokens, self.limits)
        if refusal is not None:
            raise ServeError(ErrorKind.OVERLOADED, f"server at capacity ({refusal}), retry later")
        generation = Generation(
            id=next(self._ids),
            prompt=prompt,
            params=params,
            admitted_at=time.perf_counter(),
            decoder=StreamDecoder(self.tokenizer) if self.tokenizer else None,
        )
        self._admitted[generation.id] = generation
        self._waiting.append(generation)
        self._wake.set()
        return generation

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="decode-loop")

    async def stop(self) -> None:
        """Stop the loop; generations still admitted get UNAVAILABLE."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for generation in list(self._admitted.values()):
            generation.fail(ServeError(ErrorKind.UNAVAILABLE, "the server is shutting down"))
        self._admitted.clear()

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    async def _loop(self) -> None:
        while True:
            if not self._waiting and not self._batches:
                self._wake.clear()
                await self._wake.wait()
            try:
                await self._join_waiting()
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad step end the loop for everyone
                log.exception("decode loop step failed")
                self._fail_running(ServeError(ErrorKind.INTERNAL, "the decode step failed"))

    def _release(self, generation: Generation) -> None:
        self._admitted.pop(generation.id, None)

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
        generation.push(TokenEvent(token, piece, len(generation.tokens) - 1, generation.finish))

    async def _join_waiting(self) -> None:
        """Prefill every generation that arrived; each gets its first token and joins."""
        while self._waiting:
            generation = self._waiting.pop(0)
            if generation.cancelled:
                self._release(generation)
                continue
            try:
                logits, row = await self._run(self.model.prefill, generation.id, generation.prompt)
            except ServeError as exc:
                generation.fail(exc)
                self._release(generation)
                continue
            self._emit(generation, next_token(logits, generation.params, generation.rng))
            if generation.done:
                self._release(generation)
            elif self._batches and self.model.padding_safe:
                self._batches[0] = self._batches[0].join(row)
            else:
                self._batches.append(row)

    async def _step(self) -> None:
        """One decode step for every running sequence, then the finished ones leave."""
        self._batches = [self._without_done(batch) for batch in self._batches]
        self._batches = [batch for batch in self._batches if batch.rows]
        if not self._batches:
            return
        self.steps += 1
        stepped: list[Batch] = []
        for batch in self._batches:
            rows = [self._admitted[sequence] for sequence in batch.ids]
            try:
                logits, after = await self._run(
                    self.model.decode, batch, [row.tokens[-1] for row in rows]
                )
            except ServeError as exc:
                for row in rows:
                    row.fail(exc)
                    self._release(row)
                continue
            self._sample_rows(rows, logits)
            stepped.append(after)
        self._batches = stepped

    def _sample_rows(self, rows: Sequence[Generation], logits: Array) -> None:
        for index, generation in enumerate(rows):
            if not generation.done:  # cancelled while the step ran: nobody reads it
                self._emit(generation, next_token(logits[index], generation.params, generation.rng))

    def _without_done(self, batch: Batch) -> Batch:
        done = [sequence for sequence in batch.ids if self._admitted[sequence].done]
        if not done:
            return batch
        for sequence in done:
            self._release(self._admitted[sequence])
        return batch.keep([sequence for sequence in batch.ids if sequence not in done])

    def _fail_running(self, error: ServeError) -> None:
        """Fail every admitted generation, waiting or running (the step itself broke)."""
        for generation in list(self._admitted.values()):
            generation.fail(error)
        self._admitted.clear()
        self._waiting.clear()
        self._batches = []
