"""Builds a Triton model repository that serves the same ONNX model with a Python backend.

The baseline is the real `tritonserver` binary shipped in the `nvidia-pytriton` wheel (bench
extra) with its Python backend: `model.py` calls onnxruntime exactly like `edgemodel serve`
does, so the comparison is protocol + dispatch overhead, not model speed. With `batching`,
Triton's dynamic batcher hands `execute` several requests at once and the model concatenates
them into one onnxruntime run, which is how a Python-backend user would batch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

MODEL_PY = """
import sys

# The stub embeds the system libpython, which does not see this virtualenv's packages; numpy 1.x
# comes first because the backend's pb_utils.Tensor silently sends empty data with numpy 2.
sys.path[:0] = {site_packages!r}

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

MODEL_PATH = {model_path!r}
BATCHING = {batching!r}


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            MODEL_PATH, options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests):
        inputs = [
            pb_utils.get_input_tensor_by_name(request, "input").as_numpy()
            for request in requests
        ]
        if BATCHING and len(inputs) > 1:
            label, probabilities = self.session.run(None, {{"input": np.concatenate(inputs)}})
            responses, offset = [], 0
            for x in inputs:
                end = offset + x.shape[0]
                responses.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("label", label[offset:end].reshape(-1, 1)),
                    pb_utils.Tensor("probabilities", probabilities[offset:end]),
                ]))
                offset = end
            return responses
        responses = []
        for x in inputs:
            label, probabilities = self.session.run(None, {{"input": x}})
            if BATCHING:  # the batched config declares label as [batch, 1]
                label = label.reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("label", label),
                pb_utils.Tensor("probabilities", probabilities),
            ]))
        return responses
"""

CONFIG_NO_BATCHING = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "input", data_type: TYPE_FP32, dims: [ -1, 64 ] }} ]
output [
  {{ name: "label", data_type: TYPE_INT64, dims: [ -1 ] }},
  {{ name: "probabilities", data_type: TYPE_FP32, dims: [ -1, 10 ] }}
]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

CONFIG_BATCHING = """
name: "{name}"
backend: "python"
max_batch_size: 32
input [ {{ name: "input", data_type: TYPE_FP32, dims: [ 64 ] }} ]
output [
  {{ name: "label", data_type: TYPE_INT64, dims: [ 1 ] }},
  {{ name: "probabilities", data_type: TYPE_FP32, dims: [ 10 ] }}
]
dynamic_batching {{ }}
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""


def pytriton_dir() -> Path | None:
    """`site-packages/pytriton/tritonserver` of the nvidia-pytriton wheel, if installed."""
    for entry in sys.path:
        candidate = Path(entry) / "pytriton" / "tritonserver"
        if (candidate / "bin" / "tritonserver").is_file():
            return candidate
    return None


def numpy1_dir() -> Path:
    """A private numpy 1.x for the Python backend stub (installed once with pip --target)."""
    target = Path.home() / ".cache" / "edgemodel" / "bench" / "triton-numpy1"
    if not (target / "numpy").is_dir():
        print(f"installing numpy<2 for the Triton Python backend into {target}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), "numpy<2"],
            check=True,
        )
    return target


def build(root: Path, model_path: Path, name: str, batching: bool) -> tuple[Path, Path, Path]:
    """Write a model repository and a backend dir; returns (binary, repository, backends)."""
    triton = pytriton_dir()
    if triton is None:
        raise FileNotFoundError("nvidia-pytriton is not installed (pip install '.[bench]')")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"no Triton Python backend stub for Python {version}")
    # The wheel's backend dir has no stub (PyTriton copies one in at run time); build our own
    # instead of writing into site-packages.
    backends = root / "backends"
    python_backend = backends / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for item in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(triton / "backends" / "python" / item, python_backend / item)
    shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    os.chmod(python_backend / "triton_python_backend_stub", 0o755)
    repository = root / "models"
    version_dir = repository / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(
        MODEL_PY.format(
            model_path=str(model_path),
            batching=batching,
            site_packages=[
                str(numpy1_dir()),
                *(entry for entry in sys.path if entry.endswith("site-packages")),
            ],
        )
    )
    config = CONFIG_BATCHING if batching else CONFIG_NO_BATCHING
    (repository / name / "config.pbtxt").write_text(config.format(name=name))
    return triton / "bin" / "tritonserver", repository, backends
