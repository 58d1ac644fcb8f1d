"""Owns the runtime's error base and the one mapping from a kind of failure to an exit code.

Every domain error of the runtime (compress, sources, artifacts, serve start-up) derives from
`EdgeModelRuntimeError` and carries a `FailureKind`; the commands (`edgemodel compress`,
`serve`, `fetch`, `publish`, `artifact-server`) turn a kind into their exit code through
`exit_code` here and nowhere else. The operator reads the same codes from the compression Job's
containers; it cannot import this module (operator and runtime are independent), so
`edgemodel_operator.errors` holds the same table and a test checks that the two agree
(docs/architecture.md, "One convention each").
"""

from __future__ import annotations

import enum


class FailureKind(enum.Enum):
    """What kind of failure an error is; decides the exit code, never the message."""

    INVALID_INPUT = "invalid-input"  # a flag, a file or a spec field is wrong: fix the request
    NOT_FOUND = "not-found"  # what was named does not exist
    CONFLICT = "conflict"  # it exists and differs from what was asked
    UNAUTHORIZED = "unauthorized"  # credentials missing or refused
    UNAVAILABLE = "unavailable"  # a port, a server or a device cannot be reached now
    GATE_FAILED = "gate-failed"  # the work ran and its result fails the accuracy gate
    PROVIDER_UNAVAILABLE = "provider-unavailable"  # a required execution provider is absent
    INTERNAL = "internal"  # a bug or an environment failure (disk full, out of memory)


EXIT_OK = 0
# The contract of the commands (docs/architecture.md, "Contracts"): 2 bad input, 3 the result
# was refused (accuracy gate, required provider), 1 anything else.
EXIT_CODES: dict[FailureKind, int] = {
    FailureKind.INVALID_INPUT: 2,
    FailureKind.NOT_FOUND: 2,
    FailureKind.CONFLICT: 2,
    FailureKind.UNAUTHORIZED: 2,
    FailureKind.UNAVAILABLE: 1,
    FailureKind.GATE_FAILED: 3,
    FailureKind.PROVIDER_UNAVAILABLE: 3,
    FailureKind.INTERNAL: 1,
}


def exit_code(kind: FailureKind) -> int:
    """The process exit code of a command that ends with a failure of this kind."""
    return EXIT_CODES[kind]


EXIT_BAD_INPUT = exit_code(FailureKind.INVALID_INPUT)
EXIT_GATE_FAILED = exit_code(FailureKind.GATE_FAILED)
EXIT_INTERNAL = exit_code(FailureKind.INTERNAL)


class EdgeModelRuntimeError(Exception):
    """Base of the runtime's domain errors: a one-line message and the kind of failure.

    Subclasses set `failure` as a class attribute; an instance may override it (a compression
    error is bad input unless the pipeline says it is internal).
    """

    failure: FailureKind = FailureKind.INTERNAL

    @property
    def exit_code(self) -> int:
        return exit_code(self.failure)
