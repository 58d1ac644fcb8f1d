"""The server's life as one state: loading -> ready -> (leaving) -> draining -> closed.

Readiness and serving are read off `DataPlane.state`; each lifecycle call moves it forward
only, so a drain begun while the model warms up stays a drain.
"""

from __future__ import annotations

import asyncio

import pytest

from edgemodel_runtime.serve.dataplane import DataPlane, DataPlaneConfig, ServerState
from edgemodel_runtime.serve.errors import ErrorKind, ServeError
from edgemodel_runtime.serve.metrics import ServeMetrics
from edgemodel_runtime.serve.model import OnnxModel
from edgemodel_sandbox.models import digits_classifier


@pytest.fixture(scope="module")
def model() -> OnnxModel:
    return OnnxModel(digits_classifier().model)


def fresh() -> DataPlane:
    metrics = ServeMetrics(model="digits", revision="", target="")
    return DataPlane(DataPlaneConfig(name="digits"), metrics)


def observed(dataplane: DataPlane) -> tuple[ServerState, bool, bool]:
    return dataplane.state, dataplane.ready, dataplane.serving


def test_the_full_life_with_a_shutdown_delay(model: OnnxModel) -> None:
    async def run() -> list[tuple[ServerState, bool, bool]]:
        dataplane = fresh()
        seen = [observed(dataplane)]
        await dataplane.start(model)
        seen.append(observed(dataplane))
        dataplane.announce_shutdown()
        seen.append(observed(dataplane))
        dataplane.stop_accepting()
        seen.append(observed(dataplane))
        await dataplane.close()
        seen.append(observed(dataplane))
        return seen

    assert asyncio.run(run()) == [
        (ServerState.LOADING, False, False),
        (ServerState.READY, True, True),
        (ServerState.LEAVING, False, True),  # not ready, still serving
        (ServerState.DRAINING, False, False),
        (ServerState.CLOSED, False, False),
    ]


def test_a_drain_begun_while_loading_is_not_undone_by_the_model_arriving(
    model: OnnxModel,
) -> None:
    async def run() -> tuple[ServerState, bool, bool]:
        dataplane = fresh()
        dataplane.stop_accepting()
        await dataplane.start(model)
        state = observed(dataplane)
        with pytest.raises(ServeError) as error:
            dataplane.admit(10)
        assert error.value.kind is ErrorKind.UNAVAILABLE
        await dataplane.close()
        return state

    assert asyncio.run(run()) == (ServerState.DRAINING, False, False)


def test_closed_is_final() -> None:
    async def run() -> ServerState:
        dataplane = fresh()
        await dataplane.close()
        dataplane.stop_accepting()
        dataplane.announce_shutdown()
        return dataplane.state

    assert asyncio.run(run()) is ServerState.CLOSED
