"""Owns the KServe v2 HTTP/REST protocol (aiohttp), including Triton's binary tensor extension.

Requests are parsed into dataplane `InferRequest`s with tensors left in wire form; responses
are encoded with raw binary outputs when the client asked for them (`binary_data_output` or a
per-output `binary_data`), which is what `tritonclient.http` does by default. Every failure is
a 4xx/5xx with a JSON body `{"error": "..."}`: handlers raise `ServeError` and the app's error
middleware (`edgemodel_runtime.http_errors`) maps it to HTTP once; no input can make a handler
raise past it. Inference runs through `DataPlane.instrumented`, the path gRPC uses too.

The infer handler is admitted by the dataplane before it reads a byte of the body (see
`DataPlane.admit`): refusals are 413, or 503 with Retry-After. It reads the body itself, so
the size limit can follow the model (known only after loading) and a client that hangs up
mid-body is recorded as 499 (client closed request), never as a server error. JSON headers
larger than INLINE_DECODE_BYTES are parsed and decoded in the dataplane's decoder process, one
at a time, so a flood of large JSON bodies neither stalls the event loop (health probes keep
answering) nor holds more than one body's worth of decoded Python objects at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edgemodel_runtime.http_errors import HttpFailure, error_middleware

from .dataplane import (
    RETRY_AFTER_S,
    DataPlane,
    InferRequest,
    InferResponse,
    InputTensor,
    check_timeout_us,
)
from .errors import ErrorKind, ServeError, Wire, invalid, not_found
from .tensors import (
    check_datatype,
    check_shape,
    datatype_of,
    decode_json_document,
    to_list,
    to_raw,
)

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
# Bodies up to this size parse on the loop (the hot path: ~µs); larger ones on the decoder.
INLINE_DECODE_BYTES = 256 << 10
# The app's own ceiling; the infer handler enforces the model-derived limit below it.
APP_MAX_BYTES = 1 << 30


def http_failure(exc: Exception) -> HttpFailure | None:
    """The HTTP answer to a `ServeError` (503s carry Retry-After); None for anything else."""
    if not isinstance(exc, ServeError):
        return None
    status = exc.kind.http_status
    retry = status == ErrorKind.OVERLOADED.http_status
    return HttpFailure(status, exc.message, {"Retry-After": str(RETRY_AFTER_S)} if retry else {})


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=_DUMPS(document).encode(), content_type="application/json"
    )


def split_body(body: bytes | bytearray, header_length: str | None) -> tuple[memoryview, memoryview]:
    """(JSON header, binary tensor data) of an infer body, per Inference-Header-Content-Length."""
    view = memoryview(body)
    if header_length is None:
        return view, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise invalid(f"{HEADER_LENGTH} {header_length!r} is not an integer") from None
    if length < 0 or length > len(body):
        raise invalid(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
    return view[:length], view[length:]


def load_header(header: bytes | bytearray | memoryview) -> Any:
    try:
        return json.loads(bytes(header) if isinstance(header, memoryview) else header)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"malformed JSON inference header: {exc}") from None


def parse_infer_request(
    model_name: str, model_version: str, body: bytes | bytearray, header_length: str | None
) -> tuple[InferRequest, dict[str, bool], bool]:
    """Parse an infer body: (request, per-output binary flag, default binary flag)."""
    header, binary = split_body(body, header_length)
    return parse_infer_document(model_name, model_version, load_header(header), binary)


def parse_infer_document(
    model_name: str, model_version: str, document: Any, binary: memoryview
) -> tuple[InferRequest, dict[str, bool], bool]:
    """An already-parsed JSON header (and the binary part) as a request and output flags."""
    if not isinstance(document, dict):
        raise invalid("the inference header must be a JSON object")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise invalid("'id' must be a string")
    binary_default, timeout_s = _parse_parameters(document.get("parameters", {}))
    inputs = _parse_inputs(document.get("inputs"), binary)
    output_names, binary_flags = _parse_outputs(document.get("outputs"), binary_default)
    request = InferRequest(
        model_name, model_version, inputs, output_names, request_id, timeout_s=timeout_s
    )
    return request, binary_flags, binary_default


def _parse_parameters(parameters: Any) -> tuple[bool, float | None]:
    """The request-level parameters: (binary_data_output default, timeout in seconds)."""
    if not isinstance(parameters, dict):
        raise invalid("'parameters' must be an object")
    if "classification" in parameters:
        raise invalid("the classification extension is not supported")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise invalid("'binary_data_output' must be a boolean")
    timeout_s = None
    timeout_us = parameters.get("timeout")
    if timeout_us is not None:
        timeout_s = check_timeout_us(timeout_us)
    return binary_default, timeout_s


def _parse_inputs(raw_inputs: Any, binary: memoryview) -> list[InputTensor]:
    """The input tensors, binary ones sliced in order from `binary`, which they must fill."""
    if not isinstance(raw_inputs, list):
        raise invalid("'inputs' must be a list of input tensors")
    inputs: list[InputTensor] = []
    offset = 0
    for item in raw_inputs:
        tensor = _parse_input(item, binary, offset)
        if tensor.raw is not None:
            offset += len(tensor.raw)
        inputs.append(tensor)
    if offset != len(binary):
        raise invalid(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input's "
            "binary_data_size"
        )
    return inputs


def _parse_input(item: Any, binary: memoryview, offset: int) -> InputTensor:
    """One input tensor; a binary one takes its bytes from `binary` at `offset`."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise invalid("each input must be an object with a string 'name'")
    name: str = item["name"]
    datatype = check_datatype(name, item.get("datatype"))
    shape = check_shape(name, item.get("shape"))
    params = item.get("parameters", {})
    if not isinstance(params, dict):
        raise invalid(f"input {name!r}: 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise invalid(f"input {name!r}: neither 'data' nor binary_data_size given")
        return InputTensor(name, datatype, shape, values=item["data"])
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid(f"input {name!r}: 'binary_data_size' must be a non-negative integer")
    if offset + size > len(binary):
        raise invalid(
            f"input {name!r}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} binary bytes left)"
        )
    return InputTensor(name, datatype, shape, raw=binary[offset : offset + size])


def _parse_outputs(
    raw_outputs: Any, binary_default: bool
) -> tuple[list[str] | None, dict[str, bool]]:
    """The requested outputs (None: all) and each one's binary_data flag."""
    binary_flags: dict[str, bool] = {}
    if raw_outputs is None:
        return None, binary_flags
    if not isinstance(raw_outputs, list):
        raise invalid("'outputs' must be a list")
    output_names: list[str] = []
    for item in raw_outputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid("each requested output must be an object with a string 'name'")
        params = item.get("parameters", {})
        if not isinstance(params, dict):
            raise invalid(f"output {item['name']!r}: 'parameters' must be an object")
        if "classification" in params:
            raise invalid("the classification extension is not supported")
        flag = params.get("binary_data", binary_default)
        if not isinstance(flag, bool):
            raise invalid(f"output {item['name']!r}: 'binary_data' must be a boolean")
        output_names.append(item["name"])
        binary_flags[item["name"]] = flag
    return output_names, binary_flags


def encode_infer_response(
    response: InferResponse, binary_flags: dict[str, bool], binary_default: bool
) -> web.Response:
    outputs: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for spec, array in response.outputs:
        entry: dict[str, Any] = {
            "name": spec.name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if binary_flags.get(spec.name, binary_default):
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = to_list(array)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.request_id:
        document["id"] = response.request_id
    header = _DUMPS(document).encode()
    if not buffers:
        return web.Response(body=header, content_type="application/json")
    result = web.Response(
        body=b"".join([header, *buffers]), content_type="application/octet-stream"
    )
    result.headers[HEADER_LENGTH] = str(len(header))
    return result


async def read_body(request: web.Request, limit: int) -> bytearray:
    """The whole body, at most `limit` bytes (TOO_LARGE past it, DISCONNECTED if cut short).

    Read into one preallocated buffer when the length is announced, so the peak is the body
    plus one chunk, never twice the body.
    """
    length = request.content_length
    buffer = bytearray(length) if length is not None else bytearray()
    filled = 0
    try:
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            end = filled + len(chunk)
            if end > limit or (length is not None and end > length):
                raise ServeError(
                    ErrorKind.TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
                )
            buffer[filled:end] = chunk
            filled = end
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise ServeError(
            ErrorKind.DISCONNECTED, f"client disconnected mid-body: {type(exc).__name__}"
        ) from None
    except ServeError:
        raise
    except Exception as exc:  # aiohttp's payload errors (ClientPayloadError, ...) on a cut
        raise ServeError(
            ErrorKind.DISCONNECTED, f"request body cut short: {type(exc).__name__}"
        ) from None
    if length is not None and filled != length:
        raise ServeError(
            ErrorKind.DISCONNECTED,
            f"client disconnected mid-body after {filled} of {length} bytes",
        )
    return buffer


class HttpEndpoints:
    """aiohttp handlers for the v2 REST endpoints over one `DataPlane`."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def live(self, _request: web.Request) -> web.Response:
        return _json({"live": True})

    async def ready(self, _request: web.Request) -> web.Response:
        ready = self._dp.ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, _request: web.Request) -> web.Response:
        return _json(self._dp.server_metadata())

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        self._dp.check_model(name, version)
        ready = self._dp.ready
        return _json({"name": name, "ready": ready}, 200 if ready else 503)

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        return _json(self._dp.model_metadata(name, version))

    async def model_config(self, request: web.Request) -> web.Response:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        return _json(self._dp.model_config(name, version))

    async def not_found(self, request: web.Request) -> web.Response:
        raise not_found(f"no such endpoint: {request.method} {request.path}")

    async def _parse(
        self, request: web.Request, body: bytearray
    ) -> tuple[InferRequest, dict[str, bool], bool]:
        header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
        text: bytes | bytearray
        if len(header) > INLINE_DECODE_BYTES:
            # Off the process: json.loads holds the GIL throughout (~25 ms per MB), which on
            # a thread would stall the loop and its health probes for the whole decode.
            text = body if len(header) == len(body) else bytes(header)
            del header, body  # the binary view keeps what it needs; nothing else stays
            document, error = await self._dp.decode(decode_json_document, text)
            if error is not None:
                raise invalid(error)
        else:
            document = load_header(header)
        return parse_infer_document(
            request.match_info["name"], request.match_info.get("version", ""), document, binary
        )

    async def infer(self, request: web.Request) -> web.Response:
        limit = self._dp.request_limit
        announced = request.content_length

        async def work() -> web.Response:
            infer_request, flags, default = await self._parse(
                request, await read_body(request, limit)
            )
            return encode_infer_response(await self._dp.infer(infer_request), flags, default)

        return await self._dp.instrumented(
            Wire.HTTP, limit if announced is None else announced, work
        )


def http_app(
    dataplane: DataPlane, extra_routes: Callable[[web.UrlDispatcher], None] | None = None
) -> web.Application:
    """The inference port's app (no /metrics here: that lives on the metrics port).

    `extra_routes` adds routes before the catch-all (the generate extension's, for example).
    """
    endpoints = HttpEndpoints(dataplane)
    # ServeErrors become their HTTP answer here, once, for every handler.
    app = web.Application(
        client_max_size=APP_MAX_BYTES, middlewares=[error_middleware(http_failure)]
    )
    router = app.router
    prefixes = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
    # aiohttp tries resources in registration order: the hot route goes first.
    for prefix in prefixes:
        router.add_post(f"{prefix}/infer", endpoints.infer)
    router.add_get("/v2/health/live", endpoints.live)
    router.add_get("/v2/health/ready", endpoints.ready)
    router.add_get("/v2", endpoints.server_metadata)
    for prefix in prefixes:
        router.add_get(prefix, endpoints.model_metadata)
        router.add_get(f"{prefix}/ready", endpoints.model_ready)
        router.add_get(f"{prefix}/config", endpoints.model_config)
    if extra_routes is not None:
        extra_routes(router)
    router.add_route("*", "/{tail:.*}", endpoints.not_found)
    return app
