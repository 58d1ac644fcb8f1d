"""Fixtures for `edgemodel serve` end-to-end tests (servers and models from serve_support)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serve_support import Server, identity_model, running, slow_model

from edgemodel_sandbox.models import ModelFixture, digits_classifier


@pytest.fixture(scope="session")
def digits() -> ModelFixture:
    return digits_classifier()


@pytest.fixture(scope="session")
def digits_eval(digits: ModelFixture) -> np.ndarray:
    data: np.ndarray = np.load(digits.evaluation)["input"].astype(np.float32)
    return data


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-logs")


@pytest.fixture(scope="session")
def digits_server(digits: ModelFixture, log_dir: Path) -> Iterator[Server]:
    """The shared digits server: dynamic batching on, small body limit for the 413 test."""
    with running(
        digits.model,
        "digits",
        log_dir,
        "--sha256",
        digits.sha256,
        "--max-request-bytes",
        str(1 << 20),
        env={"EDGEMODEL_REVISION": "rev-a", "EDGEMODEL_TARGET": "amd64"},
    ) as server:
        yield server


@pytest.fixture(scope="session")
def identity_server(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    path = identity_model(tmp_path_factory.mktemp("identity") / "identity.onnx")
    with running(path, "identity", log_dir) as server:
        yield server


@pytest.fixture(scope="session")
def slow_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return slow_model(tmp_path_factory.mktemp("slow") / "slow.onnx")


@pytest.fixture(scope="session")
def slow_iterations(slow_model_path: Path) -> int:
    """Loop trips that take about one second here (calibrated: machines differ a lot)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(slow_model_path), options)
    x = np.ones((1, 64), np.float32)
    trips = 2000
    start = time.perf_counter()
    session.run(None, {"n": np.array(trips, np.int64), "x": x})
    per_trip = (time.perf_counter() - start) / trips
    return max(trips, int(1.0 / per_trip))
