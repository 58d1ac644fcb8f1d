"""Owns the error vocabulary shared by every serve layer and its mapping to each protocol.

The dataplane raises `ServeError` with a protocol-neutral `ErrorKind`; each protocol layer maps
the kind to its own status (HTTP code or gRPC status name) so both protocols report the same
failure the same way, and the metrics `code` label stays a small bounded set.

Who is to blame decides the status (docs/architecture.md, "Serving boundary"): everything a
client can cause on purpose — a malformed or absurd request, its own `timeout` parameter
expiring, hanging up mid-body, a shape onnxruntime refuses — maps to a 4xx / client gRPC status,
so the SLO's error rate (5xx, INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED) only ever counts the
server's own failures. Shedding is neither side's failure: a request refused at capacity (503 +
Retry-After / RESOURCE_EXHAUSTED on the wire) is counted under the one code `SHED_CODE` on both
protocols, which the SLO's error rate leaves out of numerator and denominator, so a flood of
abusive clients cannot push a healthy canary into a rollback. `timed` says whether a failure's
latency belongs in the request-duration histogram: only requests the server accepted and worked
on do, so a flood of cheap refusals can never pull the p95 down.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What went wrong, independent of the wire protocol: (HTTP status, gRPC status name)."""

    INVALID_ARGUMENT = (400, "INVALID_ARGUMENT")
    NOT_FOUND = (404, "NOT_FOUND")
    # The client's own `parameters.timeout` expired: its choice, not a slow server (HTTP 408;
    # on gRPC the status a server records when a caller's deadline cancels the call).
    CLIENT_TIMEOUT = (408, "CANCELLED")
    TOO_LARGE = (413, "RESOURCE_EXHAUSTED")
    # The client hung up before its request was complete (nginx's 499: nobody reads the answer).
    DISCONNECTED = (499, "CANCELLED")
    # At capacity (in-flight cap or body budget): refused before any work, retry later. The
    # wire says 503 / RESOURCE_EXHAUSTED; the metrics say SHED_CODE (see `Wire.code`).
    OVERLOADED = (503, "RESOURCE_EXHAUSTED")
    UNAVAILABLE = (503, "UNAVAILABLE")
    DEADLINE_EXCEEDED = (504, "DEADLINE_EXCEEDED")
    INTERNAL = (500, "INTERNAL")

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_code(self) -> str:
        return self.value[1]

    @property
    def timed(self) -> bool:
        """Whether the request was accepted and worked on, so its latency is the server's."""
        return self in (ErrorKind.INTERNAL, ErrorKind.DEADLINE_EXCEEDED)


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


# The `code` label of a shed request on every protocol (docs/architecture.md, "Contracts").
SHED_CODE = "SHED"


class Wire(enum.Enum):
    """A wire protocol, naming outcomes its own way in the metrics `code` label."""

    HTTP = "HTTP"
    GRPC = "gRPC"

    def code(self, kind: ErrorKind | None) -> str:
        """The `code` label of an outcome: `kind`, or success when None; shed is SHED_CODE."""
        if kind is ErrorKind.OVERLOADED:
            return SHED_CODE
        if self is Wire.HTTP:
            return "200" if kind is None else str(kind.http_status)
        return "OK" if kind is None else kind.grpc_code
