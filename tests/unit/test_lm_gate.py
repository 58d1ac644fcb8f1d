"""The language-model gate: next-token agreement and perplexity against the fp32 model.

Pure figures over logits, the evaluation data a language model takes, and the interface the
gate feeds (token ids, attention mask, an empty KV cache) read off a real decoder graph.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemodel_runtime.compress import lm_gate
from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.gate import compare, verdict
from edgemodel_runtime.compress.tasks import DEFAULT_TASK_THRESHOLDS
from edgemodel_sandbox.decoder import DecoderConfig, build_decoder, layer_weights

VOCAB = 16


def _logits(rows: int = 4, seq: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, seq, VOCAB)).astype(np.float32) * 3


def test_uniform_logits_have_the_vocabulary_as_perplexity() -> None:
    targets = np.zeros((2, 5), np.int64)
    assert lm_gate.perplexity(np.zeros((2, 5, VOCAB), np.float32), targets) == pytest.approx(16)


def test_perplexity_is_one_when_the_next_token_is_certain() -> None:
    targets = np.array([[3, 7]])
    logits = np.full((1, 2, VOCAB), -1e4, np.float32)
    logits[0, 0, 3] = logits[0, 1, 7] = 0.0
    assert lm_gate.perplexity(logits, targets) == pytest.approx(1.0)


def test_identical_logits_agree_everywhere_with_no_perplexity_loss() -> None:
    logits = _logits()
    targets = logits.argmax(-1)
    figures = lm_gate.figures(logits, logits.copy(), targets)
    assert figures.agreement == 1.0
    assert figures.perplexity_ratio == pytest.approx(1.0)
    assert figures.positions == 40


def test_noisy_logits_lose_agreement_and_perplexity() -> None:
    reference = _logits()
    targets = reference.argmax(-1)
    noisy = reference + _logits(seed=1) * 2
    figures = lm_gate.figures(reference, noisy, targets)
    assert figures.agreement < 0.7
    assert figures.perplexity_compressed > figures.perplexity_original
    assert figures.perplexity_ratio < 1.0


def test_non_finite_logits_fail_outright() -> None:
    reference = _logits()
    broken = reference.copy()
    broken[0, 0, 0] = np.nan
    figures = lm_gate.figures(reference, broken, reference.argmax(-1))
    assert figures.agreement == 0.0
    assert math.isinf(figures.perplexity_compressed)
    assert figures.perplexity_ratio == 0.0


def test_token_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match="token id 16 >= vocabulary 16"):
        lm_gate.figures(_logits(), _logits(), np.full((4, 10), 16))


def test_gate_refuses_a_model_whose_perplexity_rises_past_the_limit() -> None:
    reference = _logits()
    targets = reference.argmax(-1)
    worse = reference * 0.3  # same argmax everywhere, far less sure of the right token
    figures = compare({"logits": reference}, {"logits": worse}, ["logits"], targets, lm_gate.KIND)
    assert figures.agreement == 1.0
    assert figures.kind == lm_gate.KIND
    assert figures.perplexity_compressed is not None
    reasons = verdict(
        figures, None, lm_gate.DEFAULT_MIN_AGREEMENT, DEFAULT_TASK_THRESHOLDS[lm_gate.KIND]
    )
    assert len(reasons) == 1 and reasons[0].startswith("perplexity ratio")


def test_gate_refuses_a_model_that_picks_other_next_tokens() -> None:
    reference = _logits()
    targets = reference.argmax(-1)
    shuffled = reference[..., ::-1].copy()
    figures = compare(
        {"logits": reference}, {"logits": shuffled}, ["logits"], targets, "language-model"
    )
    reasons = verdict(figures, None, lm_gate.DEFAULT_MIN_AGREEMENT, lm_gate.MIN_PERPLEXITY_RATIO)
    assert any(r.startswith("language-model agreement") for r in reasons)


def test_evaluation_sequences_split_into_prompts_and_next_tokens() -> None:
    prompts, targets = lm_gate.split_sequences({"input_ids": np.arange(12).reshape(2, 6)})
    assert prompts.tolist() == [[0, 1, 2, 3, 4], [6, 7, 8, 9, 10]]
    assert targets.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 11]]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"tokens": np.zeros((2, 4), np.int64)}, "needs 'input_ids'"),
        ({"input_ids": np.zeros((2, 1), np.int64)}, "L >= 2"),
        ({"input_ids": np.zeros((2, 4), np.float32)}, "integer token ids"),
        ({"input_ids": np.zeros((2, 4), np.int64), "labels": np.zeros(2)}, "not \\['labels'\\]"),
    ],
)
def test_bad_evaluation_data_is_named(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(CompressError, match=message):
        lm_gate.split_sequences(arrays)


def test_the_decoder_interface_is_read_off_the_graph() -> None:
    cfg = DecoderConfig(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=96)
    interface = lm_gate.decoder_interface(build_decoder(cfg, layer_weights(cfg, _embed(cfg))))
    assert interface is not None
    assert interface.mask and not interface.positions
    assert interface.logits == "logits"
    assert [(p.name, p.heads, p.head_dim) for p in interface.past] == [
        (f"past_key_values.{i}.{kind}", 2, 16) for i in range(2) for kind in ("key", "value")
    ]
    feed = lm_gate.feeds(interface, np.zeros((3, 5), np.int64))
    assert feed["attention_mask"].shape == (3, 5)
    assert feed["past_key_values.1.value"].shape == (3, 2, 0, 16)


def _embed(cfg: DecoderConfig) -> np.ndarray:
    return np.ones((cfg.vocab_size, cfg.hidden), np.float32)
