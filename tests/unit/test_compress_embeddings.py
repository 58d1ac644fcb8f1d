"""4-bit embedding tables: which lookups qualify, and what GatherBlockQuantized gives back.

`--embedding-bits 4` stores each qualifying table in blocks of 32 values with one fp32 scale
each, as onnxruntime's GatherBlockQuantized kernel reads them. These tests check the stored
format against an independent numpy dequantisation, the error bound that format promises, and
that tables something else also reads (a tied output projection) are left as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgemodel_runtime.compress.graph import (
    EMBEDDING_BLOCK,
    block_quantize_embeddings,
    embedding_tables,
)

VOCAB, HIDDEN = 1024, 96


def lookup_model(*, tied: bool = False, rows: int = VOCAB) -> onnx.ModelProto:
    """ids -> Gather(table) [-> MatMul(table^T) when the output projection is tied]."""
    table = np.random.default_rng(7).normal(scale=0.05, size=(rows, HIDDEN)).astype(np.float32)
    table[3] = 0.0  # an all-zero row must not divide by a zero scale
    nodes = [helper.make_node("Gather", ["table", "ids"], ["embedded"], name="lookup")]
    outputs = [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["n", HIDDEN])]
    if tied:
        nodes.append(helper.make_node("Transpose", ["table"], ["table_t"], name="tie"))
        nodes.append(helper.make_node("MatMul", ["embedded", "table_t"], ["logits"], name="head"))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", rows]))
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        outputs,
        [numpy_helper.from_array(table, "table")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reference(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Blockwise symmetric 4-bit rounding of `table`, then the lookup, in plain numpy."""
    blocks = table.reshape(len(table), -1, EMBEDDING_BLOCK)
    scale = np.abs(blocks).max(axis=2, keepdims=True) / 7.0
    scale[scale == 0] = 1.0
    rounded = np.clip(np.round(blocks / scale), -8, 7) * scale
    return rounded.reshape(table.shape)[ids].astype(np.float32)


def test_the_lookup_returns_the_blockwise_4bit_rounding_of_the_table() -> None:
    model = lookup_model()
    table = numpy_helper.to_array(model.graph.initializer[0])
    assert embedding_tables(model) == ["lookup"]
    assert block_quantize_embeddings(model, ["lookup"]) == ["lookup"]
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized"]
    stored = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    # Two values per byte plus one fp32 scale per 32 values: 5 bits a value instead of 32.
    assert stored == table.size // 2 + table.size // EMBEDDING_BLOCK * 4

    ids = np.array([0, 3, 5, VOCAB - 1, 5], dtype=np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"ids": ids})
    np.testing.assert_allclose(got, reference(table, ids), rtol=1e-6, atol=1e-7)
    # Half a step is the most any value moves: step = block absmax / 7.
    step = np.abs(table[ids].reshape(len(ids), -1, EMBEDDING_BLOCK)).max(axis=2) / 7.0
    assert np.all(np.abs(got - table[ids]) <= np.repeat(step, EMBEDDING_BLOCK, axis=1) / 2 + 1e-7)
    np.testing.assert_array_equal(got[1], 0.0)


def test_a_table_the_model_also_reads_elsewhere_is_left_alone() -> None:
    model = lookup_model(tied=True)
    assert embedding_tables(model) == []
    before = model.SerializeToString()
    assert block_quantize_embeddings(model, []) == []
    assert model.SerializeToString() == before


def test_small_tables_and_other_axes_do_not_qualify() -> None:
    assert embedding_tables(lookup_model(rows=8)) == []  # 768 values: nothing to save
    model = lookup_model()
    model.graph.node[0].attribute.append(helper.make_attribute("axis", 1))
    assert embedding_tables(model) == []
