"""A Llama-shaped decoder-only language model fixture, built without PyTorch or downloads.

Owns how the generative fixture is made and cached: an ONNX graph written with onnx.helper
(RMSNorm, rotary position embeddings, grouped-query attention, SwiGLU MLP, untied LM head) in
the input/output layout Optimum and onnxruntime-genai export decoders with:

- inputs ``input_ids`` int64 [batch, seq], ``attention_mask`` int64 [batch, past + seq] and
  ``past_key_values.{i}.key`` / ``.value`` float32 [batch, kv_heads, past, head_dim];
- outputs ``logits`` float32 [batch, seq, vocab] and ``present.{i}.key`` / ``.value``
  float32 [batch, kv_heads, past + seq, head_dim].

Positions are derived inside the graph from the attention mask (cumulative sum - 1), so a
left-padded batch and a step with a KV cache need no ``position_ids`` input. It is a language
model in earnest, made without training: the token embeddings are the leading singular vectors
of the bigram log-probability matrix of real text found offline (the license texts every
Debian system ships), the layers are seeded random with small residual branches, and the LM
head is fitted in closed form (ridge regression onto each position's bigram log-probability
row), so perplexity and next-token agreement on the held-out evaluation sequences measure
something (14.3 against 32 for token frequencies at the default size). Tokens are bytes: id =
byte value, and ``tokenizer.json`` beside the model is that vocabulary as a Hugging Face
tokenizer made with `tokenizers` (byte-level BPE without merges: id = byte value, a ByteLevel
decoder, so text round-trips). Everything is deterministic for a given config and corpus,
written under the user cache (never the repository), and reused. See docs/architecture.md,
"Language models".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from edgemodel_sandbox.models import _save_npz, cache_dir

DECODER_GRAPH_VERSION = 2  # bump when the graph or the fitting changes: the cache is keyed by it
OPSET = 17
CORPUS_DIRS = (Path("/usr/share/common-licenses"),)
MASK_VALUE = -1e9
BRANCH_GAIN = 0.2  # residual branches stay small beside the embedding, which carries the bigram
RIDGE = 0.01
BYTE_VALUES = 256
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class DecoderConfig:
    """Shape and seed of a generated decoder. Defaults are the small test size (0.43 M params)."""

    vocab_size: int = 256
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 352
    max_positions: int = 1024
    rope_theta: float = 10000.0
    seed: int = 0
    train_sequences: int = 256
    eval_sequences: int = 32
    sequence_length: int = 128
    # Scale the hidden channels listed here in the first layer's input weights (an "outlier
    # channel" like real LLMs have): coarse 4-bit blocks then lose the small weights around them.
    outlier_scale: float = 0.0

    def validate(self) -> None:
        if self.vocab_size < 256:
            raise ValueError(f"vocab_size={self.vocab_size}: byte tokens need at least 256")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise ValueError(f"hidden={self.hidden} / heads={self.heads} must be an even size")
        if self.sequence_length > self.max_positions:
            raise ValueError(f"sequence_length={self.sequence_length} > max_positions")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tag(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"decoder-v{DECODER_GRAPH_VERSION}-{self.layers}x{self.hidden}-{digest[:10]}"


class _Graph:
    """Accumulates nodes and initializers of the decoder graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def ints(self, *values: int) -> str:
        self._count += 1
        return self.const(f"const_{self._count}", np.array(values, dtype=np.int64))

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        self._count += 1
        out = output or f"{op.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self._count}", **attrs))
        return out

    def rms_norm(self, x: str, weight: str) -> str:
        square = self.node("Mul", [x, x])
        mean = self.node("ReduceMean", [square], axes=[-1], keepdims=1)
        eps = self.const(f"{weight}.eps", np.array(1e-5, dtype=np.float32))
        inv = self.node("Reciprocal", [self.node("Sqrt", [self.node("Add", [mean, eps])])])
        return self.node("Mul", [self.node("Mul", [x, inv]), weight])


def bigram_embeddings(cfg: DecoderConfig, train: np.ndarray) -> np.ndarray:
    """Token embeddings [vocab, hidden] that carry each token's next-token distribution: the
    leading singular vectors of the (row-centred, smoothed) bigram log-probability matrix,
    rows scaled to unit RMS. Tokens the text never shows get small random rows."""
    log_probs = bigram_log_probs(cfg, train)
    log_probs -= log_probs.mean(axis=1, keepdims=True)
    # The left singular vectors, from the symmetric eigenproblem (LAPACK's SVD does not
    # converge on some of these matrices).
    eigenvalues, vectors = np.linalg.eigh(log_probs @ log_probs.T)
    order = np.argsort(eigenvalues)[::-1][: cfg.hidden]
    leading = vectors[:, order] * np.clip(eigenvalues[order], 0.0, None) ** 0.25
    # A hidden size above the vocabulary gets small random channels beyond the spectrum.
    rng = np.random.default_rng(cfg.seed + 2)
    embed = 1e-3 * rng.standard_normal((cfg.vocab_size, cfg.hidden))
    embed[:, : leading.shape[1]] += leading
    embed /= np.sqrt(np.mean(embed**2, axis=1, keepdims=True))
    table: np.ndarray = embed.astype(np.float32)
    return table


def layer_weights(cfg: DecoderConfig, embed: np.ndarray) -> dict[str, np.ndarray]:
    """Seeded random transformer layers over `embed`; the LM head is fitted later."""
    rng = np.random.default_rng(cfg.seed)
    h, kv = cfg.hidden, cfg.kv_heads * cfg.head_dim

    def dense(n_in: int, n_out: int, gain: float = 1.0) -> np.ndarray:
        values: np.ndarray = rng.standard_normal((n_in, n_out)) * gain / np.sqrt(n_in)
        return values.astype(np.float32)

    w: dict[str, np.ndarray] = {"embed": embed}
    for i in range(cfg.layers):
        p = f"layers.{i}."
        w[p + "input_norm"] = np.ones(h, np.float32)
        w[p + "q"], w[p + "k"], w[p + "v"] = dense(h, h, 2.0), dense(h, kv, 2.0), dense(h, kv)
        w[p + "o"] = dense(h, h, BRANCH_GAIN)
        w[p + "post_norm"] = np.ones(h, np.float32)
        w[p + "gate"], w[p + "up"] = dense(h, cfg.intermediate), dense(h, cfg.intermediate)
        w[p + "down"] = dense(cfg.intermediate, h, BRANCH_GAIN)
    if cfg.outlier_scale:
        for name in ("q", "k", "v", "gate", "up"):
            w[f"layers.0.{name}"][:2] *= cfg.outlier_scale
    w["norm"] = np.ones(h, np.float32)
    w["lm_head"] = np.zeros((h, cfg.vocab_size), np.float32)
    return w


def _rope_tables(cfg: DecoderConfig) -> tuple[np.ndarray, np.ndarray]:
    half = cfg.head_dim // 2
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(half, dtype=np.float64) / half)
    angles = np.outer(np.arange(cfg.max_positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _mask_and_rope(g: _Graph, cfg: DecoderConfig) -> tuple[str, str, str]:
    """The [batch, 1, seq, total] attention mask and the [batch, 1, seq, head_dim] cos/sin."""
    seq = g.node("Gather", [g.node("Shape", ["input_ids"]), g.ints(1)])
    total = g.node("Gather", [g.node("Shape", ["attention_mask"]), g.ints(1)])
    past = g.node("Sub", [total, seq])
    query_pos = g.node("Range", [past, total, g.ints(1)])
    key_pos = g.node("Range", [g.ints(0), total, g.ints(1)])
    causal = g.node(
        "LessOrEqual",
        [g.node("Unsqueeze", [key_pos, g.ints(0)]), g.node("Unsqueeze", [query_pos, g.ints(1)])],
    )
    padding = g.node("Cast", ["attention_mask"], to=TensorProto.BOOL)
    mask = g.node("And", [causal, g.node("Unsqueeze", [padding, g.ints(1, 2)])])
    positions = g.node("Sub", [g.node("CumSum", ["attention_mask", g.ints(1)]), g.ints(1)])
    positions = g.node("Max", [positions, g.ints(0)])
    positions = g.node("Slice", [positions, past, total, g.ints(1)])
    cos_table, sin_table = _rope_tables(cfg)
    cos = g.node("Gather", [g.const("rope.cos", cos_table), positions])
    sin = g.node("Gather", [g.const("rope.sin", sin_table), positions])
    return mask, g.node("Unsqueeze", [cos, g.ints(1)]), g.node("Unsqueeze", [sin, g.ints(1)])


def _heads(g: _Graph, x: str, heads: int, head_dim: int) -> str:
    """[batch, seq, heads * head_dim] -> [batch, heads, seq, head_dim]."""
    shaped = g.node("Reshape", [x, g.ints(0, 0, heads, head_dim)])
    return g.node("Transpose", [shaped], perm=[0, 2, 1, 3])


def _rotate(g: _Graph, x: str, cos: str, sin: str, head_dim: int) -> str:
    half = head_dim // 2
    first = g.node("Slice", [x, g.ints(0), g.ints(half), g.ints(3)])
    second = g.node("Slice", [x, g.ints(half), g.ints(head_dim), g.ints(3)])
    rotated = g.node("Concat", [g.node("Neg", [second]), first], axis=-1)
    return g.node("Add", [g.node("Mul", [x, cos]), g.node("Mul", [rotated, sin])])


def _repeat_kv(g: _Graph, x: str, cfg: DecoderConfig) -> str:
    """Grouped-query attention: [batch, kv_heads, total, d] -> [batch, heads, total, d]."""
    group = cfg.heads // cfg.kv_heads
    if group == 1:
        return x
    expanded = g.node("Expand", [g.node("Unsqueeze", [x, g.ints(2)]), g.ints(1, 1, group, 1, 1)])
    return g.node("Reshape", [expanded, g.ints(0, cfg.heads, -1, cfg.head_dim)])


def _attention(g: _Graph, cfg: DecoderConfig, x: str, i: int, ctx: tuple[str, str, str]) -> str:
    mask, cos, sin = ctx
    p, d = f"layers.{i}.", cfg.head_dim
    q = _rotate(g, _heads(g, g.node("MatMul", [x, p + "q"]), cfg.heads, d), cos, sin, d)
    k = _rotate(g, _heads(g, g.node("MatMul", [x, p + "k"]), cfg.kv_heads, d), cos, sin, d)
    v = _heads(g, g.node("MatMul", [x, p + "v"]), cfg.kv_heads, d)
    key = g.node("Concat", [f"past_key_values.{i}.key", k], f"present.{i}.key", axis=2)
    value = g.node("Concat", [f"past_key_values.{i}.value", v], f"present.{i}.value", axis=2)
    key_t = g.node("Transpose", [_repeat_kv(g, key, cfg)], perm=[0, 1, 3, 2])
    scale = g.const(f"{p}scale", np.array(1.0 / np.sqrt(d), dtype=np.float32))
    scores = g.node("Mul", [g.node("MatMul", [q, key_t]), scale])
    masked = g.node("Where", [mask, scores, g.const(f"{p}mask", np.array(MASK_VALUE, np.float32))])
    probs = g.node("Softmax", [masked], axis=-1)
    context = g.node("MatMul", [probs, _repeat_kv(g, value, cfg)])
    merged = g.node("Transpose", [context], perm=[0, 2, 1, 3])
    return g.node("MatMul", [g.node("Reshape", [merged, g.ints(0, 0, cfg.hidden)]), p + "o"])


def _mlp(g: _Graph, x: str, i: int) -> str:
    p = f"layers.{i}."
    gate = g.node("MatMul", [x, p + "gate"])
    silu = g.node("Mul", [gate, g.node("Sigmoid", [gate])])
    return g.node("MatMul", [g.node("Mul", [silu, g.node("MatMul", [x, p + "up"])]), p + "down"])


def _io(cfg: DecoderConfig) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch", "total"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "seq", cfg.vocab_size])]
    for i in range(cfg.layers):
        for kind in ("key", "value"):
            past: list[str | int | None] = ["batch", cfg.kv_heads, "past", cfg.head_dim]
            present: list[str | int | None] = ["batch", cfg.kv_heads, "total", cfg.head_dim]
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", f32, past))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", f32, present))
    return inputs, outputs


def build_decoder(
    cfg: DecoderConfig, weights: dict[str, np.ndarray], *, hidden_output: bool = False
) -> onnx.ModelProto:
    """The decoder graph over `weights`; `hidden_output` also exposes the final normed hidden
    state as `hidden` [batch, seq, hidden] (used to fit the LM head)."""
    cfg.validate()
    g = _Graph()
    for name, value in weights.items():
        g.const(name, value)
    ctx = _mask_and_rope(g, cfg)
    x = g.node("Gather", ["embed", "input_ids"])
    for i in range(cfg.layers):
        x = g.node("Add", [x, _attention(g, cfg, g.rms_norm(x, f"layers.{i}.input_norm"), i, ctx)])
        x = g.node("Add", [x, _mlp(g, g.rms_norm(x, f"layers.{i}.post_norm"), i)])
    hidden = g.node("Identity", [g.rms_norm(x, "norm")], "hidden")
    g.node("MatMul", [hidden, "lm_head"], "logits")
    inputs, outputs = _io(cfg)
    if hidden_output:
        outputs.append(
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", cfg.hidden])
        )
    graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgemodel-sandbox"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def empty_past(cfg: DecoderConfig, batch: int) -> dict[str, np.ndarray]:
    """Zero-length KV cache feeds for the first step."""
    shape = (batch, cfg.kv_heads, 0, cfg.head_dim)
    return {
        f"past_key_values.{i}.{kind}": np.zeros(shape, np.float32)
        for i in range(cfg.layers)
        for kind in ("key", "value")
    }


def corpus_bytes(dirs: tuple[Path, ...] = CORPUS_DIRS) -> bytes:
    """The offline training text: every regular file under `dirs`, in name order."""
    files = sorted(p for d in dirs if d.is_dir() for p in d.rglob("*") if p.is_file())
    text = b"\n".join(p.read_bytes() for p in files)
    if len(text) < 50_000:
        raise RuntimeError(f"decoder corpus too small ({len(text)} bytes under {dirs})")
    return text


def _sequences(text: bytes, cfg: DecoderConfig) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training and evaluation windows of `sequence_length + 1` tokens: the tail 10 %
    of the corpus is held out for evaluation."""
    tokens = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    split = int(len(tokens) * 0.9)
    length = cfg.sequence_length + 1
    rng = np.random.default_rng(cfg.seed + 1)

    def windows(part: np.ndarray, count: int) -> np.ndarray:
        starts = rng.choice(len(part) - length, size=count, replace=False)
        return np.stack([part[s : s + length] for s in np.sort(starts)])

    return windows(tokens[:split], cfg.train_sequences), windows(tokens[split:], cfg.eval_sequences)


def _hidden_states(cfg: DecoderConfig, weights: dict[str, np.ndarray], ids: np.ndarray) -> Any:
    import onnxruntime as ort  # only needed while fitting

    model = build_decoder(cfg, weights, hidden_output=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out = []
    for start in range(0, len(ids), 32):
        batch = ids[start : start + 32]
        feeds = {"input_ids": batch, "attention_mask": np.ones_like(batch)}
        feeds.update(empty_past(cfg, len(batch)))
        out.append(session.run(["hidden"], feeds)[0])
    return np.concatenate(out)


def bigram_log_probs(cfg: DecoderConfig, train: np.ndarray) -> np.ndarray:
    """[vocab, vocab] smoothed log P(next | current) counted on the training windows."""
    counts = np.full((cfg.vocab_size, cfg.vocab_size), 0.1)
    np.add.at(counts, (train[:, :-1].reshape(-1), train[:, 1:].reshape(-1)), 1.0)
    log_probs: np.ndarray = np.log(counts / counts.sum(axis=1, keepdims=True))
    return log_probs


def _fit_lm_head(cfg: DecoderConfig, weights: dict[str, np.ndarray], train: np.ndarray) -> None:
    """Ridge regression (closed form) of the bigram log-probability row of each position's
    token on its final hidden state: smooth targets give calibrated logits, unlike one-hot
    targets, and the layers' context features refine them."""
    hidden = _hidden_states(cfg, weights, train[:, :-1]).reshape(-1, cfg.hidden)
    hidden = hidden.astype(np.float64)
    targets = bigram_log_probs(cfg, train)
    targets -= targets.mean(axis=1, keepdims=True)
    rows = targets[train[:, :-1].reshape(-1)]
    gram = hidden.T @ hidden + RIDGE * len(hidden) * np.eye(cfg.hidden)
    weights["lm_head"] = np.linalg.solve(gram, hidden.T @ rows).astype(np.float32)


def _byte_to_char() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte: the alphabet of a ByteLevel tokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(BYTE_VALUES) if b not in printable]
    mapping = {b: chr(b) for b in printable}
    mapping.update({b: chr(BYTE_VALUES + n) for n, b in enumerate(others)})
    return mapping


def byte_tokenizer_json() -> str:
    """The fixture's vocabulary as a Hugging Face tokenizer.json: token id = byte value.

    A byte-level BPE with the 256 byte symbols and no merges, ByteLevel pre-tokenizer (no
    prefix space, no regex split) and decoder: `encode(text).ids` is `list(text.encode())` and
    `decode(ids)` gives the text back. Deterministic (ids in order, no merges).
    """
    vocab = {char: byte for byte, char in _byte_to_char().items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer.to_str(pretty=True) + "\n"


def _ensure_tokenizer(directory: Path) -> None:
    """Writes tokenizer.json into a fixture folder that lacks it (folders made before it)."""
    path = directory / TOKENIZER_FILE
    if path.is_file():
        return
    staging = path.with_name(f".{TOKENIZER_FILE}.{os.getpid()}.tmp")
    staging.write_text(byte_tokenizer_json())
    os.replace(staging, path)


def _write(directory: Path, cfg: DecoderConfig) -> None:
    text = corpus_bytes()
    train, evaluation = _sequences(text, cfg)
    weights = layer_weights(cfg, bigram_embeddings(cfg, train))
    _fit_lm_head(cfg, weights, train)
    model = build_decoder(cfg, weights)
    (directory / "model.onnx").write_bytes(model.SerializeToString())
    calibration = train[: min(32, len(train)), :-1]
    _save_npz(directory / "evaluation.npz", input_ids=evaluation)
    _save_npz(directory / "calibration.npz", input_ids=calibration)
    meta = {
        "config": asdict(cfg),
        "tokens": "bytes: token id = byte value",
        "corpus_sha256": hashlib.sha256(text).hexdigest(),
        "parameters": int(sum(v.size for v in weights.values())),
    }
    _ensure_tokenizer(directory)
    (directory / "decoder.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def ensure_decoder(config: DecoderConfig | None = None, directory: Path | None = None) -> Path:
    """The folder holding the decoder fixture for `config`, generated on first use.

    It holds `model.onnx`, `evaluation.npz` / `calibration.npz` (key `input_ids`, int64
    [N, L] byte-token windows of held-out / training text; evaluation windows are
    `sequence_length + 1` long so every position has a next token), `tokenizer.json` (the byte
    vocabulary, `byte_tokenizer_json`) and `decoder.json` (config, parameter count). Safe to
    call from concurrent processes.
    """
    cfg = config or DecoderConfig()
    cfg.validate()
    target = directory or cache_dir() / cfg.tag()
    if (target / "decoder.json").is_file():
        _ensure_tokenizer(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "decoder.json").is_file():
            _ensure_tokenizer(target)
            return target
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            _write(staging, cfg)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
