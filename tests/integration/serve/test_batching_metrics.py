"""Dynamic batching merges concurrent requests, and /metrics keeps the runtime contract.

The metrics are scraped from the live metrics port and parsed with prometheus_client's own
parser: names, label sets (model, revision, target, code — nothing per request), the SLO
bucket boundary, and counts that move with the requests we sent.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from serve_support import Server, running

from edgemodel_sandbox.models import ModelFixture

LABELS = {"model", "revision", "target"}


@pytest.fixture(scope="module")
def batching_server(digits: ModelFixture, log_dir: Path) -> Iterator[Server]:
    # A queue delay makes merging certain even on a busy 2-core machine; the label env vars
    # are the ones the operator sets on the pod.
    with running(
        digits.model,
        "digits",
        log_dir,
        "--max-batch-size",
        "16",
        "--max-queue-delay-us",
        "20000",
        "--slo-ms",
        "37",
        env={"EDGEMODEL_MODEL": "mnist", "EDGEMODEL_REVISION": "r2", "EDGEMODEL_TARGET": "arm64"},
    ) as server:
        yield server


def fire(server: Server, rows: np.ndarray, concurrency: int) -> list[np.ndarray]:
    async def run() -> list[np.ndarray]:
        grpc_client = grpcclient_aio.InferenceServerClient(server.grpc_url)
        http_client = httpclient_aio.InferenceServerClient(server.http_url)
        try:
            calls = []
            for index in range(concurrency):
                row = rows[index : index + 1]
                if index % 2:
                    tensor = grpcclient_aio.InferInput("input", [1, 64], "FP32")
                    tensor.set_data_from_numpy(row)
                    calls.append(grpc_client.infer("digits", [tensor]))
                else:
                    h_tensor = httpclient_aio.InferInput("input", [1, 64], "FP32")
                    h_tensor.set_data_from_numpy(row)
                    calls.append(http_client.infer("digits", [h_tensor]))
            results = await asyncio.gather(*calls)
            return [result.as_numpy("probabilities")[0] for result in results]
        finally:
            await grpc_client.close()
            await http_client.close()

    return asyncio.run(run())


def sample(
    metrics: dict[str, list[tuple[str, dict[str, str], float]]], name: str, **labels: str
) -> float:
    family = name
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        family = family.removesuffix(suffix)
    for sample_name, sample_labels, value in metrics[family]:
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return 0.0


def test_dynamic_batching_merges_and_splits_correctly(
    batching_server: Server, digits: ModelFixture, digits_eval: np.ndarray
) -> None:
    import onnxruntime as ort

    rows = digits_eval[:32]
    expected = ort.InferenceSession(str(digits.model)).run(["probabilities"], {"input": rows})[0]
    got = fire(batching_server, rows, 32)
    # Each request gets its own rows back, in its own order, after being merged with others.
    np.testing.assert_allclose(np.stack(got), expected, rtol=1e-5, atol=1e-7)
    metrics = batching_server.scrape()
    executions = sample(metrics, "edgemodel_batch_size_count")
    total_rows = sample(metrics, "edgemodel_batch_size_sum")
    assert total_rows >= 32
    assert total_rows / executions > 1, "no request was ever merged with another"
    # Only one execution may exceed one row if nothing merged; most did here.
    assert sample(metrics, "edgemodel_batch_size_bucket", le="1.0") < executions
    assert sample(metrics, "edgemodel_queue_duration_seconds_count") >= 32


def test_metrics_contract(batching_server: Server) -> None:
    # One success and one failure on each protocol.
    client = httpclient.InferenceServerClient(batching_server.http_url)
    ok = httpclient.InferInput("input", [1, 64], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 64), np.float32))
    client.infer("digits", [ok])
    bad = httpclient.InferInput("wrong", [1, 64], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 64), np.float32))
    with pytest.raises(Exception, match="unknown input"):
        client.infer("digits", [bad])
    client.close()
    fire(batching_server, np.zeros((2, 64), np.float32), 2)

    metrics = batching_server.scrape()
    for family in (
        "edgemodel_request_duration_seconds",
        "edgemodel_requests",
        "edgemodel_inflight_requests",
        "edgemodel_batch_size",
        "edgemodel_queue_duration_seconds",
    ):
        assert family in metrics, family
        for _name, labels, _value in metrics[family]:
            extra = set(labels) - LABELS - {"le", "code"}
            assert not extra, f"{family} has unbounded labels {extra}"
            assert labels["model"] == "mnist"
            assert labels["revision"] == "r2"
            assert labels["target"] == "arm64"
    codes = {labels["code"] for _n, labels, _v in metrics["edgemodel_requests"]}
    assert {"200", "400", "OK"} <= codes
    assert sample(metrics, "edgemodel_requests_total", code="400") >= 1
    buckets = {
        float(labels["le"])
        for name, labels, _v in metrics["edgemodel_request_duration_seconds"]
        if name.endswith("_bucket")
    }
    assert 0.037 in buckets, "the SLO (--slo-ms 37) must be a bucket boundary"
    assert {0.0001, 0.00025, 0.0005} <= buckets, "sub-millisecond buckets"
    assert sample(metrics, "edgemodel_inflight_requests") == 0
    assert sample(metrics, "edgemodel_request_duration_seconds_count") >= 4


def test_metrics_only_on_metrics_port(batching_server: Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://{batching_server.http_url}/metrics")
    assert error.value.code == 404


def test_default_slo_bucket(digits_server: Server) -> None:
    metrics = digits_server.scrape()
    buckets = {
        float(labels["le"])
        for name, labels, _v in metrics["edgemodel_request_duration_seconds"]
        if name.endswith("_bucket")
    }
    assert 0.05 in buckets
    _name, labels, _value = metrics["edgemodel_inflight_requests"][0]
    assert labels == {"model": "digits", "revision": "rev-a", "target": "amd64"}
