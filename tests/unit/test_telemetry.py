"""The operator's own metrics: decisions and rollbacks counted, per-target replicas and the
SLO exported, and a deleted EdgeModel's series dropped (bounded labels)."""

from __future__ import annotations

from prometheus_client import generate_latest

from edgemodel_operator import telemetry


def _value(text: str, prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_decisions_rollbacks_replicas_and_slo_are_exported_then_forgotten() -> None:
    telemetry.record_decision("ns", "digits", "RolledBack")
    telemetry.record_decision("ns", "digits", "ScaledUp")
    status = {"targets": [{"name": "arm", "replicas": 3, "readyReplicas": 2}]}
    telemetry.record_status("ns", "digits", status, 25.0)
    text = generate_latest(telemetry.REGISTRY).decode()
    assert _value(text, 'edgemodel_operator_rollbacks_total{name="digits",namespace="ns"}') == 1
    assert (
        _value(
            text,
            'edgemodel_operator_decisions_total{name="digits",namespace="ns",reason="ScaledUp"}',
        )
        == 1
    )
    assert (
        _value(
            text, 'edgemodel_operator_target_replicas{name="digits",namespace="ns",target="arm"}'
        )
        == 3
    )
    assert (
        _value(
            text,
            'edgemodel_operator_target_ready_replicas{name="digits",namespace="ns",target="arm"}',
        )
        == 2
    )
    assert _value(text, 'edgemodel_operator_slo_p95_seconds{name="digits",namespace="ns"}') == 0.025
    telemetry.forget("ns", "digits")
    text = generate_latest(telemetry.REGISTRY).decode()
    assert (
        'target_replicas{name="digits"' not in text and 'slo_p95_seconds{name="digits"' not in text
    )
