"""Metric definitions: SLO bucket boundary, batch buckets, bounded labels, own registry."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgemodel_runtime.serve.metrics import ServeMetrics, batch_buckets, latency_buckets


@pytest.mark.parametrize("slo_ms", [50.0, 37.0, 0.3, 1234.0])
def test_slo_is_a_bucket_boundary(slo_ms: float) -> None:
    buckets = latency_buckets(slo_ms / 1000)
    assert round(slo_ms / 1000, 9) in buckets
    assert list(buckets) == sorted(set(buckets))
    assert sum(1 for b in buckets if b < 0.001) >= 3  # sub-millisecond resolution


@pytest.mark.parametrize(
    ("max_batch", "expected"),
    [(1, (1.0,)), (8, (1.0, 2.0, 4.0, 8.0)), (12, (1.0, 2.0, 4.0, 8.0, 12.0))],
)
def test_batch_buckets(max_batch: int, expected: tuple[float, ...]) -> None:
    assert batch_buckets(max_batch) == expected


def test_series_and_labels() -> None:
    first = ServeMetrics(model="m", revision="r", target="t")
    second = ServeMetrics(model="m", revision="r", target="t")  # own registry: no clash
    first.observe_request("200", 0.0002)
    first.observe_request("INVALID_ARGUMENT", 0.0001)
    first.observe_request("200", 0.2)
    families = {f.name: f for f in text_string_to_metric_families(first.exposition().decode())}
    requests = {
        s.labels["code"]: s.value
        for s in families["edgemodel_requests"].samples
        if s.name == "edgemodel_requests_total"
    }
    assert requests == {"200": 2.0, "INVALID_ARGUMENT": 1.0}
    for family in families.values():
        for s in family.samples:
            assert set(s.labels) <= {"model", "revision", "target", "code", "le"}
    # The second server's registry saw none of the first one's requests.
    assert "edgemodel_requests_total{" not in second.exposition().decode()
