"""Owns the wiring of generative serving into `edgemodel serve` (`--generative`).

The server builds a `GenerativeService` before the model exists (its routes go on the HTTP app
so the generate endpoints answer 503 while loading, like /infer); once the decoder is loaded and
warmed up, `attach` derives the limits from the model's KV layout and the container's memory
and starts the decode loop; `close` stops it on shutdown, after the drain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from .dataplane import DataPlane, Runner
from .decoder import DecoderLayoutError, DecoderModel
from .generate import GenerateEndpoints, add_generate_routes
from .metrics import ServeMetrics
from .model import ModelLoadError
from .scheduler import GenerationLimits, Scheduler
from .token_metrics import DEFAULT_ITL_SLO_S, DEFAULT_TTFT_SLO_S, TokenMetrics
from .tokenizer import Tokenizer, vocabulary_mismatch

log = logging.getLogger(__name__)

DEFAULT_MAX_SEQUENCES = 8
DEFAULT_MAX_CONTEXT = 1024
KV_BUDGET_CEILING = 1 << 30
KV_BUDGET_MEMORY_SHARE = 4  # a quarter of the container's memory: weights and Python need the rest


@dataclass(frozen=True)
class GenerationOptions:
    """What `--generative` and its flags asked for (None: derived at attach time)."""

    max_sequences: int = DEFAULT_MAX_SEQUENCES
    max_kv_bytes: int | None = None
    max_context: int = DEFAULT_MAX_CONTEXT
    tokenizer: Tokenizer | None = None
    ttft_slo_s: float = DEFAULT_TTFT_SLO_S
    itl_slo_s: float = DEFAULT_ITL_SLO_S


def default_kv_budget(memory_limit: int | None) -> int:
    """KV cache bytes admitted at once: 1 GiB, at most a quarter of the memory limit."""
    if memory_limit is None:
        return KV_BUDGET_CEILING
    return min(KV_BUDGET_CEILING, memory_limit // KV_BUDGET_MEMORY_SHARE)


def as_decoder(runner: Runner) -> DecoderModel:
    """The loaded model as a decoder, or a load error naming what its layout lacks."""
    try:
        return DecoderModel(runner)
    except DecoderLayoutError as exc:
        raise ModelLoadError(f"not a generative decoder: {exc}") from None


class GenerativeService:
    """The generate endpoints and, once attached, the scheduler behind them."""

    def __init__(
        self,
        options: GenerationOptions,
        dataplane: DataPlane,
        metrics: ServeMetrics,
        labels: tuple[str, str, str],
    ) -> None:
        self.options = options
        self._dp = dataplane
        self.endpoints = GenerateEndpoints(dataplane)
        self.metrics = TokenMetrics(
            metrics.registry, labels, ttft_slo_s=options.ttft_slo_s, itl_slo_s=options.itl_slo_s
        )
        self.scheduler: Scheduler | None = None

    def decoder(self, model: Runner) -> DecoderModel:
        """The loaded model as a decoder the tokenizer fits, or a load error saying why not."""
        decoder = as_decoder(model)
        tokenizer = self.options.tokenizer
        mismatch = vocabulary_mismatch(tokenizer, decoder.layout.vocab) if tokenizer else None
        if mismatch is not None:
            raise ModelLoadError(mismatch)
        return decoder

    def routes(self, router: web.UrlDispatcher) -> None:
        add_generate_routes(router, self.endpoints)

    def attach(self, model: DecoderModel) -> None:
        """Start the decode loop over the warmed-up decoder."""
        limits = GenerationLimits(
            max_sequences=self.options.max_sequences,
            max_kv_bytes=self.options.max_kv_bytes
            or default_kv_budget(self._dp.config.memory_limit),
            max_context=self.options.max_context,
            bytes_per_token=model.layout.bytes_per_token,
        )
        self.scheduler = Scheduler(model, limits, self.metrics, self.options.tokenizer)
        self.scheduler.start()
        self.endpoints.scheduler = self.scheduler
        log.info(
            "generative serving: max_sequences=%d max_kv_bytes=%d max_context=%d "
            "kv_bytes_per_token=%d padded_batching=%s tokenizer=%s",
            limits.max_sequences,
            limits.max_kv_bytes,
            limits.max_context,
            limits.bytes_per_token,
            model.padding_safe,
            self.options.tokenizer.name if self.options.tokenizer else "none",
        )

    async def close(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
