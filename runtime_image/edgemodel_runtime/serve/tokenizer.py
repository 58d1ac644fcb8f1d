"""Owns text <-> token ids for generative serving: a byte-level tokenizer, no dependencies.

Token id `offset + b` is the byte `b` of the UTF-8 text; ids outside those 256 (special tokens
such as an end-of-text id) decode to nothing. Streams decode incrementally (`StreamDecoder`),
so a character split over several byte tokens is sent once it is complete. A model served
without a tokenizer takes and returns token ids only (`input_ids` / `output_ids`).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import invalid

BYTE_VALUES = 256


class TokenizerError(ValueError):
    """A tokenizer file or choice that cannot be used; the message names the field."""


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as token ids `offset` .. `offset + 255`."""

    offset: int = 0

    def encode(self, text: str) -> list[int]:
        return [self.offset + byte for byte in text.encode("utf-8")]

    def to_bytes(self, ids: Sequence[int]) -> bytes:
        return bytes(token - self.offset for token in ids if 0 <= token - self.offset < BYTE_VALUES)

    def decode(self, ids: Sequence[int]) -> str:
        return self.to_bytes(ids).decode("utf-8", errors="replace")


class StreamDecoder:
    """Text of a token stream, piece by piece, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: ByteTokenizer) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def push(self, token: int) -> str:
        piece: str = self._decoder.decode(self._tokenizer.to_bytes([token]))
        self.text += piece
        return piece


def load_tokenizer(choice: str) -> ByteTokenizer | None:
    """The tokenizer `--tokenizer` names: none, bytes, or a JSON file {"type": "bytes", ...}."""
    if choice in ("", "none"):
        return None
    if choice == "bytes":
        return ByteTokenizer()
    try:
        document = json.loads(Path(choice).read_text())
    except (OSError, ValueError) as exc:
        raise TokenizerError(
            f"--tokenizer {choice}: cannot read a JSON tokenizer ({exc})"
        ) from None
    if not isinstance(document, dict) or document.get("type") != "bytes":
        raise TokenizerError(f"--tokenizer {choice}: 'type' must be \"bytes\"")
    offset = document.get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise TokenizerError(f"--tokenizer {choice}: 'offset' must be a non-negative integer")
    return ByteTokenizer(offset=offset)


def prompt_ids(text: object, ids: object, tokenizer: ByteTokenizer | None, vocab: int) -> list[int]:
    """The prompt's token ids from `text_input` or `input_ids` (exactly one), or 400."""
    if (text is None) == (ids is None):
        raise invalid("give exactly one of 'text_input' and 'input_ids'")
    if text is not None:
        if tokenizer is None:
            raise invalid("this model is served without a tokenizer: send 'input_ids'")
        if not isinstance(text, str) or not text:
            raise invalid("'text_input' must be a non-empty string")
        return tokenizer.encode(text)
    if not isinstance(ids, list) or not ids:
        raise invalid("'input_ids' must be a non-empty list of token ids")
    for token in ids:
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab:
            raise invalid(f"'input_ids': each id must be an integer from 0 to {vocab - 1}")
    return list(ids)
