"""Owns the sandbox's error base; the kinds and exit codes are the runtime's.

The sandbox may import the runtime (import-linter layers), so it reuses
`edgemodel_runtime.errors.FailureKind` rather than writing the table a third time. Every
sandbox error (`cluster.SandboxError`, `containerd.ContainerdError`, the image builder's,
the real node's, ...) derives from `EdgeModelSandboxError`; most are UNAVAILABLE (a tool, a
port, a process the machine could not give), the spec and lock parsers' are INVALID_INPUT
(docs/architecture.md, "One convention each").
"""

from __future__ import annotations

from edgemodel_runtime.errors import FailureKind, exit_code

__all__ = ["EdgeModelSandboxError", "FailureKind", "exit_code"]


class EdgeModelSandboxError(Exception):
    """Base of the sandbox's errors: a message naming what failed and its kind."""

    failure: FailureKind = FailureKind.UNAVAILABLE

    @property
    def exit_code(self) -> int:
        return exit_code(self.failure)
