"""`edgemodel status`: the pure formatting of an EdgeModel's status, over the states it shows.

The object is the dict the kubernetes client's CustomObjectsApi returns; no cluster here
(the sandbox run of the command is in the Helm/GitOps integration docs and by hand).
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import pytest

from edgemodel_cli.main import SUBCOMMANDS
from edgemodel_operator import status_cli
from edgemodel_operator.status_cli import format_status, latency_vs_slo, table, target_rows

READY: dict[str, Any] = {
    "apiVersion": "edgemodel.dev/v1alpha1",
    "kind": "EdgeModel",
    "metadata": {"name": "digits", "namespace": "shop-42", "generation": 3},
    "spec": {
        "targets": [
            {"name": "arm64-cpu", "arch": "arm64", "replicas": {"min": 2, "max": 6}},
            {"name": "gpu", "arch": "amd64", "accelerator": "nvidia-gpu"},
        ],
        "slo": {"latencyP95Ms": 25},
    },
    "status": {
        "phase": "Progressing",
        "observedGeneration": 3,
        "stableRevision": "r1a2b3c4d5e",
        "canaryRevision": "r9f8e7d6c5b",
        "targets": [
            {
                "name": "arm64-cpu",
                "arch": "arm64",
                "accelerator": "none",
                "revision": "r1a2b3c4d5e",
                "replicas": 4,
                "readyReplicas": 3,
                "p95LatencyMs": 31.24,
                "errorRate": 0.001,
                "lastScaleDecision": "up",
                "lastScaleReason": "p95 31.2ms > 80% of the 25ms SLO",
                "message": "1 replica starting",
            },
            {
                "name": "gpu",
                "arch": "amd64",
                "accelerator": "nvidia-gpu",
                "revision": "r9f8e7d6c5b",
                "replicas": 1,
                "readyReplicas": 1,
                "p95LatencyMs": 4,
            },
        ],
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Progressing", "message": "canary 20%"},
            {"type": "MetricsAvailable", "status": "True", "reason": "MetricsAvailable"},
        ],
        "lastRollback": {
            "from": "r0000000bad",
            "to": "r1a2b3c4d5e",
            "reason": "p95 above SLO in 3 analyses",
            "time": "2026-11-25T10:00:00Z",
        },
    },
}


def test_table_aligns_columns_without_trailing_spaces() -> None:
    text = table(["A", "LONGER"], [["xyz", "1"], ["q", ""]])
    assert text.splitlines() == ["A    LONGER", "xyz  1", "q"]


@pytest.mark.parametrize(
    ("p95", "slo", "expected"),
    [
        (12.34, 25, "12.3/25ms"),
        (25, 25, "25/25ms"),
        (31.24, 25, "31.2/25ms OVER"),
        (None, 25, "-/25ms"),
        (7, None, "7ms"),
        (None, None, "-"),
        (0.5, 0.8, "0.5/0.8ms"),
    ],
)
def test_latency_against_the_slo(p95: Any, slo: Any, expected: str) -> None:
    assert latency_vs_slo(p95, slo) == expected


def test_per_target_rows() -> None:
    assert target_rows(READY) == [
        [
            "arm64-cpu",
            "arm64",
            "none",
            "3/4",
            "31.2/25ms OVER",
            "r1a2b3c4d5e",
            "up (p95 31.2ms > 80% of the 25ms SLO)",
        ],
        ["gpu", "amd64", "nvidia-gpu", "1/1", "4/25ms", "r9f8e7d6c5b", "-"],
    ]


def test_a_generative_target_is_shown_against_its_token_slo() -> None:
    """The row's SLO is the one its p95 was held to (status `latencySloMs`): for a generative
    model the token objective furthest over its line, not the whole-request latencyP95Ms."""
    generative = copy.deepcopy(READY)
    generative["spec"]["slo"] = {"latencyP95Ms": 60000, "timeToFirstTokenP95Ms": 250}
    row = generative["status"]["targets"][1]
    row.update(p95LatencyMs=312.5, latencySloMs=250)
    assert target_rows(generative)[1][4] == "312.5/250ms OVER"
    assert target_rows(generative)[0][4] == "31.2/60000ms"  # an older status: the spec's line


def test_full_report() -> None:
    text = format_status(READY)
    lines = text.splitlines()
    assert lines[0] == "EdgeModel shop-42/digits  phase Progressing"
    assert lines[1] == "Stable revision: r1a2b3c4d5e   Canary revision: r9f8e7d6c5b"
    header = next(line for line in lines if line.startswith("TARGET"))
    for column in ("ARCH", "ACCELERATOR", "READY", "P95/SLO", "REVISION", "LAST SCALE"):
        assert column in header
    assert "  arm64-cpu: 1 replica starting" in lines
    assert any(line.startswith("Ready") and "canary 20%" in line for line in lines)
    assert any(line.startswith("MetricsAvailable") and "True" in line for line in lines)
    assert lines[-1] == (
        "Last rollback: r0000000bad -> r1a2b3c4d5e at 2026-11-25T10:00:00Z: "
        "p95 above SLO in 3 analyses"
    )
    assert all(line == line.rstrip() for line in lines)


def test_a_new_object_without_status() -> None:
    obj = {key: copy.deepcopy(value) for key, value in READY.items() if key != "status"}
    text = format_status(obj)
    assert "phase Pending" in text
    assert "has not reported" in text
    assert target_rows(obj) == [
        ["arm64-cpu", "arm64", "none", "-/-", "-/25ms", "-", "-"],
        ["gpu", "amd64", "nvidia-gpu", "-/-", "-/25ms", "-", "-"],
    ]
    assert "CONDITION" not in text and "rollback" not in text


def test_stale_status_and_pause_are_said() -> None:
    obj = copy.deepcopy(READY)
    obj["metadata"]["generation"] = 4
    obj["spec"]["paused"] = True
    text = format_status(obj)
    assert "Status is for generation 3; the spec is at generation 4" in text
    assert "Paused: true" in text


def test_targets_added_and_removed() -> None:
    obj = copy.deepcopy(READY)
    obj["spec"]["targets"] = [{"name": "amd64-cpu", "arch": "amd64"}, *obj["spec"]["targets"][:1]]
    names = [row[0] for row in target_rows(obj)]
    assert names == ["amd64-cpu", "arm64-cpu", "gpu"]  # spec order, then still-reported ones
    assert target_rows(obj)[0][1:5] == ["amd64", "none", "-/-", "-/25ms"]


def test_registered_as_a_subcommand() -> None:
    _help_text, loader = SUBCOMMANDS["status"]
    assert loader() is status_cli
    parser = argparse.ArgumentParser()
    status_cli.add_arguments(parser)
    args = parser.parse_args(["digits", "-n", "shop-42"])
    assert (args.name, args.namespace) == ("digits", "shop-42")


def test_unusable_kubeconfig_is_a_clear_error(tmp_path: Any, capsys: Any) -> None:
    missing = tmp_path / "nope.yaml"
    args = argparse.Namespace(name="digits", namespace="x", kubeconfig=str(missing), context=None)
    assert status_cli.run(args) == 2
    assert "no usable kubeconfig" in capsys.readouterr().err
