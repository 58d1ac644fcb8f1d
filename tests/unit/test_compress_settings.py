"""Compression settings: target defaults, validation of the request, and the artifact key."""

from __future__ import annotations

from typing import Any

import pytest

from edgemodel_runtime.compress.errors import CompressError
from edgemodel_runtime.compress.settings import artifact_key, resolve

CAL = "c" * 64
EVAL = "e" * 64


def settings(**overrides: Any) -> Any:
    base: dict[str, Any] = {
        "mode": None,
        "target": None,
        "calibration_sha256": None,
        "calibration_method": None,
        "evaluation_sha256": None,
        "prune_sparsity": None,
        "max_accuracy_drop": None,
        "min_agreement": None,
        "search_budget_s": None,
    }
    base.update(overrides)
    return resolve(**base)


@pytest.mark.parametrize(
    ("target", "mode", "activation", "weight"),
    [
        (None, "dynamic-int8", "uint8", "int8"),
        ("amd64", "dynamic-int8", "uint8", "int8"),
        ("arm64", "dynamic-int8", "uint8", "int8"),
        ("gpu", "fp16", None, None),
    ],
)
def test_target_picks_the_default_mode(
    target: str | None, mode: str, activation: str | None, weight: str | None
) -> None:
    resolved = settings(target=target)
    assert (resolved.mode, resolved.activation_type, resolved.weight_type) == (
        mode,
        activation,
        weight,
    )


@pytest.mark.parametrize(
    ("target", "activation"), [("amd64", "uint8"), ("arm64", "int8"), ("gpu", "int8")]
)
def test_static_int8_types_follow_the_target(target: str, activation: str) -> None:
    resolved = settings(mode="static-int8", target=target, calibration_sha256=CAL)
    assert resolved.activation_type == activation and resolved.weight_type == "int8"
    assert resolved.per_channel and resolved.calibration_method == "minmax"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"mode": "static-int8"}, "needs --calibration"),
        ({"prune_sparsity": 0.96}, "prune-sparsity"),
        ({"prune_sparsity": -0.1}, "prune-sparsity"),
        ({"prune_sparsity": float("nan")}, "prune-sparsity"),
        ({"min_agreement": 0.9}, "need --eval"),
        ({"evaluation_sha256": EVAL, "min_agreement": 1.5}, "min-agreement"),
        ({"evaluation_sha256": EVAL, "max_accuracy_drop": -1.0}, "max-accuracy-drop"),
        ({"mode": "int4"}, "unknown --mode"),
        ({"search_budget_s": -1.0}, "search-budget"),
        ({"embedding_bits": 2}, "--embedding-bits 2 is not supported"),
        ({"mode": "fp16", "embedding_bits": 8}, "applies to the int8 modes"),
        ({"mode": "none", "embedding_bits": 4}, "applies to the int8 modes"),
        ({"target": "gpu", "mode": "dynamic-int8", "embedding_bits": 4}, "CPU targets"),
    ],
)
def test_invalid_requests_are_bad_input(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(CompressError, match=problem) as info:
        settings(**overrides)
    assert info.value.exit_code == 2


def test_embedding_tables_default_to_int8_in_the_int8_modes_only() -> None:
    assert settings().embedding_bits == 8
    assert settings(target="arm64", embedding_bits=4).embedding_bits == 4
    assert (
        settings(mode="static-int8", calibration_sha256=CAL, embedding_bits=4).embedding_bits == 4
    )
    assert settings(target="gpu").embedding_bits is None  # fp16: no integer tables at all
    assert settings(mode="none").embedding_bits is None


def test_calibration_is_ignored_outside_static_int8() -> None:
    assert settings(calibration_sha256=CAL) == settings()


def test_key_is_stable_and_changes_with_everything_that_matters() -> None:
    base = settings(evaluation_sha256=EVAL)
    key = artifact_key("a" * 64, base, "1.0")
    assert key == artifact_key("a" * 64, settings(evaluation_sha256=EVAL), "1.0")
    variants = {
        artifact_key("b" * 64, base, "1.0"),
        artifact_key("a" * 64, base, "1.1"),
        artifact_key("a" * 64, settings(evaluation_sha256=EVAL, min_agreement=0.9), "1.0"),
        artifact_key("a" * 64, settings(evaluation_sha256=EVAL, prune_sparsity=0.5), "1.0"),
        artifact_key("a" * 64, settings(mode="fp16", evaluation_sha256=EVAL), "1.0"),
        artifact_key("a" * 64, settings(), "1.0"),
        artifact_key("a" * 64, settings(evaluation_sha256=EVAL, embedding_bits=4), "1.0"),
    }
    assert key not in variants and len(variants) == 7
