"""Owns the compressor's inputs: fetching the model, validating it, and validating .npz data.

Every failure here is the user's input, so each becomes a one-line CompressError (exit 2) that
names the file and the problem; library exceptions (protobuf, onnx.checker, onnxruntime) are
caught at this boundary and never escape as tracebacks.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgemodel_runtime.compress.errors import CompressError, one_line
from edgemodel_runtime.sources import SourceError, fetch_to_file, normalize_sha256, sha256_file

MIN_OPSET = 7  # the oldest default-domain opset onnxruntime and onnx.version_converter handle
LABELS_KEY = "labels"


@dataclass(frozen=True)
class InputSpec:
    """What a model input accepts: numpy dtype and shape (None for a symbolic dimension)."""

    name: str
    dtype: np.dtype[np.generic]
    shape: tuple[int | None, ...]


def expected_digest(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_sha256(value)
    except SourceError as exc:
        raise CompressError(f"--sha256: {exc}") from None


def fetch_model(uri: str, dest: Path, expected_sha256: str | None, max_bytes: int) -> str:
    """Fetch and verify the model before any other work; returns its sha256."""
    try:
        return fetch_to_file(uri, dest, expected_sha256=expected_sha256, max_bytes=max_bytes)
    except SourceError as exc:
        raise CompressError(str(exc)) from None


def digest_of(path: Path | None, flag: str) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise CompressError(f"{flag} {path}: no such file")
    return sha256_file(path)


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def load_model(path: Path, label: str) -> onnx.ModelProto:
    """Parse and check an ONNX file; the message says which of the checks failed."""
    data = path.read_bytes()
    if not data:
        raise CompressError(f"{label}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # protobuf's DecodeError and friends: truncated or not protobuf at all
        raise CompressError(
            f"{label}: not an ONNX model (cannot parse; truncated or corrupt?)"
        ) from None
    # Random bytes sometimes parse as a protobuf with nothing useful in it.
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise CompressError(f"{label}: not an ONNX model (no IR version or empty graph)")
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise CompressError(
            f"{label}: unsupported opset {opset} (this tool supports up to {newest})"
        )
    if 0 < opset < MIN_OPSET:
        raise CompressError(f"{label}: unsupported opset {opset} (oldest supported is {MIN_OPSET})")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise CompressError(f"{label}: invalid ONNX model: {one_line(str(exc), 240)}") from None
    return model


def check_loadable(path: Path, label: str) -> None:
    """Create an onnxruntime session: catches ops and types the runtime cannot execute."""
    from edgemodel_runtime.compress.runner import make_session

    try:
        make_session(path, optimize=False)
    except Exception as exc:
        raise CompressError(
            f"{label}: onnxruntime cannot load it: {one_line(str(exc), 240)}"
        ) from None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    initializers = {init.name for init in model.graph.initializer}
    specs: list[InputSpec] = []
    for value in model.graph.input:
        if value.name in initializers:  # old exporters list initializers as inputs too
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise CompressError(f"model input {value.name!r} is not a tensor (unsupported)")
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        shape = tuple(
            int(d.dim_value) if d.HasField("dim_value") else None for d in tensor.shape.dim
        )
        specs.append(InputSpec(value.name, dtype, shape))
    return specs


def float_output_names(model: onnx.ModelProto) -> list[str]:
    return [
        o.name
        for o in model.graph.output
        if o.type.tensor_type.elem_type
        in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    ]


def load_arrays(path: Path, flag: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: np.asarray(archive[key]) for key in archive.files}
    except FileNotFoundError:
        raise CompressError(f"{flag} {path}: no such file") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CompressError(
            f"{flag} {path}: not a readable .npz archive ({one_line(str(exc), 120)})"
        ) from None


def check_arrays(
    arrays: dict[str, np.ndarray], specs: list[InputSpec], flag: str, *, allow_labels: bool
) -> int:
    """Check arrays against the model's inputs (name, dtype, rank, fixed dims); returns rows.

    Rows are batched along axis 0, or are whole requests (see `per_request`).

    Pure: the first problem found is raised, naming the file flag, the array and what differs.
    """
    _check_names(arrays, specs, flag, allow_labels=allow_labels)
    stacked = per_request(arrays, specs)
    rows: int | None = None
    for spec in specs:
        array = arrays[spec.name]
        if array.dtype != spec.dtype:
            raise CompressError(
                f"{flag}: {spec.name!r} has dtype {array.dtype}, the model expects {spec.dtype}"
            )
        if stacked:
            _check_request_shape(array, spec, flag)
        else:
            _check_batched_shape(array, spec, flag)
        rows = _check_rows(array, spec, flag, rows)
        if not stacked:
            _check_fixed_batch(array, spec, flag)
    assert rows is not None  # a model has at least one input (checked by the caller)
    if allow_labels and LABELS_KEY in arrays:
        labels = arrays[LABELS_KEY]
        if (
            labels.ndim != 1
            or labels.shape[0] != rows
            or not np.issubdtype(labels.dtype, np.integer)
        ):
            raise CompressError(
                f"{flag}: 'labels' must be a 1-D integer array with one label per row ({rows})"
            )
    return rows


def _check_names(
    arrays: dict[str, np.ndarray], specs: list[InputSpec], flag: str, *, allow_labels: bool
) -> None:
    """Every array names a model input (or the labels), and every input has its array."""
    expected = {spec.name for spec in specs}
    allowed = expected | ({LABELS_KEY} if allow_labels else set())
    unknown = sorted(set(arrays) - allowed)
    if unknown:
        names = ", ".join(sorted(expected))
        raise CompressError(f"{flag}: array {unknown[0]!r} is not a model input (inputs: {names})")
    missing = [spec.name for spec in specs if spec.name not in arrays]
    if missing:
        raise CompressError(f"{flag}: missing array for model input {missing[0]!r}")


def _check_request_shape(array: np.ndarray, spec: InputSpec, flag: str) -> None:
    """Per-request rows: the array is [requests, *input shape], fixed dimensions matching."""
    if array.ndim != len(spec.shape) + 1:
        raise CompressError(
            f"{flag}: {spec.name!r} has shape {list(array.shape)}; with per-request "
            f"rows every array is [requests, *input shape], here "
            f"[requests, {_show(spec.shape)[1:-1]}]"
        )
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape, strict=True)):
        if want is not None and want > 0 and got != want:
            raise CompressError(
                f"{flag}: {spec.name!r} has requests of shape {list(array.shape[1:])}, "
                f"the model expects {_show(spec.shape)} (dimension {axis} differs)"
            )


def _check_batched_shape(array: np.ndarray, spec: InputSpec, flag: str) -> None:
    """Rows batched along axis 0: the input's rank, its fixed dimensions past the batch."""
    if array.ndim != len(spec.shape) or array.ndim == 0:
        raise CompressError(
            f"{flag}: {spec.name!r} has shape {list(array.shape)}, "
            f"the model expects rank {len(spec.shape)} {_show(spec.shape)}"
        )
    for axis, (got, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True), 1):
        if want is not None and want > 0 and got != want:
            raise CompressError(
                f"{flag}: {spec.name!r} has shape {list(array.shape)}, the model expects "
                f"{_show(spec.shape)} (dimension {axis} differs)"
            )


def _check_fixed_batch(array: np.ndarray, spec: InputSpec, flag: str) -> None:
    batch = spec.shape[0]
    if batch is not None and batch > 0 and array.shape[0] % batch:
        raise CompressError(
            f"{flag}: {spec.name!r} has {array.shape[0]} rows, not a multiple of the "
            f"model's fixed batch size {batch}"
        )


def _check_rows(array: np.ndarray, spec: InputSpec, flag: str, rows: int | None) -> int:
    """The array has rows, as many as the arrays before it (`rows`, None for the first)."""
    if array.shape[0] == 0:
        raise CompressError(f"{flag}: {spec.name!r} has no rows")
    if rows is not None and array.shape[0] != rows:
        raise CompressError(
            f"{flag}: inputs have different row counts ({rows} vs {array.shape[0]})"
        )
    return int(array.shape[0])


def per_request(arrays: dict[str, np.ndarray], specs: list[InputSpec]) -> bool:
    """True when the arrays hold one request per row: every array is [rows, *input shape].

    Models whose batch is not on axis 0 of every input (a recurrent state [layers, batch,
    hidden], a scalar sample rate) cannot be fed rows batched along axis 0; their data files
    stack whole requests instead, one rank more than the input, and each row is run alone.
    """
    present = [s for s in specs if s.name in arrays]
    return bool(present) and all(arrays[s.name].ndim == len(s.shape) + 1 for s in present)


def _show(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None or d <= 0 else str(d) for d in shape) + "]"
