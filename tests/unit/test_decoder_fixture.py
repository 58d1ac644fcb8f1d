"""The generated decoder fixture: a Llama-shaped language model with a KV cache, made here.

It must behave like an exported decoder (a step with the KV cache gives the logits a full pass
gives; left padding does not move positions), be a language model in earnest (it predicts held-out
text better than token frequencies alone do), and come out the same on every build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgemodel_sandbox.decoder import (
    TOKENIZER_FILE,
    DecoderConfig,
    bigram_log_probs,
    empty_past,
    ensure_decoder,
)

TINY = DecoderConfig(
    hidden=64, heads=4, kv_heads=2, intermediate=96, train_sequences=96, sequence_length=48
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_decoder(TINY, tmp_path_factory.mktemp("decoder") / "tiny")


def _session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def _run(
    session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray, past: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, {"input_ids": ids, "attention_mask": mask, **past})
    present = {
        name.replace("present", "past_key_values"): value
        for name, value in zip(names[1:], outputs[1:], strict=True)
    }
    return outputs[0], present


def _sequences(folder: Path) -> np.ndarray:
    return np.load(folder / "evaluation.npz")["input_ids"]


def test_decoding_with_the_kv_cache_matches_a_full_pass(tiny: Path) -> None:
    session = _session(tiny)
    ids = _sequences(tiny)[:2, :24]
    full, _ = _run(session, ids, np.ones_like(ids), empty_past(TINY, 2))
    logits, past = _run(session, ids[:, :16], np.ones((2, 16), np.int64), empty_past(TINY, 2))
    steps = [logits]
    for t in range(16, 24):
        logits, past = _run(session, ids[:, t : t + 1], np.ones((2, t + 1), np.int64), past)
        steps.append(logits)
    assert past["past_key_values.0.key"].shape == (2, TINY.kv_heads, 24, TINY.head_dim)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


def test_left_padding_does_not_move_positions(tiny: Path) -> None:
    session = _session(tiny)
    ids = _sequences(tiny)[:1, :12]
    alone, _ = _run(session, ids, np.ones_like(ids), empty_past(TINY, 1))
    padded_ids = np.concatenate([np.zeros((1, 4), np.int64), ids], axis=1)
    mask = np.concatenate([np.zeros((1, 4), np.int64), np.ones_like(ids)], axis=1)
    padded, _ = _run(session, padded_ids, mask, empty_past(TINY, 1))
    np.testing.assert_allclose(padded[:, 4:], alone, atol=1e-4)


def test_it_predicts_held_out_text_better_than_token_frequencies(tiny: Path) -> None:
    sequences = _sequences(tiny)
    logits, _ = _run(
        _session(tiny), sequences[:, :-1], np.ones_like(sequences[:, :-1]), empty_past(TINY, 32)
    )
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, sequences[:, 1:, None], -1).mean()
    calibration = np.load(tiny / "calibration.npz")["input_ids"]
    counts = np.bincount(calibration.reshape(-1), minlength=256) + 1.0
    unigram_nll = -np.log(counts / counts.sum())[sequences[:, 1:]].mean()
    assert np.exp(nll) < 0.7 * np.exp(unigram_nll)
    assert np.isfinite(bigram_log_probs(TINY, sequences)).all()


def test_the_same_config_builds_the_same_bytes(tiny: Path, tmp_path: Path) -> None:
    again = ensure_decoder(TINY, tmp_path / "again")
    assert (again / "model.onnx").read_bytes() == (tiny / "model.onnx").read_bytes()
    assert (again / "evaluation.npz").read_bytes() == (tiny / "evaluation.npz").read_bytes()


def test_impossible_shapes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="heads=6 is not a multiple of kv_heads=4"):
        DecoderConfig(heads=6, kv_heads=4).validate()


def test_the_generative_example_names_the_default_decoder_by_digest() -> None:
    """examples/generative-edgemodel.yaml works as it is once the demo uploaded the decoder."""
    import yaml

    from edgemodel_runtime.sources import sha256_file

    root = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((root / "examples" / "generative-edgemodel.yaml").read_text())["spec"]
    folder = ensure_decoder()
    assert spec["model"]["sha256"] == sha256_file(folder / "model.onnx")
    evaluation = spec["compression"]["accuracyGate"]["evaluation"]
    assert evaluation["sha256"] == sha256_file(folder / "evaluation.npz")
    tokenizer = spec["serving"]["tokenizerFile"]
    assert spec["serving"]["tokenizer"] == "file"
    assert tokenizer["sha256"] == sha256_file(folder / TOKENIZER_FILE)
    assert all(s["uri"].endswith(s["sha256"]) for s in (spec["model"], evaluation, tokenizer))
