"""A decoder's KV-cache layout, read from its declared inputs and outputs, and the padded batch.

`layout_of` accepts the Optimum / onnxruntime-genai layout and refuses anything else naming
what is missing; the bytes per token it derives are what the KV budget counts. `Batch.join`
left-pads the shorter side, `Batch.keep` drops rows and the padding no row needs any more.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemodel_runtime.serve.decoder import Batch, DecoderLayoutError, layout_of
from edgemodel_runtime.serve.tensors import TensorSpec


def specs(
    layers: int = 2, heads: int = 2, dim: int = 8, kind: str = "FP32"
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inputs = [
        TensorSpec("input_ids", "INT64", (-1, -1)),
        TensorSpec("attention_mask", "INT64", (-1, -1)),
    ]
    outputs = [TensorSpec("logits", "FP32", (-1, -1, 256))]
    for i in range(layers):
        for part in ("key", "value"):
            inputs.append(TensorSpec(f"past_key_values.{i}.{part}", kind, (-1, heads, -1, dim)))
            outputs.append(TensorSpec(f"present.{i}.{part}", kind, (-1, heads, -1, dim)))
    return inputs, outputs


def test_the_optimum_layout_is_read_with_its_bytes_per_token() -> None:
    layout = layout_of(*specs())
    assert layout.present[0] == "present.0.key"
    assert (layout.kv_heads, layout.head_dim, layout.vocab) == (2, 8, 256)
    assert layout.position_ids is None and layout.attention_mask == "attention_mask"
    # 2 layers x (key + value) x 2 heads x 8 dims x 4 bytes
    assert layout.bytes_per_token == 256
    assert layout_of(*specs(kind="FP16")).bytes_per_token == 128


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda i, o: (i[1:], o), "input_ids"),
        (lambda i, o: (i, o[1:]), "logits"),
        (lambda i, o: (i[:2], o), "past_key_values"),
        (lambda i, o: (i, [s for s in o if s.name != "present.1.value"]), "present"),
        (lambda i, o: ([*i[:-1], TensorSpec(i[-1].name, "FP32", (-1, 4, -1, 8))], o), "disagree"),
        (lambda i, o: ([*i[:-1], TensorSpec(i[-1].name, "FP32", (-1, -1, 8))], o), "expected"),
        (lambda i, o: ([*i[:-1], TensorSpec(i[-1].name, "FP32", (-1, -1, -1, 8))], o), "fixed"),
    ],
)
def test_anything_else_is_refused_naming_what_is_missing(edit: object, message: str) -> None:
    inputs, outputs = specs()
    with pytest.raises(DecoderLayoutError, match=message):
        layout_of(*edit(inputs, outputs))  # type: ignore[operator]


def batch(ids: list[int], lengths: list[int], longest: int) -> Batch:
    mask = np.array([[0] * (longest - n) + [1] * n for n in lengths], dtype=np.int64)
    cache = np.arange(len(ids) * longest, dtype=np.float32).reshape(len(ids), 1, longest, 1)
    return Batch([cache * mask[:, None, :, None]], mask, np.array(lengths, np.int64), ids)


def test_join_left_pads_the_shorter_side_and_keep_trims_what_no_row_needs() -> None:
    long, short = batch([1], [5], 5), batch([2], [2], 2)
    joined = long.join(short)
    assert joined.ids == [1, 2]
    assert joined.mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert joined.cache[0][1, 0, :, 0].tolist() == [0, 0, 0, 0, 1]
    kept = joined.keep([2])
    assert kept.ids == [2]
    assert kept.mask.tolist() == [[1, 1]]
    assert kept.cache[0].shape == (1, 1, 2, 1)
    assert kept.positions.tolist() == [2]
