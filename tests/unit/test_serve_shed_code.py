"""Shedding is not a server error: the `code` both protocols count a shed request under.

A request refused at the in-flight cap answers 503 + Retry-After (HTTP) or RESOURCE_EXHAUSTED
(gRPC), but `edgemodel_requests_total` counts it under the one code SHED on both, which the
operator's error rate leaves out entirely (promql.py), so a flood cannot roll back a healthy
canary (the served side: tests/integration/serve/test_overload.py; the query against a real
Prometheus: tests/integration/metrics/test_prometheus_client.py).
"""

from __future__ import annotations

import pytest

from edgemodel_operator import promql
from edgemodel_runtime.serve.errors import SHED_CODE, ErrorKind, Wire


@pytest.mark.parametrize("wire", list(Wire))
def test_a_shed_request_is_counted_as_shed_on_every_protocol(wire: Wire) -> None:
    assert wire.code(ErrorKind.OVERLOADED) == SHED_CODE == promql.SHED_CODE
    # The wire still says what a client needs to back off.
    assert (ErrorKind.OVERLOADED.http_status, ErrorKind.OVERLOADED.grpc_code) == (
        503,
        "RESOURCE_EXHAUSTED",
    )


def test_not_ready_is_still_a_server_error_and_shed_is_not() -> None:
    assert Wire.HTTP.code(ErrorKind.UNAVAILABLE) == "503"
    assert promql.is_error_code(Wire.HTTP.code(ErrorKind.UNAVAILABLE))
    assert not promql.is_error_code(SHED_CODE)


def test_the_error_rate_leaves_shed_requests_out_of_both_sides() -> None:
    query = promql.error_rate_query("ns", "m", "r1", None, 30)
    numerator, denominator = query.split(" / ")
    assert "SHED" not in promql.ERROR_CODE_REGEX and "SHED" not in numerator
    assert f'code!="{SHED_CODE}"' in denominator
