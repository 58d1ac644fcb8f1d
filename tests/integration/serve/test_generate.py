"""Generative serving over HTTP: the v2 generate extension on a real `edgemodel serve`.

A real server process (`--generative`) serves a real ONNX decoder; clients are plain aiohttp
with server-sent events parsed by hand, many at once. Every stream must carry exactly the tokens
a plain onnxruntime greedy loop gives its prompt alone (iteration-level batching changes
nothing but throughput), the token metrics must count them, capacity is refused with 503 +
Retry-After, and a client that hangs up mid-stream frees its sequence slot.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from serve_support import Server, running, start_server
from tests.generation_support import greedy_reference, tiny_decoder

from edgemodel_sandbox.decoder import DecoderConfig
from edgemodel_sandbox.models import ModelFixture

# Slower steps than the unit tests' decoder, so a long generation surely holds its slot while
# the capacity test's second request arrives.
HELD = DecoderConfig(
    vocab_size=256, hidden=128, layers=4, heads=4, kv_heads=2, intermediate=256, max_positions=1024
)
PROMPTS = [[(7 * i + j) % 256 for j in range(3 + i)] for i in range(8)]


@pytest.fixture(scope="module")
def decoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("decoder") / "tiny.onnx")


@pytest.fixture(scope="module")
def server(decoder_path: Path, log_dir: Path) -> Iterator[Server]:
    with running(
        decoder_path, "lm", log_dir, "--generative", "--tokenizer", "bytes", "--max-context", "256"
    ) as serving:
        yield serving


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    path = tiny_decoder(tmp_path_factory.mktemp("held") / "held.onnx", HELD)
    with running(
        path, "lm1", log_dir, "--generative", "--max-sequences", "1", "--max-context", "1024"
    ) as serving:
        yield serving


def url(server: Server, path: str) -> str:
    return f"http://{server.http_url}/v2/models/{server.name}/{path}"


async def stream(
    session: aiohttp.ClientSession, server: Server, body: dict[str, Any], keep: int | None = None
) -> list[dict[str, Any]]:
    """The stream's events (parsed SSE data); only the first `keep` if given, then hang up."""
    events: list[dict[str, Any]] = []
    async with session.post(url(server, "generate_stream"), json=body) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in response.content:
            if line.startswith(b"data: "):
                events.append(json.loads(line[len(b"data: ") :]))
            if keep is not None and len(events) == keep:
                response.close()  # the client goes away mid-stream
                break
    return events


def total(server: Server, family: str, **labels: str) -> float:
    return sum(
        value
        for name, sample_labels, value in server.scrape().get(family, [])
        if name.endswith(("_total", "_count")) and labels.items() <= sample_labels.items()
    )


def test_concurrent_streams_each_carry_their_lone_greedy_tokens(
    server: Server, decoder_path: Path
) -> None:
    tokens_before = total(server, "edgemodel_generated_tokens")

    async def main() -> list[list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            bodies = [{"input_ids": p, "parameters": {"max_tokens": 16}} for p in PROMPTS]
            return await asyncio.gather(*(stream(session, server, b) for b in bodies))

    results = asyncio.run(main())
    for prompt, events in zip(PROMPTS, results, strict=True):
        assert [e["output_ids"][0] for e in events] == greedy_reference(decoder_path, prompt, 16)
        assert [e["index"] for e in events] == list(range(16))
        assert events[-1]["finish_reason"] == "length"
        assert all("finish_reason" not in e for e in events[:-1])
        assert events[0]["model_name"] == "lm"
    assert total(server, "edgemodel_generated_tokens") - tokens_before == 8 * 16
    assert total(server, "edgemodel_time_to_first_token_seconds") >= 8
    assert total(server, "edgemodel_inter_token_latency_seconds") >= 8 * 15


def test_generate_answers_once_with_text_in_and_out(server: Server, decoder_path: Path) -> None:
    async def main() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            body = {"text_input": "Hello", "parameters": {"max_tokens": 12, "temperature": 0}}
            async with session.post(url(server, "generate"), json=body) as response:
                return response.status, await response.json()

    status, document = asyncio.run(main())
    assert status == 200
    expected = greedy_reference(decoder_path, list(b"Hello"), 12)
    assert document["output_ids"] == expected
    assert document["text_output"] == bytes(expected).decode("utf-8", errors="replace")
    assert document["finish_reason"] == "length"
    assert total(server, "edgemodel_requests", code="200") >= 1


def test_seeded_sampling_repeats_over_http(server: Server) -> None:
    body = {
        "input_ids": PROMPTS[3],
        "parameters": {"max_tokens": 10, "temperature": 1.2, "seed": 5},
    }

    async def main() -> list[list[int]]:
        async with aiohttp.ClientSession() as session:

            async def once() -> list[int]:
                async with session.post(url(server, "generate"), json=body) as response:
                    return list((await response.json())["output_ids"])

            return await asyncio.gather(*(once() for _ in range(3)))

    first, *others = asyncio.run(main())
    assert all(other == first for other in others)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input_ids": [1], "parameters": {"max_tokens": 0}}, "max_tokens"),
        ({"input_ids": [1], "parameters": {"top_p": 2}}, "top_p"),
        ({"input_ids": [999]}, "input_ids"),
        ({"text_input": "a", "input_ids": [1]}, "exactly one"),
        ({"input_ids": [1] * 250, "parameters": {"max_tokens": 10}}, "max_tokens"),
    ],
)
def test_bad_generate_requests_are_400_naming_the_field(
    server: Server, body: dict[str, Any], message: str
) -> None:
    async def main() -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url(server, "generate_stream"), json=body) as response,
        ):
            return response.status, await response.json()

    status, document = asyncio.run(main())
    assert status == 400
    assert message in document["error"]


def test_beyond_max_sequences_is_503_with_retry_after(one_slot: Server) -> None:
    async def main() -> tuple[int, str | None]:
        async with aiohttp.ClientSession() as session:
            body = {"input_ids": [1, 2, 3], "parameters": {"max_tokens": 1000}}
            async with session.post(url(one_slot, "generate_stream"), json=body) as held:
                await held.content.readline()  # admitted and generating
                async with session.post(url(one_slot, "generate"), json=body) as refused:
                    status, retry = refused.status, refused.headers.get("Retry-After")
                held.close()
            return status, retry

    assert asyncio.run(main()) == (503, "1")


def test_a_client_that_hangs_up_frees_its_slot(one_slot: Server) -> None:
    disconnects_before = total(one_slot, "edgemodel_requests", code="499")

    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            body = {"input_ids": [5, 6], "parameters": {"max_tokens": 1000}}
            first = await stream(session, one_slot, body, keep=2)
            assert len(first) == 2
            deadline = time.monotonic() + 10
            while True:  # the slot frees on the server's next write or step
                small = {"input_ids": [5, 6], "parameters": {"max_tokens": 3}}
                async with session.post(url(one_slot, "generate"), json=small) as response:
                    await response.read()  # all of it: hanging up early would be a 499 too
                    if response.status != 503 or time.monotonic() > deadline:
                        return response.status
                await asyncio.sleep(0.05)

    assert asyncio.run(main()) == 200
    assert total(one_slot, "edgemodel_requests", code="499") == disconnects_before + 1


def test_a_model_without_a_kv_cache_is_refused_as_generative(
    digits: ModelFixture, log_dir: Path
) -> None:
    server = start_server(digits.model, "digits", log_dir, "--generative", ready=False)
    assert server.process.wait(60) == 2
    assert "not a generative decoder" in server.output()
    assert "'input_ids'" in server.output()


def test_generate_routes_are_absent_without_generative(digits_server: Server) -> None:
    async def main() -> int:
        async with aiohttp.ClientSession() as session:
            body = {"input_ids": [1, 2]}
            async with session.post(url(digits_server, "generate"), json=body) as response:
                return response.status

    assert asyncio.run(main()) == 404


def test_sigterm_lets_running_streams_finish(tmp_path: Path, log_dir: Path) -> None:
    path = tiny_decoder(tmp_path / "held.onnx", HELD)
    server = start_server(path, "lm2", log_dir, "--generative", "--max-context", "1024")
    try:

        async def main() -> list[dict[str, Any]]:
            async with aiohttp.ClientSession() as session:
                body = {"input_ids": [1, 2, 3], "parameters": {"max_tokens": 300}}
                events: list[dict[str, Any]] = []
                async with session.post(url(server, "generate_stream"), json=body) as response:
                    async for line in response.content:
                        if line.startswith(b"data: "):
                            events.append(json.loads(line[len(b"data: ") :]))
                            if len(events) == 1:  # mid-generation: ask the server to stop
                                server.process.send_signal(signal.SIGTERM)
                return events

        events = asyncio.run(main())
        code = server.process.wait(30)  # it exits on its own once the stream is served
    finally:
        server.stop()
    assert len(events) == 300
    assert events[-1]["finish_reason"] == "length"
    assert code == 0
