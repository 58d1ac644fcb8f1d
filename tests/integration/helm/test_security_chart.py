"""The chart's operator-side trust settings, rendered by the real helm and parsed by the CLI.

Overlap: with one replica the operator runs --standalone (no election), so a rolling update
would run the old and the new operator at once, both reconciling and writing status; the
Deployment uses Recreate then, and a rolling update only with kopf peering (one active).
Allowlists: `operator.hostPathAllowlist` and `prometheus.allowedUrls` reach the operator as
flags, default to empty (nothing allowed), and the schema refuses entries that could not be
meant. The Prometheus token and CA the chart mounts reach the operator (it reads their paths
from the environment the chart sets). See docs/security.md.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from edgemodel_operator import cli
from tests.integration.helm.conftest import CHART, Render, run_helm, set_args


def _operator(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]
    assert len(found) == 1
    return found[0]


def _args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_a_single_standalone_operator_never_overlaps_its_successor(render: Render) -> None:
    deployment = _operator(render())
    assert deployment["spec"]["replicas"] == 1
    assert "--standalone" in _args(deployment) or not any(
        a.startswith("--peering") for a in _args(deployment)
    )
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_peered_replicas_roll_because_kopf_keeps_one_active(render: Render) -> None:
    deployment = _operator(render({"operator.replicas": "2"}))
    assert any(a.startswith("--peering=") for a in _args(deployment))
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_allowlists_default_to_nothing_allowed(render: Render) -> None:
    args = _args(_operator(render()))
    assert not [a for a in args if a.startswith(("--host-path-allow", "--prometheus-allowed"))]
    settings = cli.settings_from(_parse(args))
    assert settings.host_path_allowlist == () and settings.prometheus_allowed_urls == ()


def test_allowlists_reach_the_operator_settings(render: Render) -> None:
    args = _args(
        _operator(
            render(
                {
                    "operator.hostPathAllowlist": "{/srv/models,/data/sets}",
                    "prometheus.url": "http://prometheus.monitoring.svc:9090",
                    "prometheus.allowedUrls": "{https://prom.team-a:9090}",
                }
            )
        )
    )
    settings = cli.settings_from(_parse(args))
    assert settings.host_path_allowlist == ("/srv/models", "/data/sets")
    assert settings.prometheus_allowed_urls == ("https://prom.team-a:9090",)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"operator.hostPathAllowlist": "{srv/models}"}, "hostPathAllowlist"),
        ({"operator.hostPathAllowlist": "{/srv/../etc}"}, "hostPathAllowlist"),
        ({"prometheus.allowedUrls": "{prom.team-a:9090}"}, "allowedUrls"),
    ],
)
def test_schema_refuses_allowlist_entries_that_cannot_be_meant(
    helm: Any, values: dict[str, str], field: str
) -> None:
    result = run_helm(helm, "template", "em", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr


def test_the_mounted_prometheus_token_and_ca_reach_the_operator(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = _operator(
        render(
            {
                "prometheus.url": "https://prometheus.monitoring.svc:9091",
                "prometheus.bearerTokenSecret.name": "prometheus-token",
                "prometheus.caConfigMap.name": "prometheus-ca",
            }
        )
    )
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for name in ("EDGEMODEL_PROMETHEUS_TOKEN_FILE", "EDGEMODEL_PROMETHEUS_CA_FILE"):
        monkeypatch.setenv(name, env[name])
    settings = cli.settings_from(_parse(_args(deployment)))
    assert settings.prometheus_token_file == env["EDGEMODEL_PROMETHEUS_TOKEN_FILE"]
    assert settings.prometheus_ca_file == env["EDGEMODEL_PROMETHEUS_CA_FILE"]


def _parse(args: list[str]) -> argparse.Namespace:
    assert args[0] == "operator"  # `edgemodel operator ...`
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(args[1:])
