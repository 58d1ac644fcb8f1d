"""Text generation through a tokenizer.json on a real `edgemodel serve`, and its attackers.

The server loads the decoder fixture's tokenizer.json (made with `tokenizers`) with
`--tokenizer PATH`; a text prompt is encoded by it and the streamed text pieces join to exactly
what `tokenizers` decodes the greedy ids to, the ids being those of a plain onnxruntime loop. A
bad tokenizer file stops `edgemodel serve` at startup with one line naming it; hostile text
(too long for the context, lone surrogates, bytes that are not UTF-8, not a string) is refused
with 400 and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serve_support import Server, running
from tests.generation_support import greedy_reference, tiny_decoder
from tokenizers import Tokenizer

from edgemodel_sandbox.decoder import TOKENIZER_FILE, byte_tokenizer_json

PROMPT = "Ünïcode prompt → "


@pytest.fixture(scope="module")
def decoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("decoder") / "tiny.onnx")


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / TOKENIZER_FILE
    path.write_text(byte_tokenizer_json())
    return path


@pytest.fixture(scope="module")
def server(decoder_path: Path, tokenizer_path: Path, log_dir: Path) -> Iterator[Server]:
    with running(
        decoder_path, "txt", log_dir, "--generative", "--tokenizer", str(tokenizer_path),
        "--max-context", "128",
    ) as serving:  # fmt: skip
        yield serving


def url(server: Server, path: str) -> str:
    return f"http://{server.http_url}/v2/models/{server.name}/{path}"


async def post(path: str, server: Server, body: bytes) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url(server, path), data=body, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        return response.status, await response.read()


def events(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len(b"data: ") :])
        for line in raw.split(b"\n")
        if line.startswith(b"data: ")
    ]


def test_streamed_text_is_the_tokenizers_decode_of_the_greedy_ids(
    server: Server, decoder_path: Path, tokenizer_path: Path
) -> None:
    hf = Tokenizer.from_file(str(tokenizer_path))
    body = {"text_input": PROMPT, "parameters": {"max_tokens": 40, "temperature": 0}}
    status, raw = asyncio.run(post("generate_stream", server, json.dumps(body).encode()))
    assert status == 200, raw
    stream = events(raw)
    ids = [event["output_ids"][0] for event in stream]
    assert ids == greedy_reference(decoder_path, hf.encode(PROMPT).ids, 40)
    assert "".join(event["text_output"] for event in stream) == hf.decode(ids)
    assert stream[-1]["finish_reason"] == "length"
    status, raw = asyncio.run(post("generate", server, json.dumps(body).encode()))
    assert status == 200
    assert json.loads(raw)["text_output"] == hf.decode(ids)


def test_a_stop_string_ends_the_text_where_it_appears(server: Server, decoder_path: Path) -> None:
    body = {"text_input": PROMPT, "parameters": {"max_tokens": 40, "temperature": 0}}
    status, raw = asyncio.run(post("generate", server, json.dumps(body).encode()))
    assert status == 200
    full = json.loads(raw)["text_output"]
    stop = next(full[i : i + 2] for i in range(5, len(full)) if "\ufffd" not in full[i : i + 2])
    body["parameters"] = {"max_tokens": 40, "temperature": 0, "stop": stop}
    status, raw = asyncio.run(post("generate", server, json.dumps(body).encode()))
    document = json.loads(raw)
    assert document["finish_reason"] == "stop"
    assert document["text_output"] == full[: full.index(stop) + len(stop)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (json.dumps({"text_input": "x" * 3_000_000}).encode(), "more than the context"),
        (b'{"text_input": "a\\ud800b"}', "lone surrogate"),
        (b'{"text_input": "\xff\xfe"}', ""),
        (json.dumps({"text_input": ["a"]}).encode(), "non-empty string"),
        (json.dumps({"text_input": "a", "parameters": {"stop": [None]}}).encode(), "stop"),
    ],
)
def test_hostile_text_is_400_and_the_server_keeps_serving(
    server: Server, body: bytes, message: str
) -> None:
    for path in ("generate", "generate_stream"):
        status, raw = asyncio.run(post(path, server, body))
        assert status == 400, raw
        assert message in json.loads(raw)["error"]
    ok = json.dumps({"text_input": "ok", "parameters": {"max_tokens": 2}}).encode()
    assert asyncio.run(post("generate", server, ok))[0] == 200
    assert server.process.poll() is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [("{not json", "not JSON"), ('{"model": 3}', "not a usable tokenizer.json")],
)
def test_a_bad_tokenizer_file_stops_the_server_at_startup_naming_it(
    decoder_path: Path, tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / TOKENIZER_FILE
    path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "edgemodel_cli.main", "serve", str(decoder_path), "--name", "bad",
         "--generative", "--tokenizer", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"--tokenizer {path}: {reason}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_tokenizer_made_for_another_model_stops_the_server(
    tmp_path: Path, tokenizer_path: Path, log_dir: Path
) -> None:
    model = tiny_decoder(tmp_path / "model.onnx")  # 256 logits: the byte vocabulary
    bigger = json.loads(byte_tokenizer_json())
    bigger["added_tokens"] = [
        {"id": 256, "content": "<|end|>", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True},
    ]  # fmt: skip
    path = tmp_path / TOKENIZER_FILE
    path.write_text(json.dumps(bigger))
    with running(
        model, "mismatch", log_dir, "--generative", "--tokenizer", str(path),
        ready=False,
    ) as serving:  # fmt: skip
        assert serving.process.wait(timeout=60) == 2
        assert "257 token ids but the model's logits have 256" in serving.output()
