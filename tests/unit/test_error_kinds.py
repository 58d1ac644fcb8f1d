"""Each package has one error base carrying the kind of failure; a kind maps to one exit code.

The operator and the runtime each hold the table (they may not import each other): the two must
agree, because the operator reads the runtime's exit codes from a Job's containers (3: the
accuracy gate refused, not a crash). The sandbox uses the runtime's.
"""

from __future__ import annotations

import pytest

from edgemodel_operator import errors as operator_errors
from edgemodel_operator.api import SpecError
from edgemodel_operator.kube import KubeError, OwnershipConflict
from edgemodel_operator.observe import GATE_FAILED_EXIT
from edgemodel_operator.providers import EXIT_PROVIDER as OPERATOR_EXIT_PROVIDER
from edgemodel_runtime import errors as runtime_errors
from edgemodel_runtime.artifacts.client import Rejected, Unreachable
from edgemodel_runtime.artifacts.store import Conflict, InvalidName, MissingArtifact, StoreError
from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.serve.server import EXIT_PROVIDER
from edgemodel_runtime.sources import SourceError
from edgemodel_sandbox.cluster import SandboxError
from edgemodel_sandbox.errors import EdgeModelSandboxError
from edgemodel_sandbox.image.spec import SpecError as ImageSpecError
from edgemodel_sandbox.realnode.node import RealNodeError

RuntimeKind = runtime_errors.FailureKind
OperatorKind = operator_errors.FailureKind


def test_the_operator_and_the_runtime_agree_on_every_kind_and_exit_code() -> None:
    assert [k.value for k in OperatorKind] == [k.value for k in RuntimeKind]
    for kind in RuntimeKind:
        assert operator_errors.exit_code(OperatorKind(kind.value)) == runtime_errors.exit_code(kind)


def test_the_contracts_exit_codes() -> None:
    assert runtime_errors.EXIT_BAD_INPUT == 2
    assert runtime_errors.EXIT_GATE_FAILED == 3
    assert runtime_errors.EXIT_INTERNAL == 1
    assert GATE_FAILED_EXIT == runtime_errors.EXIT_GATE_FAILED
    assert OPERATOR_EXIT_PROVIDER == EXIT_PROVIDER == 3


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (CompressError("bad --mode"), RuntimeKind.INVALID_INPUT),
        (CompressError("quantizer crashed", RuntimeKind.INTERNAL), RuntimeKind.INTERNAL),
        (SourceError("no such file"), RuntimeKind.INVALID_INPUT),
        (InvalidName("bad sha"), RuntimeKind.INVALID_INPUT),
        (MissingArtifact("gone"), RuntimeKind.NOT_FOUND),
        (Conflict("other content"), RuntimeKind.CONFLICT),
        (Rejected(403, "forbidden"), RuntimeKind.INVALID_INPUT),
        (Unreachable("down"), RuntimeKind.UNAVAILABLE),
    ],
)
def test_runtime_errors_carry_their_kind(
    error: runtime_errors.EdgeModelRuntimeError, kind: runtime_errors.FailureKind
) -> None:
    assert isinstance(error, runtime_errors.EdgeModelRuntimeError)
    assert error.failure is kind
    assert error.exit_code == runtime_errors.exit_code(kind)


def test_rebased_errors_keep_their_old_bases() -> None:
    # Callers that catch ValueError / RuntimeError still catch them.
    assert isinstance(StoreError("x"), ValueError)
    assert isinstance(SourceError("x"), ValueError)
    assert isinstance(SpecError("spec.model", "missing"), ValueError)
    assert isinstance(SandboxError("x"), RuntimeError)
    assert isinstance(ImageSpecError("x"), ValueError)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, OperatorKind.NOT_FOUND),
        (409, OperatorKind.CONFLICT),
        (422, OperatorKind.INVALID_INPUT),
        (403, OperatorKind.UNAUTHORIZED),
        (500, OperatorKind.UNAVAILABLE),
    ],
)
def test_an_api_refusal_is_classified_by_its_status(
    status: int, kind: operator_errors.FailureKind
) -> None:
    error = KubeError(status, "refused")
    assert isinstance(error, operator_errors.EdgeModelOperatorError)
    assert error.failure is kind


def test_operator_errors_carry_their_kind() -> None:
    assert SpecError("spec.model.uri", "missing").failure is OperatorKind.INVALID_INPUT
    conflict = OwnershipConflict("Deployment", "ns", "d", "someone")
    assert conflict.failure is OperatorKind.CONFLICT
    assert conflict.kind == "Deployment"  # the object's kind, as before


def test_sandbox_errors_share_one_base() -> None:
    for error in (SandboxError("x"), RealNodeError("x"), ImageSpecError("x")):
        assert isinstance(error, EdgeModelSandboxError)
    assert SandboxError("x").failure is RuntimeKind.UNAVAILABLE
    assert ImageSpecError("x").failure is RuntimeKind.INVALID_INPUT
