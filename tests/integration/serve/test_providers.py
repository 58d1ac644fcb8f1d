"""`edgemodel serve` and the provider its model really runs on, with the real onnxruntime.

This machine's onnxruntime is the CPU build: asking for CUDA is exactly the fallback a GPU
pod without a working driver hits. Without `--require-provider` the server serves from the
CPU and says so in `edgemodel_model_info`; with it (what the operator sets on GPU targets)
it never becomes ready, exits 3 and leaves the reason, naming both providers, in its
termination log for the kubelet to report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_support import running, start_server

from edgemodel_sandbox.models import ModelFixture

pytestmark = pytest.mark.slow


def model_info(scrape: dict[str, list[tuple[str, dict[str, str], float]]]) -> dict[str, str]:
    (sample,) = scrape["edgemodel_model_info"]
    assert sample[2] == 1
    return {k: sample[1][k] for k in ("provider", "requested", "target")}


def test_a_fallback_serves_from_the_cpu_and_says_so(digits: ModelFixture, log_dir: Path) -> None:
    with running(
        digits.model, "digits", log_dir, "--providers", "cuda", env={"EDGEMODEL_TARGET": "gpu"}
    ) as server:
        assert model_info(server.scrape()) == {
            "provider": "cpu",
            "requested": "cuda",
            "target": "gpu",
        }
        assert "provider fallback" in server.output()


def test_the_provider_asked_for_is_reported_as_such(digits: ModelFixture, log_dir: Path) -> None:
    with running(digits.model, "digits", log_dir, "--require-provider") as server:
        assert model_info(server.scrape())["provider"] == "cpu"
        assert model_info(server.scrape())["requested"] == "cpu"


def test_a_required_provider_that_is_missing_exits_3_with_the_reason(
    digits: ModelFixture, log_dir: Path, tmp_path: Path
) -> None:
    termination = tmp_path / "termination-log"
    server = start_server(
        digits.model,
        "digits",
        log_dir,
        "--providers",
        "cuda",
        "--require-provider",
        "--termination-log",
        str(termination),
        ready=False,
    )
    assert server.process.wait(timeout=120) == 3
    report = json.loads(termination.read_text())
    assert report["reason"] == "ProviderUnavailable"
    assert (report["requested"], report["provider"]) == ("cuda", "cpu")
    assert "CUDAExecutionProvider" in report["message"]
    output = server.output()
    assert "required provider unavailable" in output
    assert "ready: model=" not in output  # it never reported ready
