"""Owns `edgemodel compress`'s library: an ONNX model in, a gated content-addressed artifact out.

Split by concern: `inputs` (fetching, validating the model and the .npz data), `settings` (mode
and target defaults, the artifact key), `graph` (opset upgrade, portable optimisation),
`pruning`, `quantize` (the four modes), `runner` (onnxruntime execution and latency), `gate`
(accuracy figures and the verdict), `search` (sensitivity-driven fallback to float), `store`
(atomic content-addressed artifacts), `report` (the report's shape) and `pipeline` (the order
these run in). `compress_cli` is the only place that turns errors into exit codes.
"""

from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.pipeline import Outcome, Request, compress

__all__ = ["CompressError", "Outcome", "Request", "compress"]
