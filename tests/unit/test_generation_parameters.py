"""A generate request's parameters and the choice of each next token (pure).

Bad parameters are refused naming the field; greedy is argmax; sampling follows temperature,
top-k and top-p, and one seed gives one draw.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemodel_runtime.serve.errors import ErrorKind, ServeError
from edgemodel_runtime.serve.sampling import (
    SamplingParams,
    finish_reason,
    next_token,
    parse_parameters,
)
from edgemodel_runtime.serve.tokenizer import ByteTokenizer, StreamDecoder, prompt_ids

LOGITS = np.array([0.0, 3.0, 2.9, -1.0, 1.0], dtype=np.float32)


def parse(parameters: object) -> SamplingParams:
    return parse_parameters(parameters, vocab=5, max_tokens_limit=100)


def test_defaults_are_greedy_and_bounded_by_the_context() -> None:
    assert parse(None) == SamplingParams(max_tokens=32)
    assert parse_parameters({}, vocab=5, max_tokens_limit=7).max_tokens == 7


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 101}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"stop": [9]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": list(range(17))}, "stop"),
        ([], "parameters"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(parameters: object, field: str) -> None:
    with pytest.raises(ServeError) as refused:
        parse(parameters)
    assert refused.value.kind is ErrorKind.INVALID_ARGUMENT
    assert field in refused.value.message


def test_stop_takes_ids_and_strings() -> None:
    params = parse({"stop": [4, "\n\n"], "seed": 3, "top_k": 2, "top_p": 0.5})
    assert params.stop_tokens == frozenset({4})
    assert params.stop_strings == ("\n\n",)
    assert parse({"stop": "END"}).stop_strings == ("END",)


def test_temperature_zero_is_argmax() -> None:
    rng = np.random.default_rng(0)
    assert {next_token(LOGITS, SamplingParams(), rng) for _ in range(20)} == {1}


def test_top_k_and_top_p_restrict_the_draw() -> None:
    rng = np.random.default_rng(0)
    top2 = SamplingParams(temperature=5.0, top_k=2)
    assert {next_token(LOGITS, top2, rng) for _ in range(200)} == {1, 2}
    nucleus = SamplingParams(temperature=1.0, top_p=0.3)
    assert {next_token(LOGITS, nucleus, rng) for _ in range(200)} == {1}
    wide = SamplingParams(temperature=5.0)
    assert {next_token(LOGITS, wide, rng) for _ in range(500)} == {0, 1, 2, 3, 4}


def test_one_seed_one_draw() -> None:
    params = SamplingParams(temperature=2.0, seed=11)

    def draws(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [next_token(LOGITS, params, rng) for _ in range(30)]

    assert draws(11) == draws(11)
    assert draws(11) != draws(12)


def test_a_sequence_finishes_on_a_stop_or_at_max_tokens() -> None:
    params = SamplingParams(max_tokens=3, stop_tokens=frozenset({4}), stop_strings=("ab",))
    assert finish_reason(1, 1, "x", params) is None
    assert finish_reason(4, 1, "x", params) == "stop"
    assert finish_reason(1, 2, "xab", params) == "stop"
    assert finish_reason(1, 3, "xyz", params) == "length"


def test_prompts_come_as_text_or_ids_never_both() -> None:
    tokenizer = ByteTokenizer()
    assert prompt_ids("hé", None, tokenizer, 256) == [104, 195, 169]
    assert prompt_ids(None, [1, 2], None, 256) == [1, 2]
    for text, ids, message in [
        ("a", [1], "exactly one"),
        (None, None, "exactly one"),
        ("a", None, "without a tokenizer"),
        (None, [256], "from 0 to 255"),
        (None, [], "non-empty"),
    ]:
        with pytest.raises(ServeError, match=message):
            prompt_ids(text, ids, None if message == "without a tokenizer" else tokenizer, 256)


def test_a_stream_holds_back_a_split_character_until_it_is_whole() -> None:
    decoder = StreamDecoder(ByteTokenizer())
    pieces = [decoder.push(token) for token in "é!".encode()]
    assert pieces == ["", "é", "!"]
    assert decoder.text == "é!"
