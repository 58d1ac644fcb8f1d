"""Owns the operator's error base and the exit codes it shares with the runtime's commands.

The operator's domain errors (`api.SpecError`, `kube.KubeError`) derive from
`EdgeModelOperatorError` and carry a `FailureKind`. The operator and the runtime are
independent packages (import-linter), so this table is the runtime's
`edgemodel_runtime.errors.EXIT_CODES` written a second time on purpose; a unit test fails when
the two differ. The operator needs it to read a compression container's exit code: 3 is the
accuracy gate's verdict, not a crash (docs/architecture.md, "One convention each").
"""

from __future__ import annotations

import enum


class FailureKind(enum.Enum):
    """What kind of failure an error is (the runtime's kinds, the same values)."""

    INVALID_INPUT = "invalid-input"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    GATE_FAILED = "gate-failed"
    PROVIDER_UNAVAILABLE = "provider-unavailable"
    INTERNAL = "internal"


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
    """The exit code of an `edgemodel` command that ends with a failure of this kind."""
    return EXIT_CODES[kind]


EXIT_BAD_INPUT = exit_code(FailureKind.INVALID_INPUT)
EXIT_GATE_FAILED = exit_code(FailureKind.GATE_FAILED)


class EdgeModelOperatorError(Exception):
    """Base of the operator's domain errors: a message naming the problem and its kind."""

    failure: FailureKind = FailureKind.INTERNAL

    @property
    def exit_code(self) -> int:
        return exit_code(self.failure)


def failure_of_status(status: int) -> FailureKind:
    """The kind of an HTTP refusal from the API server (or any HTTP peer)."""
    known = {
        400: FailureKind.INVALID_INPUT,
        401: FailureKind.UNAUTHORIZED,
        403: FailureKind.UNAUTHORIZED,
        404: FailureKind.NOT_FOUND,
        409: FailureKind.CONFLICT,
        410: FailureKind.NOT_FOUND,
        422: FailureKind.INVALID_INPUT,
    }
    return known.get(status, FailureKind.UNAVAILABLE)
