"""Owns the operator's log format: one style, text or JSON (`--log-format`), principle 11.

Call sites log `log.info("scaled", extra={"target": t, "replicas": n})`. `text` turns every
field passed in `extra` into ` target=arm64 replicas=3`, quoting values with spaces, so logs
stay greppable without a JSON dependency; `json` writes one JSON object a line with `time`,
`level`, `logger`, `message`, every field and, after a failure, `exception`. The runtime's
commands log the same way through `edgemodel_runtime.logs`, this module's twin: the operator
and the runtime are independent, and a unit test runs both through the same cases
(docs/architecture.md, "One convention each").
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
TEXT_LAYOUT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call site passed in `extra`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(ch in text for ch in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """`<time> <level> <logger> <message> key=value ...`, a traceback after the fields."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = fields_of(record)
        if not fields:
            return base
        head, sep, tail = base.partition("\n")
        pairs = " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        return f"{head} {pairs}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, message and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of a `--log-format` value; ValueError names an unknown one."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return KeyValueFormatter(TEXT_LAYOUT)
    raise ValueError(f"--log-format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")


def configure(level: int | str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every logger's records to stderr (or `stream`) in the chosen format."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def add_log_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=DEFAULT_LOG_FORMAT,
        help=f"text (key=value fields) or json (one object a line); default {DEFAULT_LOG_FORMAT}",
    )
