"""Owns the KServe v2 tensor vocabulary: datatypes, tensor specs and the wire codecs.

Both protocols carry a tensor either as raw little-endian bytes (HTTP binary extension, gRPC
`raw_input_contents`) or as a list of values (HTTP JSON `data`, gRPC typed `contents`). This
module turns either form into a numpy array of the declared datatype and shape, checking that
the byte count or element count matches the shape, and back again for outputs. Raw bytes are
wrapped with `np.frombuffer` (no copy) because that is the hot path.

`decode_json_document` is the off-process half of the JSON path: it parses a large JSON
inference header and turns every input's `data` list into its array right there, so only
arrays (a fraction of the text's size) come back to the server process and its event loop
never holds the GIL for a large decode (docs/architecture.md, "Serving boundary").
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ServeError, invalid

# v2 datatype -> numpy dtype, explicitly little-endian because that is the wire byte order.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

_KIND_TO_DATATYPE: dict[tuple[str, int], str] = {
    (dtype.kind, dtype.itemsize): name for name, dtype in NUMPY_DTYPES.items() if name != "BYTES"
}

# Triton's model-config enum names, used by the model config endpoint.
CONFIG_TYPES: dict[str, str] = {name: f"TYPE_{name}" for name in NUMPY_DTYPES}
CONFIG_TYPES["BYTES"] = "TYPE_STRING"

# A shape can name at most this many elements; it stops `[2**62]` with no data from allocating.
MAX_ELEMENTS = 1 << 31

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: v2 datatype and shape, -1 marking a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def datatype_of(array: Array) -> str:
    """The v2 datatype of a numpy array (object/str arrays are BYTES)."""
    if array.dtype.kind in ("O", "U", "S"):
        return "BYTES"
    try:
        return _KIND_TO_DATATYPE[(array.dtype.kind, array.dtype.itemsize)]
    except KeyError:
        raise invalid(f"unsupported tensor dtype {array.dtype}") from None


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """Validate a client-supplied shape (a list of non-negative ints) and return it as a tuple."""
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise invalid(f"input {name!r}: 'shape' must be a list of integers")
    dims: list[int] = []
    for dim in shape:
        # bool is an int subclass; `[true, 3]` is a client bug, not a shape.
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise invalid(f"input {name!r}: shape {list(shape)!r} must hold non-negative integers")
        dims.append(dim)
    if math.prod(dims) > MAX_ELEMENTS:
        raise invalid(f"input {name!r}: shape {dims} has too many elements")
    return tuple(dims)


def check_datatype(name: str, datatype: Any) -> str:
    if not isinstance(datatype, str) or datatype not in NUMPY_DTYPES:
        raise invalid(
            f"input {name!r}: unknown datatype {datatype!r} (expected one of "
            f"{', '.join(NUMPY_DTYPES)})"
        )
    return datatype


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview) -> Array:
    """Decode raw little-endian bytes into an array of `shape` (zero copy for numeric types)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _deserialize_bytes(name, raw, count).reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid(
            f"input {name!r}: got {len(raw)} bytes of data but shape {list(shape)} of "
            f"{datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


@dataclass(frozen=True)
class DecodeFailure:
    """Stands in for an input's `data` that `decode_json_document` could not decode."""

    message: str


def decode_json_document(text: bytes | bytearray) -> tuple[Any, str | None]:
    """Parse a JSON inference header and pre-decode each input's `data`: (document, error).

    Runs in a decoder process (so it returns an error string rather than raising). An input
    whose declared name, datatype and shape are well formed gets its `data` replaced by the
    array `from_list` makes of it, or by a `DecodeFailure`; anything malformed is left for the
    server's own checks, which report it exactly as for a small body.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, f"malformed JSON inference header: {exc}"
    inputs = document.get("inputs") if isinstance(document, dict) else None
    for item in inputs if isinstance(inputs, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("data"), list):
            continue
        name = item.get("name")
        try:
            shape = check_shape(str(name), item.get("shape"))
            datatype = check_datatype(str(name), item.get("datatype"))
            item["data"] = from_list(str(name), datatype, shape, item["data"])
        except ServeError as exc:
            item["data"] = DecodeFailure(exc.message)
    return document, None


def from_list(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> Array:
    """Decode JSON `data` (flat or nested, row-major) into an array of `shape`.

    `data` may also be what `decode_json_document` made of it with the same datatype and
    shape: the array itself, or the reason it could not be made.
    """
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, DecodeFailure):
        raise invalid(data.message)
    if not isinstance(data, list):
        raise invalid(f"input {name!r}: 'data' must be a list")
    count = math.prod(shape)
    try:
        if datatype == "BYTES":
            values = _flatten(data)
            if len(values) != count:  # before allocating: the shape is the client's claim
                raise invalid(
                    f"input {name!r}: got {len(values)} elements but shape {list(shape)} "
                    f"needs {count}"
                )
            flat = np.empty(count, dtype=object)
            for index, value in enumerate(values):
                if isinstance(value, str):
                    flat[index] = value.encode()
                elif isinstance(value, bytes):
                    flat[index] = value
                else:
                    raise invalid(f"input {name!r}: BYTES elements must be strings")
            return flat.reshape(shape)
        array = np.asarray(data, dtype=NUMPY_DTYPES[datatype])
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise invalid(
            f"input {name!r}: 'data' is not a list of {datatype} values ({exc})"
        ) from None
    if array.size != count:
        raise invalid(
            f"input {name!r}: got {array.size} elements but shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _deserialize_bytes(name: str, raw: bytes | memoryview, count: int) -> Array:
    """Triton's BYTES wire form: each element is a 4-byte little-endian length, then the bytes."""
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise invalid(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise invalid(f"input {name!r}: truncated BYTES element")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise invalid(f"input {name!r}: got {len(items)} BYTES elements, shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def to_raw(array: Array) -> bytes:
    """Encode an output array as raw little-endian bytes (Triton BYTES framing for strings)."""
    if array.dtype.kind in ("O", "U", "S"):
        parts: list[bytes] = []
        for item in array.flat:
            data = item.encode() if isinstance(item, str) else bytes(item)
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def to_list(array: Array) -> list[Any]:
    """Encode an output array as a flat JSON-able list (row-major)."""
    if array.dtype.kind in ("O", "U", "S"):
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            for item in array.flat
        ]
    values: list[Any] = array.reshape(-1).tolist()
    return values
