"""Owns text <-> token ids for generative serving: built-in byte tokens or a tokenizer.json.

`--tokenizer` chooses: `none` (token ids in and out: `input_ids` / `output_ids`), `bytes` (token
id `offset + b` is the byte `b` of the UTF-8 text; ids outside those 256, such as an end-of-text
id, decode to nothing), or the path of a Hugging Face `tokenizer.json`, loaded with the
`tokenizers` library (`FileTokenizer`; a file `{"type": "bytes", "offset": N}` still means byte
tokens). A file that cannot be used is a `TokenizerError` naming the path and what is wrong, so
`edgemodel serve` exits at startup with one line, not a traceback.

Streams decode incrementally (`StreamDecoder`): a token's text is sent once it decodes to whole
characters, so a character split over several tokens (multi-byte UTF-8 in a byte-level
vocabulary) is never sent broken, and the pieces of a finished stream join to exactly
`decode(ids)`. Prompt text is bounded before it is encoded (`prompt_ids`): no token covers more
characters than the longest vocabulary entry, so a longer text cannot fit the context and is
refused (400) without spending the CPU on it. See docs/architecture.md, "Generative serving".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .errors import invalid

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HfTokenizer

BYTE_VALUES = 256
REPLACEMENT = "\ufffd"
# A tokenizer.json of a large vocabulary is tens of MiB; far beyond that it is not one.
MAX_TOKENIZER_BYTES = 256 << 20
# Tokens held back waiting to complete a character: UTF-8 needs at most 4 bytes, so a longer
# run that still ends mid-character is undecodable output; it is sent as it decodes (U+FFFD).
MAX_PENDING_TOKENS = 16


class TokenizerError(ValueError):
    """A tokenizer file or choice that cannot be used; the message names the path or field."""


class Tokenizer(Protocol):
    """What generative serving needs of a tokenizer."""

    @property
    def name(self) -> str: ...

    @property
    def max_token_chars(self) -> int:
        """An upper bound on the characters of text one token stands for."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as token ids `offset` .. `offset + 255`."""

    offset: int = 0

    @property
    def name(self) -> str:
        return "bytes" if self.offset == 0 else f"bytes+{self.offset}"

    @property
    def max_token_chars(self) -> int:
        return 1

    def encode(self, text: str) -> list[int]:
        return [self.offset + byte for byte in text.encode("utf-8")]

    def to_bytes(self, ids: Sequence[int]) -> bytes:
        return bytes(token - self.offset for token in ids if 0 <= token - self.offset < BYTE_VALUES)

    def decode(self, ids: Sequence[int]) -> str:
        return self.to_bytes(ids).decode("utf-8", errors="replace")


class FileTokenizer:
    """A Hugging Face tokenizer.json, through the `tokenizers` library."""

    def __init__(self, tokenizer: HfTokenizer, path: str) -> None:
        self._tokenizer = tokenizer
        self.path = path
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        entries = tokenizer.get_vocab(with_added_tokens=True)
        self._max_token_chars = max((len(entry) for entry in entries), default=1)

    @property
    def name(self) -> str:
        return self.path

    @property
    def max_token_chars(self) -> int:
        return self._max_token_chars

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._tokenizer.decode(list(ids), skip_special_tokens=False)
        return text


class StreamDecoder:
    """Text of a token stream, piece by piece, holding back pieces that end mid-character.

    Each push decodes the tokens since the last piece sent, with the tokens of that piece in
    front (a decoder may treat the start of a text specially, e.g. drop a leading space), and
    sends what it adds unless it ends in U+FFFD (a character not yet complete). `flush` sends
    what is held back when the stream ends. `text` is everything sent.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the piece sent last (decoded again as context)
        self._read = 0  # end of what has been sent
        self._sent: str | None = ""  # decode(ids[prefix:read]), once computed
        self.text = ""

    def push(self, token: int) -> str:
        self._ids.append(token)
        sent, text = self._decoded()
        held = len(text) <= len(sent) or text.endswith(REPLACEMENT)
        if held and len(self._ids) - self._read < MAX_PENDING_TOKENS:
            return ""
        return self._send(text[len(sent) :])

    def flush(self) -> str:
        """What is still held back (a stream that ended mid-character: it decodes to U+FFFD)."""
        sent, text = self._decoded()
        return self._send(text[len(sent) :]) if len(text) > len(sent) else ""

    def _decoded(self) -> tuple[str, str]:
        """The text sent last (decoded again as context) and that text with what followed."""
        window = self._ids[self._prefix :]
        if self._sent is None:
            self._sent = self._tokenizer.decode(window[: self._read - self._prefix])
        return self._sent, self._tokenizer.decode(window)

    def _send(self, piece: str) -> str:
        self._prefix, self._read = self._read, len(self._ids)
        self._sent = None
        self.text += piece
        return piece


def _load_file(path: str) -> Tokenizer:
    """The tokenizer a JSON file describes: a tokenizer.json, or {"type": "bytes"}."""
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_TOKENIZER_BYTES + 1)
    except OSError as exc:
        raise TokenizerError(
            f"--tokenizer {path}: cannot read it ({exc.strerror or exc})"
        ) from None
    if len(raw) > MAX_TOKENIZER_BYTES:
        raise TokenizerError(f"--tokenizer {path}: larger than {MAX_TOKENIZER_BYTES} bytes")
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise TokenizerError(f"--tokenizer {path}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise TokenizerError(f"--tokenizer {path}: not a tokenizer (a JSON object is expected)")
    if "type" in document:
        return _byte_file(path, document)
    if "model" not in document:
        raise TokenizerError(
            f"--tokenizer {path}: not a Hugging Face tokenizer.json (no 'model' field) "
            'and not {"type": "bytes"}'
        )
    return _hugging_face(path, raw.decode("utf-8"))


def _byte_file(path: str, document: dict[str, object]) -> ByteTokenizer:
    if document.get("type") != "bytes":
        raise TokenizerError(f"--tokenizer {path}: 'type' must be \"bytes\"")
    offset = document.get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise TokenizerError(f"--tokenizer {path}: 'offset' must be a non-negative integer")
    return ByteTokenizer(offset=offset)


def _hugging_face(path: str, text: str) -> FileTokenizer:
    from tokenizers import Tokenizer as HfTokenizer

    try:
        tokenizer = HfTokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception naming what does not parse
        raise TokenizerError(f"--tokenizer {path}: not a usable tokenizer.json ({exc})") from None
    loaded = FileTokenizer(tokenizer, path)
    if loaded.vocab_size < 1:
        raise TokenizerError(f"--tokenizer {path}: its vocabulary is empty")
    return loaded


def load_tokenizer(choice: str) -> Tokenizer | None:
    """The tokenizer `--tokenizer` names: none, bytes, or a JSON file (tokenizer.json)."""
    if choice in ("", "none"):
        return None
    if choice == "bytes":
        return ByteTokenizer()
    return _load_file(choice)


def vocabulary_mismatch(tokenizer: Tokenizer, vocab: int) -> str | None:
    """Why `tokenizer` cannot drive a model with `vocab` logits (None: it can)."""
    size = tokenizer.vocab_size if isinstance(tokenizer, FileTokenizer) else None
    if size is None or vocab <= 0 or size <= vocab:
        return None
    return (
        f"tokenizer {tokenizer.name} has {size} token ids but the model's logits have {vocab}: "
        "it was made for another model"
    )


def prompt_ids(
    text: object,
    ids: object,
    tokenizer: Tokenizer | None,
    vocab: int,
    max_tokens: int | None = None,
) -> list[int]:
    """The prompt's token ids from `text_input` or `input_ids` (exactly one), or 400.

    With `max_tokens` (the context), a text that cannot fit it is refused before encoding.
    """
    if (text is None) == (ids is None):
        raise invalid("give exactly one of 'text_input' and 'input_ids'")
    if text is not None:
        return _text_ids(text, tokenizer, vocab, max_tokens)
    if not isinstance(ids, list) or not ids:
        raise invalid("'input_ids' must be a non-empty list of token ids")
    for token in ids:
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab:
            raise invalid(f"'input_ids': each id must be an integer from 0 to {vocab - 1}")
    return list(ids)


def _text_ids(
    text: object, tokenizer: Tokenizer | None, vocab: int, max_tokens: int | None
) -> list[int]:
    if tokenizer is None:
        raise invalid("this model is served without a tokenizer: send 'input_ids'")
    if not isinstance(text, str) or not text:
        raise invalid("'text_input' must be a non-empty string")
    if max_tokens is not None and len(text) > max_tokens * tokenizer.max_token_chars:
        raise invalid(
            f"'text_input' has {len(text)} characters: more than the context of {max_tokens} "
            "tokens can hold"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("'text_input' is not valid Unicode (it holds a lone surrogate)") from None
    encoded = tokenizer.encode(text)
    if not encoded:
        raise invalid("'text_input' encodes to no tokens")
    beyond = [token for token in encoded if not 0 <= token < vocab]
    if beyond:
        raise invalid(f"'text_input' encodes to token id {beyond[0]}, beyond the model's {vocab}")
    return encoded
