"""Fixtures for the artifact store tests (servers, the digits model); helpers are in support."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.artifacts.support import ArtifactServer, Digits


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactServer]:
    """Shared by the tests that do not stop or kill it (1 MiB limit, for the oversize test)."""
    instance = ArtifactServer(tmp_path_factory.mktemp("store")).start()
    yield instance
    instance.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ArtifactServer]:
    """A private server, for tests that stop or kill it."""
    instance = ArtifactServer(tmp_path / "store").start()
    yield instance
    if instance.process is not None and instance.process.poll() is None:
        instance.stop()


@pytest.fixture(scope="session")
def digits() -> Digits:
    from edgemodel_sandbox.models import digits_classifier

    fixture = digits_classifier()
    return Digits(fixture.model, fixture.sha256)
