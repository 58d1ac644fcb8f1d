"""`edgemodel serve` flags: defaults, environment fallbacks, and bad input exiting 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgemodel_runtime import serve_cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_match_triton_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EDGEMODEL_REVISION", "EDGEMODEL_TARGET"):
        monkeypatch.delenv(name, raising=False)
    args = parse("model.onnx", "--name", "m")
    assert (args.http_port, args.grpc_port, args.metrics_port) == (8000, 8001, 8002)
    assert args.host == "0.0.0.0"
    assert args.revision == "" and args.target == ""
    assert args.providers == "cpu"


def test_labels_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEMODEL_REVISION", "abc123")
    monkeypatch.setenv("EDGEMODEL_TARGET", "edge-arm")
    args = parse("model.onnx", "--name", "m")
    assert (args.revision, args.target) == ("abc123", "edge-arm")
    assert parse("m.onnx", "--name", "m", "--revision", "flag").revision == "flag"


@pytest.mark.parametrize(
    "argv",
    [
        ["m.onnx"],  # --name is required
        ["m.onnx", "--name", "m", "--http-port", "70000"],
        ["m.onnx", "--name", "m", "--max-batch-size", "-1"],
        ["m.onnx", "--name", "m", "--request-timeout-s", "0"],
        ["m.onnx", "--name", "m", "--providers", "tpu"],
    ],
)
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as error:
        parse(*argv)
    assert error.value.code == 2


def test_bad_sha256_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert serve_cli.run(parse(str(tmp_path / "m.onnx"), "--name", "m", "--sha256", "xyz")) == 2
    assert "invalid sha256" in capsys.readouterr().err


def test_bad_slo_env_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEMODEL_SLO_MS", "fast")
    assert serve_cli.run(parse(str(tmp_path / "m.onnx"), "--name", "m")) == 2
    assert "EDGEMODEL_SLO_MS" in capsys.readouterr().err


def test_slo_from_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEMODEL_SLO_MS", raising=False)
    assert serve_cli._slo_ms(None) == 50.0
    monkeypatch.setenv("EDGEMODEL_SLO_MS", "37.5")
    assert serve_cli._slo_ms(None) == 37.5
    assert serve_cli._slo_ms(12.0) == 12.0
