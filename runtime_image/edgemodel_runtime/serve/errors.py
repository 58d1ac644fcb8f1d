"""Owns the error vocabulary shared by every serve layer and its mapping to each protocol.

The dataplane raises `ServeError` with a protocol-neutral `ErrorKind`; each protocol layer maps
the kind to its own status (HTTP code or gRPC status name) so both protocols report the same
failure the same way, and the metrics `code` label stays a small bounded set.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What went wrong, independent of the wire protocol: (HTTP status, gRPC status name)."""

    INVALID_ARGUMENT = (400, "INVALID_ARGUMENT")
    NOT_FOUND = (404, "NOT_FOUND")
    TOO_LARGE = (413, "RESOURCE_EXHAUSTED")
    UNAVAILABLE = (503, "UNAVAILABLE")
    DEADLINE_EXCEEDED = (504, "DEADLINE_EXCEEDED")
    INTERNAL = (500, "INTERNAL")

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_code(self) -> str:
        return self.value[1]


class ServeError(Exception):
    """A request failed; `str(error)` is a one-line message naming the problem for the client."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def invalid(message: str) -> ServeError:
    return ServeError(ErrorKind.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServeError:
    return ServeError(ErrorKind.NOT_FOUND, message)
