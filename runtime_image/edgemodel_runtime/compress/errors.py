"""Owns the compressor's domain error; exit codes are attached here and mapped only by the CLI."""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


class CompressError(Exception):
    """A failure with a one-line, user-facing message and the exit code the CLI should use."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(one_line(message))
        self.exit_code = exit_code


def one_line(text: str, limit: int = 400) -> str:
    """Collapse a (possibly multi-line, library-produced) message into one bounded line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
