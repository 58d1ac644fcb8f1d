"""Attacks through `file://` sources: reading the node's filesystem, and breaking the Job.

A `file://` model or data source becomes a hostPath volume on the node, so a spec field
would otherwise choose any directory of any node to mount (/etc, /var/lib/kubelet...). Only
directories an admin allowlisted in the operator settings may be mounted, read only; any
other is refused naming the field (the reconcile turns that into Ready=False, reason
HostPathNotAllowed). Source volumes get deterministic, distinct names, so a model and its
calibration data on the same claim or directory make a Job the API server accepts, and the
name is the same in every operator process. See docs/security.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from edgemodel_operator import builders
from edgemodel_operator.api import EdgeModelSpec, parse_spec
from edgemodel_operator.settings import Settings

SHA = "a" * 64
ALLOWED = Settings(host_path_allowlist=("/srv/models",))


def spec(
    model: str, calibration: str | None = None, evaluation: str | None = None
) -> EdgeModelSpec:
    compression: dict[str, Any] = {"quantization": "dynamic-int8"}
    if calibration is not None:
        compression = {
            "quantization": "static-int8",
            "calibration": {"uri": calibration, "sha256": "c" * 64},
        }
    if evaluation is not None:
        compression["accuracyGate"] = {
            "evaluation": {"uri": evaluation, "sha256": "e" * 64},
            "maxAccuracyDrop": 0.01,
        }
    return parse_spec(
        {
            "model": {"uri": model, "sha256": SHA},
            "targets": [{"name": "a", "arch": "amd64"}],
            "compression": compression,
        }
    )


def job_volumes(s: EdgeModelSpec, settings: Settings = ALLOWED) -> list[dict[str, Any]]:
    job = builders.compression_job("digits", "ns", "uid-1", s, "r1", "amd64", settings)
    volumes: list[dict[str, Any]] = job["spec"]["template"]["spec"]["volumes"]
    return volumes


# ------------------------------------------------------------------ the allowlist


def test_file_source_is_refused_when_nothing_is_allowlisted() -> None:
    problems = builders.host_path_problems(spec("file:///etc/shadow"), Settings())
    assert [field for field, _ in problems] == ["spec.model.uri"]
    assert "'/etc'" in problems[0][1] and "allowlist (none)" in problems[0][1]


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/kubernetes/admin.conf",  # outside
        "file:///srv/models-private/m.onnx",  # a sibling sharing the prefix
        "file:///srv/models/../../etc/m.onnx",  # climbing out
        "file:///srv/m.onnx",  # the parent
    ],
)
def test_file_source_outside_the_allowlist_is_refused(uri: str) -> None:
    problems = builders.host_path_problems(spec(uri), ALLOWED)
    assert [field for field, _ in problems] == ["spec.model.uri"]
    assert uri in problems[0][1] and "/srv/models" in problems[0][1]


def test_every_source_field_is_checked_and_named() -> None:
    problems = builders.host_path_problems(
        spec("file:///srv/models/m.onnx", "file:///root/c.npz", "file:///var/lib/e.npz"), ALLOWED
    )
    assert [field for field, _ in problems] == [
        "spec.compression.calibration.uri",
        "spec.compression.accuracyGate.evaluation.uri",
    ]


def test_allowlisted_directory_is_mounted_read_only() -> None:
    s = spec("file:///srv/models/team-a/m.onnx")
    assert builders.host_path_problems(s, ALLOWED) == []
    volumes = {v["name"]: v for v in job_volumes(s)}
    assert volumes["src-model"]["hostPath"] == {"path": "/srv/models/team-a", "type": "Directory"}
    job = builders.compression_job("digits", "ns", "uid-1", s, "r1", "amd64", ALLOWED)
    mounts = job["spec"]["template"]["spec"]["initContainers"][0]["volumeMounts"]
    assert {"name": "src-model", "mountPath": "/sources/model/host", "readOnly": True} in mounts


def test_non_file_sources_need_no_allowlist() -> None:
    s = spec("https://models.example.com/m.onnx", "pvc://data/c.npz")
    assert builders.host_path_problems(s, Settings()) == []


@pytest.mark.parametrize("entry", ["srv/models", "/srv/../etc"])
def test_allowlist_entries_must_be_absolute_and_plain(entry: str) -> None:
    with pytest.raises(ValueError, match="host path allowlist entry"):
        Settings(host_path_allowlist=(entry,))


# ------------------------------------------------------------------ volume names


@pytest.mark.parametrize(
    ("model", "calibration"),
    [
        ("pvc://models/digits.onnx", "pvc://models/calib.npz"),
        ("file:///srv/models/digits.onnx", "file:///srv/models/calib.npz"),
    ],
    ids=["same-claim", "same-host-directory"],
)
def test_model_and_calibration_in_one_place_get_distinct_volume_names(
    model: str, calibration: str
) -> None:
    # Attack (or accident): duplicate volume names make the API server refuse the Job, so
    # the EdgeModel could never compress.
    volumes = job_volumes(spec(model, calibration))
    names = [v["name"] for v in volumes]
    assert len(names) == len(set(names)), names
    assert {"src-model", "src-calibration"} <= set(names)


def test_volume_names_are_the_same_in_every_process() -> None:
    # Python's hash() is salted per process: a name built from it changed with every
    # operator restart, so server-side apply rewrote the Job template (immutable: refused).
    program = (
        "import json, sys\n"
        "from edgemodel_operator import builders\n"
        "from edgemodel_operator.api import parse_spec\n"
        "from edgemodel_operator.settings import Settings\n"
        "s = parse_spec(json.loads(sys.argv[1]))\n"
        "job = builders.compression_job('d', 'ns', 'u', s, 'r1', 'amd64',"
        " Settings(host_path_allowlist=('/srv',)))\n"
        "print(json.dumps(job['spec']['template']['spec']['volumes']))\n"
    )
    raw = json.dumps(
        {
            "model": {"uri": "file:///srv/models/m.onnx", "sha256": SHA},
            "targets": [{"name": "a", "arch": "amd64"}],
        }
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program, raw],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1, outputs
