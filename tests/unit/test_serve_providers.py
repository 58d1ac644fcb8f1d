"""Which execution provider serves: the refusal `--require-provider` leaves, and the metric.

`provider_refusal` compares what was asked for with what onnxruntime actually gave the
session (`get_providers()`), so a CUDA build whose driver is missing, which silently falls back
to CPU, is caught as well as a CPU-only build. `edgemodel_model_info` carries the provider.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgemodel_runtime.serve.metrics import ServeMetrics
from edgemodel_runtime.serve.model import CPU, CUDA, TENSORRT, provider_refusal, short_name


@pytest.mark.parametrize(
    ("requested", "session"),
    [("cpu", [CPU]), ("cuda", [CUDA, CPU]), ("tensorrt", [TENSORRT, CUDA, CPU])],
)
def test_a_session_with_the_provider_asked_for_is_no_refusal(
    requested: str, session: list[str]
) -> None:
    assert provider_refusal(requested, session) is None


@pytest.mark.parametrize(
    ("requested", "session", "got"),
    [("cuda", [CPU], "cpu"), ("tensorrt", [CUDA, CPU], "cuda"), ("cuda", [], "none")],
)
def test_a_fallback_is_refused_naming_both_providers(
    requested: str, session: list[str], got: str
) -> None:
    refusal = provider_refusal(requested, session)
    assert refusal is not None and "\n" not in refusal  # one line: a termination message
    report = json.loads(refusal)
    assert report["reason"] == "ProviderUnavailable"
    assert report["requested"] == requested and report["provider"] == got
    assert "ExecutionProvider" in report["message"]


def test_an_unknown_choice_is_an_error() -> None:
    with pytest.raises(ValueError, match="'tpu'"):
        provider_refusal("tpu", [CPU])


def test_short_names_are_the_providers_flag_values() -> None:
    assert [short_name(p) for p in (CPU, CUDA, TENSORRT)] == ["cpu", "cuda", "tensorrt"]
    assert short_name("OpenVINOExecutionProvider") == "OpenVINOExecutionProvider"


def test_model_info_carries_the_provider_and_replaces_an_earlier_value() -> None:
    metrics = ServeMetrics(model="m", revision="r1", target="gpu")
    metrics.model_loaded("cuda", "cuda")
    metrics.model_loaded("cpu", "cuda")  # one series per process: the latest load
    families = {
        f.name: f.samples for f in text_string_to_metric_families(metrics.exposition().decode())
    }
    (sample,) = families["edgemodel_model_info"]
    assert sample.labels == {
        "model": "m",
        "revision": "r1",
        "target": "gpu",
        "provider": "cpu",
        "requested": "cuda",
    }
    assert sample.value == 1
