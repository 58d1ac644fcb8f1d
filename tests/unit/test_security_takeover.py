"""Attack: an EdgeModel named to collide with an object it does not own (the pure half).

The operator forces server-side apply, so an object it writes must be one its EdgeModel
controls. `foreign_owner` decides that from the existing object (controller uid, else the
field managers to name); `ownership_conflict_status` turns a conflict into Ready=False,
reason OwnershipConflict, naming it. The API-server half is in
tests/integration/api/test_security_ownership.py. See docs/security.md.
"""

from __future__ import annotations

from typing import Any

from edgemodel_operator import builders
from edgemodel_operator.handlers import ownership_conflict_status
from edgemodel_operator.kube import foreign_owner

OURS = builders.owner_reference("digits", "uid-1")
MANIFEST = {"metadata": {"name": "digits-arm", "ownerReferences": [OURS]}}


def existing(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "digits-arm", **meta}}


def test_an_object_we_control_is_ours() -> None:
    assert foreign_owner(existing(ownerReferences=[OURS]), MANIFEST) is None


def test_an_object_with_no_controller_is_named_by_its_managers() -> None:
    found = existing(managedFields=[{"manager": "kubectl-create"}, {"manager": "helm"}])
    assert foreign_owner(found, MANIFEST) == "no controller (managed by helm, kubectl-create)"


def test_an_object_another_edgemodel_of_the_same_name_controls_is_not_ours() -> None:
    # Same kind and name, another uid: a deleted-and-recreated EdgeModel's leftovers, or
    # another controller's object.
    theirs = builders.owner_reference("digits", "uid-2")
    assert foreign_owner(existing(ownerReferences=[theirs]), MANIFEST) == "EdgeModel digits"


def test_objects_without_an_owner_in_the_manifest_are_not_checked() -> None:
    assert foreign_owner(existing(), {"metadata": {"name": "shared"}}) is None


def test_a_conflict_becomes_a_ready_false_condition_naming_the_object() -> None:
    status = {"phase": "Deploying", "conditions": []}
    conflict = "Service ns/digits-arm exists and is owned by no controller (managed by kubectl)"
    new = ownership_conflict_status(status, [conflict], "2026-01-01T00:00:00Z", 3)
    ready = next(c for c in new["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "OwnershipConflict"
    assert ready["message"] == conflict and ready["observedGeneration"] == 3
    assert new["phase"] == "Deploying"
