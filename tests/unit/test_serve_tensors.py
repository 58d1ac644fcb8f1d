"""The v2 tensor codecs: raw bytes and JSON lists to numpy and back, and their error messages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgemodel_runtime.serve.errors import ErrorKind, ServeError
from edgemodel_runtime.serve.tensors import (
    NUMPY_DTYPES,
    check_datatype,
    check_shape,
    datatype_of,
    from_list,
    from_raw,
    to_list,
    to_raw,
)

NUMERIC = [name for name in NUMPY_DTYPES if name != "BYTES"]


def sample(datatype: str) -> np.ndarray:
    dtype = NUMPY_DTYPES[datatype]
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind == "i":  # include negatives for signed types
        return (np.arange(6).reshape(2, 3) * 3 - 4).astype(dtype)
    return np.arange(6).reshape(2, 3).astype(dtype)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_raw_round_trip(datatype: str) -> None:
    array = sample(datatype)
    decoded = from_raw("x", datatype, (2, 3), to_raw(array))
    assert decoded.dtype == NUMPY_DTYPES[datatype]
    np.testing.assert_array_equal(decoded, array)
    assert datatype_of(decoded) == datatype


@pytest.mark.parametrize("datatype", NUMERIC)
def test_list_round_trip(datatype: str) -> None:
    array = sample(datatype)
    np.testing.assert_array_equal(from_list("x", datatype, (2, 3), to_list(array)), array)
    # Nested lists (row-major) are accepted too.
    np.testing.assert_array_equal(from_list("x", datatype, (2, 3), array.tolist()), array)


def test_bytes_round_trip() -> None:
    array = np.array([b"", b"abc", "\u00e9".encode(), b"\x00" * 5], dtype=object).reshape(2, 2)
    raw = to_raw(array)
    assert raw[:4] == b"\x00\x00\x00\x00"
    decoded = from_raw("s", "BYTES", (2, 2), raw)
    assert decoded.tolist() == array.tolist()
    from_json = from_list("s", "BYTES", (2, 2), [["", "abc"], ["\u00e9", "\x00" * 5]])
    assert from_json.tolist() == array.tolist()


def test_raw_is_zero_copy() -> None:
    buffer = np.arange(4, dtype=np.float32).tobytes()
    decoded = from_raw("x", "FP32", (4,), buffer)
    assert decoded.base is not None  # a view over the request body, not a copy


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: from_raw("x", "FP32", (2, 3), b"\x00" * 20), "got 20 bytes"),
        (lambda: from_raw("s", "BYTES", (1,), b"\x05\x00\x00\x00ab"), "truncated BYTES element"),
        (lambda: from_raw("s", "BYTES", (1,), b"\x05\x00"), "truncated BYTES element length"),
        (lambda: from_raw("s", "BYTES", (2,), b"\x00\x00\x00\x00"), "got 1 BYTES elements"),
        (lambda: from_list("x", "FP32", (2,), [1.0]), "got 1 elements"),
        (lambda: from_list("x", "FP32", (2,), "ab"), "'data' must be a list"),
        (lambda: from_list("x", "FP32", (2,), [[1.0], [2.0, 3.0]]), "not a list of FP32"),
        (lambda: from_list("x", "INT8", (1,), [300]), "not a list of INT8"),
        (lambda: from_list("x", "FP32", (1,), [{"a": 1}]), "not a list of FP32"),
        (lambda: from_list("s", "BYTES", (1,), [1]), "BYTES elements must be strings"),
        (lambda: check_shape("x", [1, -1]), "non-negative integers"),
        (lambda: check_shape("x", [1, True]), "non-negative integers"),
        (lambda: check_shape("x", "12"), "list of integers"),
        (lambda: check_shape("x", [2**40, 2**40]), "too many elements"),
        (lambda: check_datatype("x", "FLOAT"), "unknown datatype 'FLOAT'"),
        (lambda: check_datatype("x", 3), "unknown datatype 3"),
    ],
)
def test_errors_name_the_problem(call: Any, message: str) -> None:
    with pytest.raises(ServeError) as error:
        call()
    assert error.value.kind is ErrorKind.INVALID_ARGUMENT
    assert message in str(error.value)
