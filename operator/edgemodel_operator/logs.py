"""Owns the operator's log format: a fixed message followed by key=value fields (principle 11).

Call sites log `log.info("scaled", extra={"target": t, "replicas": n})`; this formatter turns
every field passed in `extra` into ` target=arm64 replicas=3`, quoting values with spaces, so
logs stay greppable and machine-readable without a JSON dependency.
"""

from __future__ import annotations

import logging

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(ch in text for ch in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """`<time> <level> <logger> <message> key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = {
            k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        }
        if not fields:
            return base
        head, sep, tail = base.partition("\n")  # keep a traceback after the fields
        pairs = " ".join(f"{key}={_quote(value)}" for key, value in fields.items())
        return f"{head} {pairs}{sep}{tail}"


def configure(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
