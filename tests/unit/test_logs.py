"""One logging style everywhere: a fixed message with key=value fields, or one JSON object a line.

The operator and the runtime each have a `logs` module (they may not import each other); every
case here runs against both, so the twins cannot drift. The entry points' `--log-format json`
is checked in tests/integration/test_log_format.py (serve, artifact-server) and here (operator,
pod runner, in process).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from edgemodel_operator import logs as operator_logs
from edgemodel_runtime import logs as runtime_logs

TWINS = [
    pytest.param(operator_logs, id="operator"),
    pytest.param(runtime_logs, id="runtime"),
]


def _record(message: str = "scaled", **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("edgemodel.operator", logging.INFO, __file__, 1, message, None, None)
    for key, value in fields.items():
        setattr(record, key, value)
    return record


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Whatever an entry point installs on the root logger is undone afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("logs", TWINS)
def test_fields_follow_the_message_and_values_with_spaces_are_quoted(logs: ModuleType) -> None:
    record = _record(target="arm64-cpu", reason='p95 31ms > 0.9 x SLO "25ms"')
    line = logs.KeyValueFormatter("%(levelname)s %(message)s").format(record)
    assert line == 'INFO scaled target=arm64-cpu reason="p95 31ms > 0.9 x SLO \\"25ms\\""'


@pytest.mark.parametrize("logs", TWINS)
def test_a_plain_message_is_left_alone(logs: ModuleType) -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "started", None, None)
    assert logs.KeyValueFormatter("%(message)s").format(record) == "started"


@pytest.mark.parametrize("logs", TWINS)
def test_json_is_one_object_with_level_logger_message_and_the_fields(logs: ModuleType) -> None:
    line = logs.formatter("json").format(_record(target="arm64-cpu", replicas=3))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "edgemodel.operator"
    assert entry["message"] == "scaled"
    assert entry["target"] == "arm64-cpu" and entry["replicas"] == 3
    assert entry["time"].endswith("+00:00")


@pytest.mark.parametrize("logs", TWINS)
def test_json_keeps_a_traceback_inside_the_one_line(logs: ModuleType) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = logs.formatter("json").format(record)
    assert len(line.splitlines()) == 1
    assert "RuntimeError: boom" in json.loads(line)["exception"]


@pytest.mark.parametrize("logs", TWINS)
def test_json_never_lets_a_field_replace_the_message(logs: ModuleType) -> None:
    entry = json.loads(logs.formatter("json").format(_record(level="spoofed")))
    assert entry["level"] == "INFO"


@pytest.mark.parametrize("logs", TWINS)
def test_an_unknown_format_is_refused_by_name(logs: ModuleType) -> None:
    with pytest.raises(ValueError, match="--log-format 'yaml'"):
        logs.formatter("yaml")


def test_the_twins_offer_the_same_formats_and_layout() -> None:
    assert operator_logs.LOG_FORMATS == runtime_logs.LOG_FORMATS
    assert operator_logs.DEFAULT_LOG_FORMAT == runtime_logs.DEFAULT_LOG_FORMAT
    assert operator_logs.TEXT_LAYOUT == runtime_logs.TEXT_LAYOUT


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_operator_logs_json_when_asked(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgemodel_cli.main import main

    # A bad pull secret name stops the operator after logging is set up, before kopf runs.
    assert main(["operator", "--log-format", "json", "--image-pull-secret", "Not_A_Name"]) == 2
    logging.getLogger("edgemodel_operator.handlers").info("scaled", extra={"replicas": 3})
    entries = _json_lines(capsys.readouterr().err)
    assert {
        "level": "INFO",
        "logger": "edgemodel_operator.handlers",
        "message": "scaled",
    }.items() <= entries[-1].items()
    assert entries[-1]["replicas"] == 3


def test_the_pod_runner_logs_json_when_asked(
    root_logging: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgemodel_sandbox.runner.main import main

    # No kubeconfig there: the runner stops right after setting up its logging.
    with pytest.raises(Exception, match="missing"):
        main(
            [
                "--kubeconfig",
                str(tmp_path / "missing"),
                "--state",
                str(tmp_path),
                "--log-format",
                "json",
            ]
        )
    logging.getLogger("edgemodel_sandbox.runner").warning("pod watch failed", extra={"pod": "a"})
    entry = _json_lines(capsys.readouterr().err)[-1]
    assert entry["level"] == "WARNING" and entry["message"] == "pod watch failed"
    assert entry["pod"] == "a"
