"""A compression killed mid-run leaves nothing under DIR/<key>, and the next run succeeds."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edgemodel_sandbox.models import ModelFixture
from tests.integration.conftest import CliRunner, cli_env, compress_cmd, published


@pytest.mark.slow
def test_sigkill_mid_run_leaves_no_artifact(
    run_compress: CliRunner, bert_small: ModelFixture, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    args = (
        bert_small.model,
        "--output",
        out,
        "--mode",
        "static-int8",
        "--calibration",
        bert_small.calibration,
        "--eval",
        bert_small.evaluation,
        "--json",
    )
    proc = subprocess.Popen(
        compress_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env()
    )
    try:
        deadline = time.monotonic() + 60
        # Wait until the run has staged work (fetched the model), then kill it hard.
        while time.monotonic() < deadline:
            staged = [p for p in out.glob(".tmp-*/work/*")] if out.exists() else []
            if staged or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert published(out) == []  # only the dead run's hidden temp dir may remain

    result = run_compress(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cache_hit"] is False
    assert published(out) == [out / report["key"]]
    assert list(out.glob(".tmp-*")) == []  # the stale temp dir was cleaned up
