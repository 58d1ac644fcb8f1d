"""Shared fixtures for the compression integration tests: generated models and a CLI runner.

Models come from edgemodel_sandbox.models (generated on first use, cached on disk, never
committed); small synthetic models for edge cases are built here with onnx.helper.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgemodel_sandbox.models import ModelFixture, bert_encoder, digits_classifier

REPO = Path(__file__).resolve().parents[2]
CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO / p) for p in ("operator", "runtime_image", "sandbox")]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def compress_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "edgemodel_cli.main", "compress", *(str(a) for a in args)]


@pytest.fixture(scope="session")
def run_compress() -> CliRunner:
    def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            compress_cmd(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(),
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def digits() -> ModelFixture:
    return digits_classifier()


@pytest.fixture(scope="session")
def bert2() -> ModelFixture:
    """A 2-layer BERT-base-shaped encoder (full hidden size and vocabulary), with a mask."""
    return bert_encoder(layers=2, attention_mask=True)


@pytest.fixture(scope="session")
def bert_small() -> ModelFixture:
    """A BERT-shaped encoder small enough for tests that run the CLI several times."""
    return bert_encoder(layers=2, hidden=256, heads=4, ffn=1024, vocab=4000, seq=32)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


def outlier_mlp(directory: Path) -> tuple[Path, Path]:
    """x[N,16] -> MatMul(w1) -> Relu -> MatMul(w2) -> logits[N,10].

    w1 has one huge weight on an input feature that is always 0 in the data: the float model
    never sees it, but per-tensor int8 quantization of w1 rounds every other weight to zero.
    Keeping `mm1` in float is the one fix, so the accuracy search must find it.
    """
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((16, 32)).astype(np.float32) * 0.3
    w1[0, 0] = 5000.0
    w2 = rng.standard_normal((32, 10)).astype(np.float32) * 0.3
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["logits"], name="mm2"),
        ],
        "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = rng.standard_normal((200, 16)).astype(np.float32)
    data[:, 0] = 0.0
    np.savez(directory / "eval.npz", x=data)
    return save(model, directory / "outlier.onnx"), directory / "eval.npz"


def old_opset_mlp(directory: Path, opset: int = 11) -> tuple[Path, Path]:
    """A tiny two-layer MLP saved at an old opset (per-channel QDQ needs >= 13)."""
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((8, 16)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((16, 4)).astype(np.float32) * 0.3
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
        ],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 6
    data = rng.standard_normal((64, 8)).astype(np.float32)
    np.savez(directory / "data.npz", x=data)
    return save(model, directory / "old.onnx"), directory / "data.npz"


def published(output: Path) -> list[Path]:
    """Entries of an artifact store that a reader would see (temp dirs start with a dot)."""
    if not output.exists():
        return []
    return sorted(p for p in output.iterdir() if not p.name.startswith("."))
