"""Owns the report's shape (report.json and `--json` output) and the size figures in it.

The on-the-wire size is the artifact compressed with zstd at level 10, what an artifact server
would send; ratios are against the raw input size.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import onnx
import zstandard

from edgemodel_runtime import __version__

SCHEMA = "edgemodel.dev/compress-report/v1"
ZSTD_LEVEL = 10


def zstd_size(path: Path, level: int = ZSTD_LEVEL) -> int:
    """Compressed size, streamed so a 400 MB model never sits in memory twice."""
    compressor = zstandard.ZstdCompressor(level=level)
    total = 0
    with path.open("rb") as source, compressor.stream_reader(source) as reader:
        while chunk := reader.read(1 << 20):
            total += len(chunk)
    return total


def tool_versions() -> dict[str, str]:
    import onnxruntime

    return {
        "edgemodel": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(sanitize(report), indent=2, sort_keys=True, allow_nan=False)


def sanitize(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) with strings, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return value
