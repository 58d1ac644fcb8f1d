"""Owns a generation request's parameters and the choice of each next token (pure).

`parse_parameters` validates the KServe v2 generate extension's `parameters` object (max_tokens,
stop, temperature, top_k, top_p, seed), naming the field and value it refuses. `next_token`
picks a token from one row of logits: greedy (argmax) at temperature 0, otherwise a draw from
the softmax at that temperature, restricted to the top-k tokens and to the smallest set whose
probability reaches top-p, with the sequence's own seeded generator — so one seed gives one
output, whatever else the batch holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import invalid
from .tensors import Array

DEFAULT_MAX_TOKENS = 32
MAX_STOPS = 16
MAX_STOP_CHARS = 64
MAX_SEED = (1 << 63) - 1


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence generates: length, stop conditions and the sampling distribution."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    stop_tokens: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    temperature: float = 0.0
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    seed: int | None = None


def _int(parameters: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = parameters.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"parameters.{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _float(
    parameters: Mapping[str, Any], name: str, default: float, low: float, high: float
) -> float:
    value = parameters.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(f"parameters.{name} must be a number from {low} to {high}, got {value!r}")
    return float(value)


def _stops(value: Any, vocab: int) -> tuple[frozenset[int], tuple[str, ...]]:
    """Stop token ids and stop strings from `stop`: a string, an id, or a list of them."""
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_STOPS:
        raise invalid(f"parameters.stop: at most {MAX_STOPS} entries, got {len(items)}")
    tokens: set[int] = set()
    strings: list[str] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < vocab:
            tokens.add(item)
        elif isinstance(item, str) and 0 < len(item) <= MAX_STOP_CHARS:
            strings.append(item)
        else:
            raise invalid(
                f"parameters.stop: each entry must be a token id from 0 to {vocab - 1} or a "
                f"string of 1 to {MAX_STOP_CHARS} characters, got {item!r}"
            )
    return frozenset(tokens), tuple(strings)


def parse_parameters(parameters: Any, *, vocab: int, max_tokens_limit: int) -> SamplingParams:
    """The sampling parameters of a generate request; bad values raise 400 naming the field."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise invalid("'parameters' must be an object")
    stop_tokens, stop_strings = _stops(parameters.get("stop", []), vocab)
    seed = parameters.get("seed")
    if seed is not None:
        seed = _int(parameters, "seed", 0, 0, MAX_SEED)
    return SamplingParams(
        max_tokens=_int(
            parameters, "max_tokens", min(DEFAULT_MAX_TOKENS, max_tokens_limit), 1, max_tokens_limit
        ),
        stop_tokens=stop_tokens,
        stop_strings=stop_strings,
        temperature=_float(parameters, "temperature", 0.0, 0.0, 100.0),
        top_k=_int(parameters, "top_k", 0, 0, max(vocab, 1)),
        top_p=_float(parameters, "top_p", 1.0, 1e-6, 1.0),
        seed=seed,
    )


def next_token(logits: Array, params: SamplingParams, rng: np.random.Generator) -> int:
    """The next token from one row of logits [vocab] (greedy at temperature 0)."""
    if params.temperature == 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / params.temperature
    order = np.argsort(-scaled, kind="stable")
    if params.top_k:
        order = order[: params.top_k]
    chosen = scaled[order]
    probs = np.exp(chosen - chosen.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        # The smallest prefix whose probability reaches top_p (always at least one token).
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])


def finish_reason(token: int, generated: int, text: str, params: SamplingParams) -> str | None:
    """Why a sequence ends after emitting `token` as its `generated`-th token, or None.

    "stop": a stop token, or the text so far holds a stop string (not only at its end: one
    token's text may hold a stop string and more after it); "length": max_tokens.
    """
    if token in params.stop_tokens or any(stop in text for stop in params.stop_strings):
        return "stop"
    if generated >= params.max_tokens:
        return "length"
    return None
