"""Owns the KServe v2 generate extension over HTTP: `/generate` and `/generate_stream` (SSE).

A request is `{"text_input": "..."}` (with a tokenizer) or `{"input_ids": [...]}`, plus
`parameters` (max_tokens, stop, temperature, top_k, top_p, seed — see `sampling`). `/generate`
answers once, `{"model_name", "model_version", "text_output", "output_ids", "finish_reason"}`;
`/generate_stream` answers with server-sent events, one `data: {...}` per token
(`text_output` the token's text, `output_ids` its id, `index`), the last one carrying
`finish_reason`. Both go through `DataPlane.instrumented`, so admission, drain and the request
metrics are the inference path's; the scheduler adds its own refusals (503 + Retry-After at
capacity). A stream whose client hangs up cancels its generation, freeing its sequence slot
before the next decode step, and is recorded as 499. A failure after the stream started is
sent as a final `data: {"error": ...}` event (the status line is already gone).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .dataplane import MODEL_VERSION, DataPlane
from .errors import ErrorKind, ServeError, Wire, invalid
from .protocol_http import load_header, read_body
from .sampling import parse_parameters
from .scheduler import Generation, Scheduler, TokenEvent
from .tokenizer import prompt_ids

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
# A generate body is a prompt and a few parameters: anything larger is not one.
MAX_GENERATE_BYTES = 4 << 20
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def sse_event(document: dict[str, Any]) -> bytes:
    """One server-sent event carrying `document` as its JSON data."""
    return b"data: " + _DUMPS(document).encode() + b"\n\n"


class GenerateEndpoints:
    """The generate handlers; the scheduler is attached once the decoder is loaded."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane
        self.scheduler: Scheduler | None = None

    def _scheduler(self) -> Scheduler:
        if self.scheduler is None:
            raise ServeError(ErrorKind.UNAVAILABLE, f"model {self._dp.name!r} is still loading")
        return self.scheduler

    def _envelope(self, request: web.Request) -> dict[str, Any]:
        return {"model_name": request.match_info["name"], "model_version": MODEL_VERSION}

    async def _submit(self, request: web.Request) -> Generation:
        self._dp.check_model(request.match_info["name"], request.match_info.get("version", ""))
        scheduler = self._scheduler()
        document = load_header(await read_body(request, MAX_GENERATE_BYTES))
        if not isinstance(document, dict):
            raise invalid("the generate request must be a JSON object")
        vocab = scheduler.model.layout.vocab
        vocab = vocab if vocab > 0 else 1 << 31
        prompt = prompt_ids(
            document.get("text_input"),
            document.get("input_ids"),
            scheduler.tokenizer,
            vocab,
            max_tokens=scheduler.limits.max_context,
        )
        params = parse_parameters(
            document.get("parameters"),
            vocab=vocab,
            max_tokens_limit=scheduler.limits.max_context - len(prompt),
        )
        if params.stop_strings and scheduler.tokenizer is None:
            raise invalid("parameters.stop: stop strings need a tokenizer; send token ids")
        return scheduler.submit(prompt, params)

    def _announced(self, request: web.Request) -> int:
        announced = request.content_length
        return MAX_GENERATE_BYTES if announced is None else announced

    async def generate(self, request: web.Request) -> web.Response:
        async def work() -> web.Response:
            generation = await self._submit(request)
            try:
                events = [event async for event in _watched(generation, request)]
            finally:
                generation.cancel()
            document = self._envelope(request)
            document["text_output"] = "".join(event.text for event in events)
            document["output_ids"] = [event.token for event in events]
            document["finish_reason"] = events[-1].finish_reason if events else None
            return web.Response(body=_DUMPS(document).encode(), content_type="application/json")

        return await self._dp.instrumented(Wire.HTTP, self._announced(request), work)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        stream = web.StreamResponse(headers=SSE_HEADERS)

        async def work() -> web.StreamResponse:
            generation = await self._submit(request)
            try:
                await stream.prepare(request)
                await self._send(stream, request, generation)
            except (ConnectionError, RuntimeError) as exc:  # aiohttp: writing to a closed peer
                raise ServeError(
                    ErrorKind.DISCONNECTED, f"client disconnected mid-stream: {exc}"
                ) from None
            finally:
                generation.cancel()
            await stream.write_eof()
            return stream

        try:
            return await self._dp.instrumented(Wire.HTTP, self._announced(request), work)
        except ServeError:
            if stream.prepared:  # recorded already; the answer went out as events
                return stream
            raise

    async def _send(
        self, stream: web.StreamResponse, request: web.Request, generation: Generation
    ) -> None:
        envelope = self._envelope(request)
        try:
            async for event in _watched(generation, request):
                await stream.write(sse_event({**envelope, **_event_fields(event)}))
        except ServeError as exc:
            if exc.kind is not ErrorKind.DISCONNECTED:
                await stream.write(sse_event({"error": exc.message}))
            raise


def _event_fields(event: TokenEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "text_output": event.text,
        "output_ids": [event.token],
        "index": event.index,
    }
    if event.finish_reason is not None:
        fields["finish_reason"] = event.finish_reason
    return fields


async def _watched(generation: Generation, request: web.Request) -> AsyncIterator[TokenEvent]:
    """The generation's events, ending with DISCONNECTED as soon as the client is gone."""
    async for event in generation.events():
        transport = request.transport
        if transport is None or transport.is_closing():
            generation.cancel()
            raise ServeError(ErrorKind.DISCONNECTED, "client disconnected mid-generation")
        yield event


def add_generate_routes(router: web.UrlDispatcher, endpoints: GenerateEndpoints) -> None:
    """The generate routes, for both the versioned and unversioned model paths."""
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        router.add_post(f"{prefix}/generate", endpoints.generate)
        router.add_post(f"{prefix}/generate_stream", endpoints.generate_stream)
