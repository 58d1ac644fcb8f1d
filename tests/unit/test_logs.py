"""The operator's log lines: a fixed message, then key=value fields."""

from __future__ import annotations

import logging

from edgemodel_operator.logs import KeyValueFormatter


def test_fields_follow_the_message_and_values_with_spaces_are_quoted() -> None:
    record = logging.LogRecord(
        "edgemodel.operator", logging.INFO, __file__, 1, "scaled", None, None
    )
    record.target = "arm64-cpu"
    record.reason = 'p95 31ms > 0.9 x SLO "25ms"'
    line = KeyValueFormatter("%(levelname)s %(message)s").format(record)
    assert line == 'INFO scaled target=arm64-cpu reason="p95 31ms > 0.9 x SLO \\"25ms\\""'


def test_a_plain_message_is_left_alone() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "started", None, None)
    assert KeyValueFormatter("%(message)s").format(record) == "started"
