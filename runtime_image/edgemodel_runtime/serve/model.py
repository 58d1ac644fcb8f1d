"""Owns the ONNX Runtime session: the only module in `serve/` that imports onnxruntime.

It loads a verified model file, chooses execution providers (CUDA / TensorRT only when both
asked for and present, otherwise CPU with a logged warning), says which provider the session
actually got (and, for `--require-provider`, the refusal when it is not the one asked for),
describes the model's inputs and outputs as v2 `TensorSpec`s, and runs feeds. It knows
nothing about protocols or batching.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind

from .errors import ErrorKind, ServeError
from .tensors import NUMPY_DTYPES, Array, TensorSpec

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# What each --providers choice asks for, best first; CPU always ends the list so ORT can place
# nodes the accelerator does not support.
_WANTED: dict[str, tuple[str, ...]] = {
    "cpu": (CPU,),
    "cuda": (CUDA, CPU),
    "tensorrt": (TENSORRT, CUDA, CPU),
}

_ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class ModelLoadError(EdgeModelRuntimeError):
    """The model file cannot be served (unreadable, invalid, or uses unsupported types)."""

    failure = FailureKind.INVALID_INPUT


def select_providers(requested: str, available: Sequence[str]) -> tuple[list[str], str | None]:
    """The providers to use for a --providers choice, and a warning when falling back.

    Pure: `available` is `ort.get_available_providers()` in production.
    """
    wanted = _WANTED.get(requested)
    if wanted is None:
        raise ValueError(f"unknown providers choice {requested!r} (cpu, cuda or tensorrt)")
    chosen = [provider for provider in wanted if provider in available or provider == CPU]
    missing = [provider for provider in wanted if provider not in chosen]
    warning = None
    if missing:
        warning = (
            f"requested providers {requested!r} but {', '.join(missing)} not available in this "
            f"onnxruntime build (available: {', '.join(available)}); using {', '.join(chosen)}"
        )
    return chosen, warning


# Short names of the providers, as `--providers` spells them (and the metrics' label values).
SHORT_NAMES: dict[str, str] = {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}


def short_name(provider: str) -> str:
    return SHORT_NAMES.get(provider, provider)


class ProviderUnavailableError(EdgeModelRuntimeError):
    """A required provider is not what the session runs on (`--require-provider`).

    `message` is the one-line JSON the server leaves as its termination message:
    {"reason": "ProviderUnavailable", "requested", "provider", "message"}.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    failure = FailureKind.PROVIDER_UNAVAILABLE


def provider_refusal(requested: str, session_providers: Sequence[str]) -> str | None:
    """The termination message when the session lacks the provider `requested` names first.

    Pure: `session_providers` is `InferenceSession.get_providers()`, what onnxruntime actually
    gave the session (a CUDA build without a working driver quietly falls back to CPU, so the
    available-providers list alone would not tell). None when the session has it.
    """
    wanted = _WANTED.get(requested)
    if wanted is None:
        raise ValueError(f"unknown providers choice {requested!r} (cpu, cuda or tensorrt)")
    if wanted[0] in session_providers:
        return None
    got = session_providers[0] if session_providers else "none"
    return json.dumps(
        {
            "reason": "ProviderUnavailable",
            "requested": short_name(wanted[0]),
            "provider": short_name(got),
            "message": (
                f"requested {wanted[0]} but onnxruntime gave the session "
                f"{', '.join(session_providers) or 'no provider'}: refusing to serve from "
                f"{got} on a target that asked for {requested}"
            ),
        },
        sort_keys=True,
    )


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    # ORT reports a dynamic dimension as None or a symbolic name; v2 spells both -1.
    return tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in shape)


def _specs(nodes: Sequence[Any], kind: str) -> tuple[TensorSpec, ...]:
    specs = []
    for node in nodes:
        datatype = _ORT_TO_V2.get(node.type)
        if datatype is None:
            raise ModelLoadError(f"{kind} {node.name!r} has unsupported type {node.type}")
        specs.append(TensorSpec(node.name, datatype, _dims(node.shape)))
    return tuple(specs)


class OnnxModel:
    """A loaded ONNX model: its tensor specs and a thread-safe `run`."""

    def __init__(self, path: Path, *, providers: str = "cpu", intra_op_threads: int = 1) -> None:
        chosen, warning = select_providers(providers, ort.get_available_providers())
        if warning:
            log.warning("provider fallback: %s", warning)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, intra_op_threads)
        # One model, one graph: parallelism comes from intra-op threads and concurrent runs.
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning pool threads burn the few cores an edge pod has, which the protocol layer
        # (Python, same cores) needs; measured no latency loss for small models without it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types for every load failure
            raise ModelLoadError(f"{path}: onnxruntime cannot load the model ({exc})") from None
        self.providers: list[str] = list(self._session.get_providers())
        # What serves: the session's first provider, by --providers name ("cpu", "cuda").
        self.provider = short_name(self.providers[0]) if self.providers else "none"
        self.inputs = _specs(self._session.get_inputs(), "input")
        self.outputs = _specs(self._session.get_outputs(), "output")
        self.output_names: list[str] = [spec.name for spec in self.outputs]
        self._string_inputs = {spec.name for spec in self.inputs if spec.datatype == "BYTES"}

    @property
    def batchable(self) -> bool:
        """Requests can be merged along dim 0: every input and output has a dynamic first dim."""
        specs = self.inputs + self.outputs
        return bool(self.inputs) and all(spec.shape and spec.shape[0] == -1 for spec in specs)

    def run(self, feeds: Mapping[str, Array], output_names: Sequence[str]) -> list[Array]:
        if self._string_inputs:
            feeds = {
                name: _as_str(value) if name in self._string_inputs else value
                for name, value in feeds.items()
            }
        try:
            outputs: list[Array] = self._session.run(list(output_names), dict(feeds))
        except InvalidArgument as exc:
            # Inputs that pass the declared types and shapes can still be refused by a kernel
            # (e.g. an empty batch): that is the client's request, not a server fault.
            raise ServeError(
                ErrorKind.INVALID_ARGUMENT, f"onnxruntime rejected the input: {_one_line(exc)}"
            ) from None
        except Exception as exc:  # ORT's other failures have no common base class
            raise ServeError(ErrorKind.INTERNAL, f"onnxruntime failed: {_one_line(exc)}") from None
        return outputs

    def warm_up(self, batch: int = 1, runs: int = 3) -> float:
        """Run zero-filled inputs `runs` times; returns the fastest run in seconds.

        The first run pays ORT's lazy allocations and kernel selection, so readiness waits for
        it rather than a client.
        """
        feeds = {spec.name: _zeros(spec, batch) for spec in self.inputs}
        best = float("inf")
        for _ in range(runs):
            start = time.perf_counter()
            self.run(feeds, self.output_names)
            best = min(best, time.perf_counter() - start)
        return best


def _zeros(spec: TensorSpec, batch: int) -> Array:
    shape = tuple(
        (batch if index == 0 else 1) if dim < 0 else dim for index, dim in enumerate(spec.shape)
    )
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])


def _as_str(array: Array) -> Array:
    # ORT string tensors want Python str; the wire gives bytes.
    out = np.empty(array.shape, dtype=object)
    out.flat[:] = [
        item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        for item in array.flat
    ]
    return out


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:500]
