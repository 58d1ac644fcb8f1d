"""A default is written once: every flag that sets a settings field takes the field's default.

The test walks each command's argparse parser and compares every action's default with the
dataclass field it sets (same name unless renamed below). A flag whose default means something
else on purpose is listed in EXEMPT with the reason; anything else that differs fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from edgemodel_operator import cli as operator_cli
from edgemodel_operator.settings import Settings
from edgemodel_runtime import artifact_server_cli, compress_cli, fetch_cli, serve_cli
from edgemodel_runtime.artifacts import cache
from edgemodel_runtime.artifacts.server import ServeOptions as StoreOptions
from edgemodel_runtime.artifacts.store import DEFAULT_MAX_BYTES
from edgemodel_runtime.serve.server import ServeOptions
from edgemodel_runtime.sources import DEFAULT_MAX_BYTES as DEFAULT_FETCH_BYTES

# Environment fallbacks the parsers read at build time: cleared so the field default shows.
ENVIRONMENT = (
    "EDGEMODEL_NAMESPACE",
    "EDGEMODEL_PROMETHEUS_URL",
    "EDGEMODEL_PROMETHEUS_TOKEN_FILE",
    "EDGEMODEL_PROMETHEUS_CA_FILE",
    "EDGEMODEL_REVISION",
    "EDGEMODEL_TARGET",
    "EDGEMODEL_SLO_MS",
)

RENAMED = {
    "operator": {
        "operator_namespace": "namespace",
        "artifact_url": "artifact_lookup_url",
        "namespace": "watched namespaces (not a setting)",
    },
}
EXEMPT = {
    # None: derived from the container's CPU limit when the server starts.
    ("serve", "intra_op_threads"),
    # None: $EDGEMODEL_SLO_MS, else the field's default (serve_cli._slo_ms).
    ("serve", "slo_ms"),
    # The CLI collects every 600 s under --token-review; the field's 0 is "no collector", what
    # the other write modes (which have no API server to ask) get.
    ("artifact-server", "gc_interval_s"),
}


def _parser(add_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Any]] = {
    "operator": (operator_cli.add_arguments, Settings()),
    "serve": (serve_cli.add_arguments, ServeOptions(model_uri="", name="")),
    "artifact-server": (
        artifact_server_cli.add_arguments,
        StoreOptions(max_bytes=DEFAULT_MAX_BYTES),
    ),
}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_default_is_its_fields_default(command: str) -> None:
    add_arguments, defaults = COMMANDS[command]
    fields = {f.name for f in dataclasses.fields(defaults)}
    renamed = RENAMED.get(command, {})
    compared = []
    for action in _parser(add_arguments)._actions:
        field = renamed.get(action.dest, action.dest)
        if action.required or field not in fields or (command, field) in EXEMPT:
            continue
        assert action.default == getattr(defaults, field), f"{command} {action.option_strings}"
        compared.append(field)
    assert len(compared) >= 3, compared  # the walk did reach the flags


def test_the_exemptions_are_still_needed() -> None:
    for command, field in EXEMPT:
        add_arguments, defaults = COMMANDS[command]
        by_dest = {a.dest: a.default for a in _parser(add_arguments)._actions}
        assert by_dest[field] != getattr(defaults, field), f"{command} {field}: drop the exemption"


def test_the_operator_with_no_flags_runs_on_the_default_settings() -> None:
    args = _parser(operator_cli.add_arguments).parse_args([])
    assert operator_cli.settings_from(args) == Settings()


def test_compress_leaves_every_default_to_settings_resolve() -> None:
    parser = _parser(compress_cli.add_arguments)
    defaults = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    assert {d for d, v in defaults.items() if v not in (None, False)} == set()


def test_fetch_uses_the_caches_and_the_sources_limits() -> None:
    by_dest = {a.dest: a.default for a in _parser(fetch_cli.add_arguments)._actions}
    assert by_dest["cache_max_bytes"] == cache.DEFAULT_CACHE_MAX_BYTES
    assert by_dest["max_bytes"] == DEFAULT_FETCH_BYTES
