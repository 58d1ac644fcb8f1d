"""The `edgemodel serve` flags of generative serving: what they turn into, what they refuse."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from edgemodel_runtime.generate_cli import add_generation_arguments, generation_options
from edgemodel_runtime.serve.generative import default_kv_budget
from edgemodel_runtime.serve.tokenizer import ByteTokenizer, TokenizerError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_generation_arguments(parser)
    return parser.parse_args(argv)


def test_without_generative_there_are_no_generation_options() -> None:
    assert generation_options(parse("--max-sequences", "3")) is None


def test_flags_then_environment_then_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEMODEL_TTFT_SLO_MS", "250")
    monkeypatch.delenv("EDGEMODEL_ITL_SLO_MS", raising=False)
    options = generation_options(
        parse("--generative", "--itl-slo-ms", "40", "--tokenizer", "bytes")
    )
    assert options is not None
    assert (options.ttft_slo_s, options.itl_slo_s) == (0.25, 0.04)
    assert options.tokenizer == ByteTokenizer()
    assert (options.max_sequences, options.max_kv_bytes, options.max_context) == (8, None, 1024)
    file = tmp_path / "tokenizer.json"
    file.write_text(json.dumps({"type": "bytes", "offset": 3}))
    options = generation_options(parse("--generative", "--tokenizer", str(file)))
    assert options is not None and options.tokenizer == ByteTokenizer(offset=3)


@pytest.mark.parametrize(
    ("argv", "env", "error"),
    [
        (["--tokenizer", "/no/such.json"], {}, TokenizerError),
        (["--tokenizer", "__FILE__"], {}, TokenizerError),
        ([], {"EDGEMODEL_ITL_SLO_MS": "fast"}, ValueError),
        (["--ttft-slo-ms", "0"], {}, ValueError),
    ],
)
def test_bad_values_are_refused_naming_the_flag(
    argv: list[str],
    env: dict[str, str],
    error: type[Exception],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "sentencepiece"}))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["--generative", *(str(bad) if a == "__FILE__" else a for a in argv)]
    with pytest.raises(error):
        generation_options(parse(*args))


def test_the_kv_budget_defaults_to_a_quarter_of_the_memory_limit_at_most_1_gib() -> None:
    assert default_kv_budget(None) == 1 << 30
    assert default_kv_budget(2 << 30) == 512 << 20
    assert default_kv_budget(64 << 30) == 1 << 30
