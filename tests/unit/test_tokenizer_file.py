"""Tokenizer files in generative serving: the fixture's tokenizer.json, loading, streaming text.

The decoder fixture ships a Hugging Face tokenizer.json made here with `tokenizers` whose ids
are the byte values the model was built on; `edgemodel serve --tokenizer PATH` loads any such
file, refuses a bad one naming the path, bounds prompt text before encoding it, and streams
text so that no piece is a broken character and the pieces join to `decode(ids)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from edgemodel_runtime.serve.errors import ServeError
from edgemodel_runtime.serve.sampling import SamplingParams, finish_reason
from edgemodel_runtime.serve.tokenizer import (
    FileTokenizer,
    StreamDecoder,
    TokenizerError,
    load_tokenizer,
    prompt_ids,
    vocabulary_mismatch,
)
from edgemodel_sandbox.decoder import TOKENIZER_FILE, byte_tokenizer_json, ensure_decoder

TEXTS = ["hé", "€ and 𝄞 — «quotes»", "  two spaces\n\ttab", "plain ascii"]


@pytest.fixture(scope="module")
def fixture_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / TOKENIZER_FILE
    path.write_text(byte_tokenizer_json())
    return path


@pytest.fixture(scope="module")
def byte_level(fixture_file: Path) -> FileTokenizer:
    loaded = load_tokenizer(str(fixture_file))
    assert isinstance(loaded, FileTokenizer)
    return loaded


@pytest.fixture(scope="module")
def word_level(tmp_path_factory: pytest.TempPathFactory) -> FileTokenizer:
    """A BPE trained here with Metaspace: multi-character tokens, a leading-space marker."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    corpus = ["the stop sign stops the stream", "hello world, hello stream"] * 20
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(special_tokens=["<unk>"]))
    path = tmp_path_factory.mktemp("word") / TOKENIZER_FILE
    tokenizer.save(str(path))
    loaded = load_tokenizer(str(path))
    assert isinstance(loaded, FileTokenizer)
    return loaded


def streamed(tokenizer: FileTokenizer, ids: list[int]) -> list[str]:
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(token) for token in ids]
    return [*pieces, decoder.flush()]


def test_the_fixture_tokenizer_ids_are_the_model_byte_tokens(byte_level: FileTokenizer) -> None:
    for text in TEXTS:
        assert byte_level.encode(text) == list(text.encode("utf-8"))
        assert byte_level.decode(byte_level.encode(text)) == text
    assert byte_level.vocab_size == 256
    assert byte_level.max_token_chars == 1


def test_the_fixture_tokenizer_is_deterministic_and_cached_with_the_decoder() -> None:
    assert byte_tokenizer_json() == byte_tokenizer_json()
    written = ensure_decoder() / TOKENIZER_FILE
    assert written.read_text() == byte_tokenizer_json()
    assert Tokenizer.from_file(str(written)).encode("é").ids == [0xC3, 0xA9]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_streamed_text_is_never_a_broken_character(byte_level: FileTokenizer, text: str) -> None:
    tokenizer = byte_level
    pieces = streamed(tokenizer, tokenizer.encode(text))
    assert "".join(pieces) == text
    if "\ufffd" not in text:  # a piece cut inside a character would decode to U+FFFD
        assert all("\ufffd" not in piece for piece in pieces)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=40))
def test_any_byte_stream_joins_to_the_tokenizers_decode(
    byte_level: FileTokenizer, ids: list[int]
) -> None:
    tokenizer = byte_level
    assert "".join(streamed(tokenizer, ids)) == tokenizer.decode(ids)


def test_a_character_split_over_tokens_is_sent_once_whole(byte_level: FileTokenizer) -> None:
    assert streamed(byte_level, list("a€b".encode())) == ["a", "", "", "€", "b", ""]
    # A generation that stops mid-character: the held bytes go out at the end, as U+FFFD.
    assert streamed(byte_level, [0x61, 0xE2, 0x82]) == ["a", "", "", "\ufffd"]


def test_multi_character_tokens_stream_with_their_spaces(word_level: FileTokenizer) -> None:
    ids = word_level.encode("hello world, hello stream")
    pieces = streamed(word_level, ids)
    assert "".join(pieces) == word_level.decode(ids) == "hello world, hello stream"
    assert len(ids) < len("hello world, hello stream")


def test_a_stop_string_inside_a_token_piece_stops(word_level: FileTokenizer) -> None:
    params = SamplingParams(max_tokens=50, stop_strings=("sto",))  # ends mid-token
    decoder = StreamDecoder(word_level)
    reasons = []
    for count, token in enumerate(word_level.encode("the stop sign"), 1):
        decoder.push(token)
        reasons.append(finish_reason(token, count, decoder.text, params))
    assert reasons[-1] == "stop"
    assert reasons.index("stop") == len(word_level.encode("the stop")) - 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read it"),
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"version": "1.0"}', "no 'model' field"),
        ('{"model": 3}', "not a usable tokenizer.json"),
        ('{"model": {"type": "BPE", "vocab": {}, "merges": []}}', "vocabulary is empty"),
        ('{"type": "sentencepiece"}', "'type' must be"),
    ],
)
def test_a_bad_file_is_refused_naming_the_path_and_the_fault(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TokenizerError) as raised:
        load_tokenizer(str(path))
    assert str(path) in str(raised.value)
    assert reason in str(raised.value)


def test_a_tokenizer_bigger_than_the_model_vocabulary_is_named(
    byte_level: FileTokenizer, word_level: FileTokenizer
) -> None:
    assert vocabulary_mismatch(byte_level, 256) is None
    message = vocabulary_mismatch(byte_level, 128)
    assert message is not None and "256 token ids" in message and "128" in message
    assert vocabulary_mismatch(word_level, word_level.vocab_size) is None


def test_prompt_text_that_cannot_fit_is_refused_before_encoding(
    byte_level: FileTokenizer,
) -> None:
    assert prompt_ids("héllo", None, byte_level, 256, max_tokens=8) == list("héllo".encode())
    for text, message in [
        ("x" * 9, "more than the context of 8 tokens"),
        ("a\ud800b", "lone surrogate"),
        (7, "non-empty string"),
        ("", "non-empty string"),
    ]:
        with pytest.raises(ServeError, match=message):
            prompt_ids(text, None, byte_level, 256, max_tokens=8)
    with pytest.raises(ServeError, match="beyond the model's 128"):
        prompt_ids("é", None, byte_level, 128)


def test_the_byte_json_file_still_means_byte_tokens(tmp_path: Path) -> None:
    path = tmp_path / "bytes.json"
    path.write_text(json.dumps({"type": "bytes", "offset": 2}))
    tokenizer = load_tokenizer(str(path))
    assert tokenizer is not None and tokenizer.encode("A") == [67]
    assert tokenizer.name == "bytes+2"
