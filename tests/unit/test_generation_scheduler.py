"""Iteration-level batching: generations join and leave the running batch between decode steps.

Runs the real scheduler over a real (tiny) ONNX decoder: every served output must equal the
plain onnxruntime greedy loop for its prompt alone, whatever else shares the batch; steps run on
the decode thread whatever the event loop is doing; admission is bounded by sequence count and
KV bytes (503), never queued without bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from prometheus_client import CollectorRegistry

from edgemodel_runtime.serve.decoder import Batch, DecoderModel
from edgemodel_runtime.serve.errors import ErrorKind, ServeError
from edgemodel_runtime.serve.model import OnnxModel
from edgemodel_runtime.serve.sampling import SamplingParams
from edgemodel_runtime.serve.scheduler import Generation, GenerationLimits, Scheduler, kv_bytes
from edgemodel_runtime.serve.tensors import Array
from edgemodel_runtime.serve.token_metrics import TokenMetrics
from edgemodel_runtime.serve.tokenizer import ByteTokenizer
from tests.generation_support import greedy_reference, tiny_decoder

PROMPTS = [[72, 101, 108, 108, 111], [1, 2, 3], [200, 17, 5, 9, 33, 64, 2]]


@pytest.fixture(scope="module")
def decoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("decoder") / "tiny.onnx")


@pytest.fixture(scope="module")
def model(decoder_path: Path) -> DecoderModel:
    decoder = DecoderModel(OnnxModel(decoder_path))
    decoder.warm_up()
    return decoder


class Paced(DecoderModel):
    """The tiny decoder at the pace of a bigger one: every decode step takes at least 2 ms, so
    a long generation surely outlasts what a test does beside it (the tiny model alone finishes
    200 tokens in a few ms)."""

    def decode(
        self,
        batch: Batch,
        tokens: Sequence[int],
        before_run: Callable[[], object] | None = None,
    ) -> tuple[Array, Batch]:
        time.sleep(0.002)
        return super().decode(batch, tokens, before_run)


@pytest.fixture(scope="module")
def paced(decoder_path: Path) -> DecoderModel:
    decoder = Paced(OnnxModel(decoder_path))
    decoder.warm_up()
    return decoder


def limits(model: DecoderModel, **overrides: int) -> GenerationLimits:
    values = {
        "max_sequences": 8,
        "max_kv_bytes": 64 << 20,
        "max_context": 256,
        "bytes_per_token": model.layout.bytes_per_token,
    }
    values.update(overrides)
    return GenerationLimits(**values)


def run(
    model: DecoderModel,
    scenario: Callable[[Scheduler], Awaitable[None]],
    registry: CollectorRegistry | None = None,
    **overrides: int,
) -> Scheduler:
    """Run `scenario` against a started scheduler in a fresh event loop; the scheduler after."""
    metrics = TokenMetrics(registry or CollectorRegistry(), ("m", "r", "t"))

    async def main() -> Scheduler:
        scheduler = Scheduler(model, limits(model, **overrides), metrics, ByteTokenizer())
        scheduler.start()
        try:
            await scenario(scheduler)
        finally:
            await scheduler.stop()
        return scheduler

    return asyncio.run(main())


async def tokens(generation: Generation) -> list[int]:
    return [event.token async for event in generation.events()]


def test_the_decoder_batches_across_lengths(model: DecoderModel) -> None:
    # The fixture derives positions from attention_mask, so left padding is exact.
    assert model.padding_safe and model.padding_error() == 0.0


def _ignoring_the_mask(src: Path, dst: Path) -> Path:
    """`src` rewired to attend to every position whatever attention_mask says."""
    graph = onnx.load_model(str(src))
    for node in graph.graph.node:
        node.input[:] = ["all_ones" if name == "attention_mask" else name for name in node.input]
    graph.graph.node.insert(0, helper.make_node("Add", ["mask_times_zero", "one"], ["all_ones"]))
    graph.graph.node.insert(
        0, helper.make_node("Mul", ["attention_mask", "zero"], ["mask_times_zero"])
    )
    graph.graph.initializer.extend(
        [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("one", 1))]
    )
    onnx.save_model(graph, str(dst))
    return dst


def test_a_decoder_that_ignores_the_mask_is_served_one_sequence_per_step(
    decoder_path: Path, tmp_path: Path
) -> None:
    """Left padding would leak into its rows' context: the warm-up check finds it, and
    concurrent generations then run as separate batches, each still equal to its greedy loop."""
    blind = DecoderModel(OnnxModel(_ignoring_the_mask(decoder_path, tmp_path / "blind.onnx")))
    blind.warm_up()
    assert not blind.padding_safe and blind.padding_error() > 0.1
    out: dict[int, list[int]] = {}

    async def scenario(scheduler: Scheduler) -> None:
        streams = [scheduler.submit(p, SamplingParams(max_tokens=8)) for p in PROMPTS]
        for i, result in enumerate(await asyncio.gather(*(tokens(s) for s in streams))):
            out[i] = result

    served = run(blind, scenario)
    assert served.steps > 0
    for i, prompt in enumerate(PROMPTS):
        assert out[i] == greedy_reference(tmp_path / "blind.onnx", prompt, 8)


def test_a_lone_generation_equals_the_plain_greedy_loop(
    model: DecoderModel, decoder_path: Path
) -> None:
    out: list[int] = []

    async def scenario(scheduler: Scheduler) -> None:
        out.extend(await tokens(scheduler.submit(PROMPTS[0], SamplingParams(max_tokens=12))))

    run(model, scenario)
    assert out == greedy_reference(decoder_path, PROMPTS[0], 12)


def test_concurrent_generations_share_steps_and_each_equals_its_lone_output(
    model: DecoderModel, decoder_path: Path
) -> None:
    outputs: list[list[int]] = []

    async def scenario(scheduler: Scheduler) -> None:
        generations = [scheduler.submit(p, SamplingParams(max_tokens=10)) for p in PROMPTS]
        outputs.extend(await asyncio.gather(*(tokens(g) for g in generations)))

    scheduler = run(model, scenario)
    for prompt, out in zip(PROMPTS, outputs, strict=True):
        assert out == greedy_reference(decoder_path, prompt, 10)
    # 3 x 10 tokens: 3 from the prefills, the other 27 in 9 shared decode steps.
    assert scheduler.steps == 9


def test_a_generation_joins_the_running_batch_between_steps(
    paced: DecoderModel, decoder_path: Path
) -> None:
    seen: dict[str, Any] = {}

    async def scenario(scheduler: Scheduler) -> None:
        first = scheduler.submit(PROMPTS[0], SamplingParams(max_tokens=200))
        events = first.events()
        for _ in range(5):  # the first generation is (at least) five tokens in
            await anext(events)
        second = scheduler.submit(PROMPTS[1], SamplingParams(max_tokens=8))
        seen["joined"] = await tokens(second)
        # The late one did not wait for the first to finish: it ran beside it.
        seen["first still running"] = first.finish is None and len(first.tokens) < 200
        seen["rest"] = [event.token async for event in events]

    run(paced, scenario)
    assert seen["joined"] == greedy_reference(decoder_path, PROMPTS[1], 8)
    assert seen["first still running"]
    assert len(seen["rest"]) == 195


def test_decoding_goes_on_while_the_event_loop_is_busy(
    model: DecoderModel, decoder_path: Path
) -> None:
    # Steps follow each other on the decode thread; the event loop only streams the tokens.
    seen: dict[str, Any] = {}

    async def scenario(scheduler: Scheduler) -> None:
        generation = scheduler.submit(PROMPTS[2], SamplingParams(max_tokens=100))
        events = generation.events()
        await anext(events)
        at_block = len(generation.tokens)
        time.sleep(0.5)  # the event loop is stuck (a slow handler): no callback runs
        seen["decoded while blocked"] = len(generation.tokens) - at_block
        seen["tokens"] = [generation.tokens[0]] + [event.token async for event in events]

    run(model, scenario)
    assert seen["decoded while blocked"] >= 10
    assert seen["tokens"] == greedy_reference(decoder_path, PROMPTS[2], 100)


def test_a_finished_generation_leaves_and_the_others_go_on(
    model: DecoderModel, decoder_path: Path
) -> None:
    seen: dict[str, Generation] = {}
    outputs: list[list[int]] = []

    async def scenario(scheduler: Scheduler) -> None:
        seen["short"] = scheduler.submit(PROMPTS[2], SamplingParams(max_tokens=2))
        long = scheduler.submit(PROMPTS[0], SamplingParams(max_tokens=14))
        outputs.extend(await asyncio.gather(tokens(seen["short"]), tokens(long)))
        assert scheduler.active == 0

    run(model, scenario)
    assert outputs[0] == greedy_reference(decoder_path, PROMPTS[2], 2)
    assert outputs[1] == greedy_reference(decoder_path, PROMPTS[0], 14)
    assert seen["short"].finish == "length"


def test_a_stop_token_ends_the_generation_with_it(model: DecoderModel, decoder_path: Path) -> None:
    expected = greedy_reference(decoder_path, PROMPTS[1], 10)
    stop = expected[4]
    cut = expected.index(stop) + 1
    params = SamplingParams(max_tokens=10, stop_tokens=frozenset({stop}))
    seen: dict[str, Generation] = {}
    out: list[int] = []

    async def scenario(scheduler: Scheduler) -> None:
        seen["g"] = scheduler.submit(PROMPTS[1], params)
        out.extend(await tokens(seen["g"]))

    run(model, scenario)
    assert out == expected[:cut]
    assert seen["g"].finish == "stop"


def test_a_stop_string_ends_the_generation_with_it(model: DecoderModel, decoder_path: Path) -> None:
    expected = greedy_reference(decoder_path, PROMPTS[0], 10)
    # The first ASCII byte after the first token that did not appear before: its character.
    at = next(i for i, t in enumerate(expected) if i and t < 128 and t not in expected[:i])
    stop = chr(expected[at])
    out: list[int] = []

    async def scenario(scheduler: Scheduler) -> None:
        params = SamplingParams(max_tokens=10, stop_strings=(stop,))
        out.extend(await tokens(scheduler.submit(PROMPTS[0], params)))

    run(model, scenario)
    assert out == expected[: at + 1]


def test_seeded_sampling_is_deterministic_and_independent_of_the_batch(model: DecoderModel) -> None:
    params = SamplingParams(max_tokens=12, temperature=1.5, top_k=50, top_p=0.95, seed=42)
    other = dataclasses.replace(params, seed=43)
    outputs: dict[str, list[int]] = {}

    async def scenario(scheduler: Scheduler) -> None:
        outputs["alone"] = await tokens(scheduler.submit(PROMPTS[0], params))
        crowd = [
            scheduler.submit(p, SamplingParams(max_tokens=12, temperature=1.0)) for p in PROMPTS
        ]
        again = scheduler.submit(PROMPTS[0], params)
        results = await asyncio.gather(tokens(again), *(tokens(g) for g in crowd))
        outputs["in a batch"] = results[0]
        outputs["other seed"] = await tokens(scheduler.submit(PROMPTS[0], other))

    run(model, scenario)
    assert outputs["in a batch"] == outputs["alone"]
    assert outputs["other seed"] != outputs["alone"]


def test_beyond_max_sequences_is_refused_and_a_cancelled_one_frees_its_slot(
    model: DecoderModel,
) -> None:
    late: list[int] = []

    async def scenario(scheduler: Scheduler) -> None:
        held = [scheduler.submit(PROMPTS[0], SamplingParams(max_tokens=60)) for _ in range(2)]
        with pytest.raises(ServeError) as refused:
            scheduler.submit(PROMPTS[1], SamplingParams(max_tokens=4))
        assert refused.value.kind is ErrorKind.OVERLOADED
        held[0].cancel()  # the client went away: its slot is free before the next step
        for _ in range(100):
            if scheduler.active < 2:
                break
            await asyncio.sleep(0.01)
        late.extend(await tokens(scheduler.submit(PROMPTS[1], SamplingParams(max_tokens=4))))
        held[1].cancel()

    run(model, scenario, max_sequences=2)
    assert len(late) == 4


def test_beyond_the_kv_budget_is_refused_and_too_large_alone_is_the_clients(
    model: DecoderModel,
) -> None:
    # Room for exactly two generations of 40 tokens (past and present alive during a step).
    budget = kv_bytes(2, 40, model.layout.bytes_per_token)

    async def scenario(scheduler: Scheduler) -> None:
        held = [scheduler.submit([1] * 10, SamplingParams(max_tokens=30)) for _ in range(2)]
        with pytest.raises(ServeError) as refused:
            scheduler.submit([1] * 10, SamplingParams(max_tokens=30))
        assert refused.value.kind is ErrorKind.OVERLOADED
        with pytest.raises(ServeError) as alone:
            scheduler.submit([1] * 10, SamplingParams(max_tokens=90))
        assert alone.value.kind is ErrorKind.TOO_LARGE
        with pytest.raises(ServeError) as context:
            scheduler.submit([1] * 200, SamplingParams(max_tokens=100))
        assert context.value.kind is ErrorKind.INVALID_ARGUMENT
        await asyncio.gather(*(tokens(g) for g in held))

    run(model, scenario, max_kv_bytes=budget)


def test_token_metrics_count_every_token(model: DecoderModel) -> None:
    registry = CollectorRegistry()

    async def scenario(scheduler: Scheduler) -> None:
        generations = [scheduler.submit(p, SamplingParams(max_tokens=5)) for p in PROMPTS]
        await asyncio.gather(*(tokens(g) for g in generations))

    run(model, scenario, registry)
    labels = {"model": "m", "revision": "r", "target": "t"}
    assert registry.get_sample_value("edgemodel_generated_tokens_total", labels) == 15
    ttft = registry.get_sample_value("edgemodel_time_to_first_token_seconds_count", labels)
    itl = registry.get_sample_value("edgemodel_inter_token_latency_seconds_count", labels)
    assert (ttft, itl) == (3, 12)
