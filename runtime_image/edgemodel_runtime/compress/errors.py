"""Owns the compressor's domain error; `edgemodel_runtime.errors` maps its kind to an exit code."""

from __future__ import annotations

from edgemodel_runtime.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EdgeModelRuntimeError,
    FailureKind,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "CompressError", "FailureKind", "one_line"]


class CompressError(EdgeModelRuntimeError):
    """A failure with a one-line, user-facing message: bad input unless `failure` says otherwise."""

    def __init__(self, message: str, failure: FailureKind = FailureKind.INVALID_INPUT) -> None:
        super().__init__(one_line(message))
        self.failure = failure


def one_line(text: str, limit: int = 400) -> str:
    """Collapse a (possibly multi-line, library-produced) message into one bounded line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
