"""A tiny real decoder for generation tests, and the plain onnxruntime greedy loop to match.

The decoder is the sandbox's Llama-shaped fixture graph (`edgemodel_sandbox.decoder`) at a very
small size with seeded random weights and a random LM head (not fitted: tests need distinct
logits, not a good language model), built in memory in well under a second. `greedy_reference`
generates with onnxruntime directly — one sequence, its own KV cache, no padding, no server —
which is what every served generation must equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgemodel_sandbox.decoder import DecoderConfig, build_decoder, empty_past

TINY = DecoderConfig(
    vocab_size=256, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, max_positions=256
)


def random_weights(cfg: DecoderConfig, seed: int) -> dict[str, np.ndarray]:
    """Seeded random weights under the names `build_decoder` takes (LM head included)."""
    rng = np.random.default_rng(seed)
    h, kv = cfg.hidden, cfg.kv_heads * cfg.head_dim

    def dense(n_in: int, n_out: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((n_in, n_out)) * gain / np.sqrt(n_in)).astype(np.float32)

    weights = {"embed": dense(cfg.vocab_size, h, np.sqrt(cfg.vocab_size))}
    for i in range(cfg.layers):
        p = f"layers.{i}."
        weights |= {
            p + "input_norm": np.ones(h, np.float32),
            p + "post_norm": np.ones(h, np.float32),
        }
        weights |= {p + "q": dense(h, h, 2.0), p + "k": dense(h, kv, 2.0), p + "v": dense(h, kv)}
        weights |= {p + "o": dense(h, h, 0.5), p + "down": dense(cfg.intermediate, h, 0.5)}
        weights |= {p + "gate": dense(h, cfg.intermediate), p + "up": dense(h, cfg.intermediate)}
    weights["norm"] = np.ones(h, np.float32)
    weights["lm_head"] = dense(h, cfg.vocab_size, 3.0)
    return weights


def tiny_decoder(path: Path, cfg: DecoderConfig = TINY, seed: int = 7) -> Path:
    """Write the tiny decoder to `path` (random LM head so greedy outputs vary by prompt)."""
    onnx.save(build_decoder(cfg, random_weights(cfg, seed)), path)
    return path


def greedy_reference(
    path: Path, prompt: list[int], max_tokens: int, cfg: DecoderConfig = TINY
) -> list[int]:
    """Greedy tokens from a plain onnxruntime loop over the model's KV cache."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    past = empty_past(cfg, 1)
    ids = np.asarray([prompt], dtype=np.int64)
    length = 0
    out: list[int] = []
    for _ in range(max_tokens):
        length += ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, length), np.int64), **past}
        logits, *present = session.run(names, feeds)
        token = int(np.argmax(logits[0, -1]))
        out.append(token)
        past = dict(
            zip([n.replace("present", "past_key_values") for n in names[1:]], present, strict=True)
        )
        ids = np.asarray([[token]], dtype=np.int64)
    return out
