"""Real model fixtures for the demo, tests and benchmarks, built without PyTorch.

Owns how fixture models are made and cached: a classifier trained on scikit-learn's bundled
digits dataset (converted with skl2onnx) with its held-out split as evaluation data. Models
are generated on first use into a cache folder and never committed.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgemodel_sandbox import files
from edgemodel_sandbox.files import atomic_write, sha256_file

DIGITS_SEED = 7
BERT_GRAPH_VERSION = 2  # bump when the graph changes: cached fixtures are keyed by it


@dataclass(frozen=True)
class ModelFixture:
    """A generated ONNX model plus the .npz files that exercise it."""

    model: Path
    sha256: str
    calibration: Path  # .npz keyed by input name
    evaluation: Path  # .npz keyed by input name, plus `labels`
    input_name: str


def cache_dir() -> Path:
    return files.cache_dir("fixtures", "EDGEMODEL_FIXTURES_DIR")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez's format, byte-for-byte reproducible: np.savez stamps each member with the
    current time, which would give the same data a new sha256 on every machine and run."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue()
            )
    os.replace(tmp, path)


def digits_classifier(
    directory: Path | None = None, hidden: tuple[int, ...] = (256, 128)
) -> ModelFixture:
    """An MLP trained on the digits dataset (8x8 images, 10 classes), float32 input `input` [N, 64].

    Outputs: `label` (int64 [N]) and `probabilities` (float32 [N, 10]). The held-out 30 % split
    is the evaluation set; 200 training rows are the calibration set.
    """
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    tag = "x".join(str(h) for h in hidden)
    directory = directory or cache_dir() / f"digits-mlp-{tag}"
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.onnx"
    calib_path = directory / "calibration.npz"
    eval_path = directory / "evaluation.npz"
    if not (model_path.exists() and calib_path.exists() and eval_path.exists()):
        data = load_digits()
        features = (data.data / 16.0).astype(np.float32)
        x_train, x_test, y_train, y_test = train_test_split(
            features, data.target, test_size=0.3, random_state=DIGITS_SEED, stratify=data.target
        )
        clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=400, random_state=DIGITS_SEED)
        clf.fit(x_train, y_train)
        onx = to_onnx(
            clf,
            x_train[:1],
            options={id(clf): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        onx.graph.input[0].name = "input"
        for node in onx.graph.node:
            node.input[:] = ["input" if name == "X" else name for name in node.input]
        atomic_write(model_path, onx.SerializeToString())
        _save_npz(calib_path, input=x_train[:200])
        _save_npz(eval_path, input=x_test, labels=y_test.astype(np.int64))
    return ModelFixture(model_path, sha256_file(model_path), calib_path, eval_path, "input")


class _GraphBuilder:
    """Nodes and initializers of an ONNX graph, appended in the order they are made."""

    def __init__(self, hidden: int) -> None:
        self.hidden = hidden
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], rng: np.random.Generator) -> str:
        # BERT's initializer range (std 0.02); every tensor gets its own draw so no two
        # initializers are byte-identical (exporters deduplicate those, faking size and speed).
        data = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attrs))
        return output

    def layer_norm(self, x: str, prefix: str) -> str:
        gamma = self.const(f"{prefix}.gamma", np.ones(self.hidden, np.float32))
        beta = self.const(f"{prefix}.beta", np.zeros(self.hidden, np.float32))
        return self.node(
            "LayerNormalization", [x, gamma, beta], f"{prefix}.out", axis=-1, epsilon=1e-12
        )

    def dense(self, x: str, prefix: str, n_in: int, n_out: int, rng: np.random.Generator) -> str:
        w = self.weight(f"{prefix}.weight", (n_in, n_out), rng)
        b = self.const(
            f"{prefix}.bias",
            (rng.standard_normal(n_out, dtype=np.float32) * 0.02).astype(np.float32),
        )
        return self.node("Add", [self.node("MatMul", [x, w], f"{prefix}.mm"), b], f"{prefix}.out")


@dataclass(frozen=True)
class _LayerConstants:
    """The shared constants every encoder layer uses (reshape shapes, scale, GELU's)."""

    split_shape: str
    merge_shape: str
    scale: str
    sqrt2: str
    one: str
    half: str
    mask_bias: str | None


def _mask_bias(g: _GraphBuilder) -> str:
    # (1 - mask) * -10000 broadcast over heads and query positions, written in the node
    # order BERT's exporters produce (Unsqueeze, Unsqueeze, Cast, Sub, Mul).
    m = g.node(
        "Unsqueeze", ["attention_mask", g.const("mask.axis1", np.array([1], np.int64))], "mask.u1"
    )
    m = g.node("Unsqueeze", [m, g.const("mask.axis2", np.array([2], np.int64))], "mask.u2")
    m = g.node("Cast", [m], "mask.float", to=TensorProto.FLOAT)
    inv = g.node("Sub", [g.const("mask.one", np.array(1.0, np.float32)), m], "mask.inv")
    return g.node("Mul", [inv, g.const("mask.neg", np.array(-10000.0, np.float32))], "mask.bias")


def _encoder_layer(
    g: _GraphBuilder, x: str, p: str, ffn: int, c: _LayerConstants, rng: np.random.Generator
) -> str:
    """One BERT encoder layer (self-attention, then the GELU feed-forward) named `p`."""
    hidden = g.hidden
    heads_of: dict[str, str] = {}
    for proj in ("query", "key", "value"):
        out = g.dense(x, f"{p}.attention.{proj}", hidden, hidden, rng)
        heads_of[proj] = g.node("Reshape", [out, c.split_shape], f"{p}.attention.{proj}.heads")
    q = g.node("Transpose", [heads_of["query"]], f"{p}.attention.q", perm=[0, 2, 1, 3])
    k = g.node("Transpose", [heads_of["key"]], f"{p}.attention.k", perm=[0, 2, 3, 1])
    v = g.node("Transpose", [heads_of["value"]], f"{p}.attention.v", perm=[0, 2, 1, 3])
    scores = g.node(
        "Div", [g.node("MatMul", [q, k], f"{p}.attention.qk"), c.scale], f"{p}.attention.scores"
    )
    if c.mask_bias is not None:
        scores = g.node("Add", [scores, c.mask_bias], f"{p}.attention.masked")
    probs = g.node("Softmax", [scores], f"{p}.attention.probs", axis=-1)
    ctx = g.node(
        "Transpose",
        [g.node("MatMul", [probs, v], f"{p}.attention.ctx")],
        f"{p}.attention.ctx_t",
        perm=[0, 2, 1, 3],
    )
    ctx = g.node("Reshape", [ctx, c.merge_shape], f"{p}.attention.merged")
    attn = g.dense(ctx, f"{p}.attention.output", hidden, hidden, rng)
    x = g.layer_norm(g.node("Add", [attn, x], f"{p}.attention.residual"), f"{p}.attention.norm")
    h = g.dense(x, f"{p}.ffn.intermediate", hidden, ffn, rng)
    # Erf-based GELU, exactly as BERT defines it: x * 0.5 * (1 + erf(x / sqrt(2))).
    erf = g.node("Erf", [g.node("Div", [h, c.sqrt2], f"{p}.gelu.div")], f"{p}.gelu.erf")
    gelu = g.node(
        "Mul",
        [g.node("Mul", [h, g.node("Add", [erf, c.one], f"{p}.gelu.add")], f"{p}.gelu.mul"), c.half],
        f"{p}.gelu.out",
    )
    out = g.dense(gelu, f"{p}.ffn.output", ffn, hidden, rng)
    return g.layer_norm(g.node("Add", [out, x], f"{p}.ffn.residual"), f"{p}.ffn.norm")


def _bert_graph(
    *,
    layers: int,
    hidden: int,
    heads: int,
    ffn: int,
    vocab: int,
    seq: int,
    attention_mask: bool,
    seed: int,
) -> bytes:
    """Serialize a BERT-shaped encoder built node by node with onnx.helper (opset 17)."""
    head_dim = hidden // heads
    g = _GraphBuilder(hidden)
    rng = np.random.default_rng(seed)
    word = g.weight("embeddings.word", (vocab, hidden), rng)
    position = g.weight("embeddings.position", (seq, hidden), rng)
    pos_ids = g.const("embeddings.position_ids", np.arange(seq, dtype=np.int64))
    emb = g.node(
        "Add",
        [
            g.node("Gather", [word, "input_ids"], "embeddings.word_out"),
            g.node("Gather", [position, pos_ids], "embeddings.position_out"),
        ],
        "embeddings.sum",
    )
    x = g.layer_norm(emb, "embeddings.norm")
    mask_bias = _mask_bias(g) if attention_mask else None
    constants = _LayerConstants(
        split_shape=g.const("shape.split_heads", np.array([0, 0, heads, head_dim], np.int64)),
        merge_shape=g.const("shape.merge_heads", np.array([0, 0, hidden], np.int64)),
        # Div by sqrt(head_dim), as BERT's exporters write it (so runtime fusions see the
        # usual shape).
        scale=g.const("attention.scale", np.array(np.sqrt(head_dim), np.float32)),
        sqrt2=g.const("gelu.sqrt2", np.array(np.sqrt(2.0), np.float32)),
        one=g.const("gelu.one", np.array(1.0, np.float32)),
        half=g.const("gelu.half", np.array(0.5, np.float32)),
        mask_bias=mask_bias,
    )
    for i in range(layers):
        layer_rng = np.random.default_rng([seed, i + 1])  # an independent stream per layer
        x = _encoder_layer(g, x, f"layer{i}", ffn, constants, layer_rng)
    rng = np.random.default_rng([seed, layers + 1])
    cls = g.node(
        "Gather", [x, g.const("pooler.cls_index", np.array(0, np.int64))], "pooler.cls", axis=1
    )
    pooled = g.node("Tanh", [g.dense(cls, "pooler.dense", hidden, hidden, rng)], "pooler.out")
    logits_pre = g.dense(pooled, "classifier", hidden, 2, rng)
    g.nodes.append(helper.make_node("Identity", [logits_pre], ["logits"], name="logits"))
    return _serialize_bert(g, layers=layers, seq=seq, attention_mask=attention_mask)


def _serialize_bert(g: _GraphBuilder, *, layers: int, seq: int, attention_mask: bool) -> bytes:
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])]
    if attention_mask:
        inputs.append(
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", seq])
        )
    graph = helper.make_graph(
        g.nodes,
        f"bert_encoder_{layers}l",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgemodel-fixtures"
    )
    model.ir_version = 8  # what onnxruntime releases back to 1.15 can load
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def bert_encoder(
    directory: Path | None = None,
    *,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
    vocab: int = 30522,
    seq: int = 128,
    attention_mask: bool = False,
    calibration_rows: int = 16,
    evaluation_rows: int = 32,
    seed: int = 11,
) -> ModelFixture:
    """A BERT-base-shaped encoder with random (independently drawn) weights, opset 17.

    Input `input_ids` int64 [batch, seq] (plus `attention_mask` int64 [batch, seq] when asked);
    output `logits` float32 [batch, 2] from the pooled [CLS] position. Calibration and
    evaluation sets are random token ids (no labels: there is no task to be right about).
    Defaults are BERT-base (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522, seq 128);
    tests pass e.g. `layers=2` to stay fast.
    """
    mask_tag = "-mask" if attention_mask else ""
    shape = f"L{layers}-H{hidden}-A{heads}-F{ffn}-V{vocab}-S{seq}"
    tag = f"bert-v{BERT_GRAPH_VERSION}-{shape}{mask_tag}-s{seed}"
    directory = directory or cache_dir() / tag
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.onnx"
    calib_path = directory / "calibration.npz"
    eval_path = directory / "evaluation.npz"
    if not (model_path.exists() and calib_path.exists() and eval_path.exists()):
        data = _bert_graph(
            layers=layers,
            hidden=hidden,
            heads=heads,
            ffn=ffn,
            vocab=vocab,
            seq=seq,
            attention_mask=attention_mask,
            seed=seed,
        )
        atomic_write(model_path, data)
        rng = np.random.default_rng([seed, 0])
        for path, rows in ((calib_path, calibration_rows), (eval_path, evaluation_rows)):
            arrays = {"input_ids": rng.integers(0, vocab, size=(rows, seq), dtype=np.int64)}
            if attention_mask:
                # Real batches are padded: keep a random-length prefix of each row.
                lengths = rng.integers(seq // 4, seq + 1, size=rows)
                arrays["attention_mask"] = (np.arange(seq)[None, :] < lengths[:, None]).astype(
                    np.int64
                )
            _save_npz(path, **arrays)
    return ModelFixture(model_path, sha256_file(model_path), calib_path, eval_path, "input_ids")


def wide_classifier(
    width: int = 2048, layers: int = 3, directory: Path | None = None
) -> ModelFixture:
    """A much larger classifier with the digits model's interface (`input` float32 [N, 64] ->
    `label` int64 [N], `probabilities` float32 [N, 10]): `layers` dense ReLU layers of `width`
    units, each initialised independently from a fixed seed. Its answers are not meant to be
    good; its cost is real — the "genuinely slower revision" of the SLO tests.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory = directory or cache_dir() / f"wide-mlp-{width}x{layers}"
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.onnx"
    if not model_path.exists():
        rng = np.random.default_rng(20261125)
        nodes, inits = [], []
        previous, size = "input", 64
        for i in range(layers + 1):
            out = 10 if i == layers else width
            weight = (rng.standard_normal((size, out)) / np.sqrt(size)).astype(np.float32)
            inits += [
                numpy_helper.from_array(weight, f"W{i}"),
                numpy_helper.from_array(np.zeros(out, np.float32), f"B{i}"),
            ]
            nodes += [
                helper.make_node("MatMul", [previous, f"W{i}"], [f"m{i}"]),
                helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"]),
            ]
            previous = f"a{i}"
            if i < layers:
                nodes.append(helper.make_node("Relu", [previous], [f"r{i}"]))
                previous = f"r{i}"
            size = out
        nodes += [
            helper.make_node("Softmax", [previous], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ]
        graph = helper.make_graph(
            nodes,
            "wide_mlp",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
            [
                helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
            ],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        atomic_write(model_path, model.SerializeToString())
    digits = digits_classifier()
    return ModelFixture(
        model_path, sha256_file(model_path), digits.calibration, digits.evaluation, "input"
    )
