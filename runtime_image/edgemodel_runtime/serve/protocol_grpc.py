"""Owns the KServe v2 gRPC protocol (grpc.aio) using Triton's generated service stubs.

`tritonclient.grpc.service_pb2(_grpc)` and `model_config_pb2` are the Triton/KServe v2 gRPC
protocol itself, so serving them makes `tritonclient.grpc` (sync, streaming and asyncio) work
unchanged. Inputs arrive as `raw_input_contents` (what tritonclient sends) or typed `contents`;
outputs always go back as `raw_output_contents`, which every client reads. Failures set a gRPC
status (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, ...) with a message naming the problem.

Admission is the dataplane's, shared with HTTP (`DataPlane.admit`): past the in-flight cap an
RPC gets RESOURCE_EXHAUSTED at once. gRPC itself buffers a message before the handler runs, so
the server also caps concurrent RPCs at the transport (the in-flight cap plus headroom for the
health and metadata RPCs) and refuses messages over `max_request_bytes` (a fixed ceiling,
since the model-derived limit is only known after loading; the handler applies that one).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from .dataplane import (
    FALLBACK_REQUEST_BYTES,
    DataPlane,
    InferRequest,
    InferResponse,
    InputTensor,
    check_timeout_us,
)
from .errors import ServeError, Wire, invalid
from .tensors import check_datatype, check_shape, datatype_of, to_raw

log = logging.getLogger(__name__)

# The typed `InferTensorContents` field each datatype travels in (FP16 has none: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parse_infer_request(request: Any) -> InferRequest:
    """A `ModelInferRequest` as a dataplane request (tensors still in wire form)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: list[InputTensor] = []
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        datatype = check_datatype(name, tensor.datatype)
        shape = check_shape(name, list(tensor.shape))
        if raw:
            inputs.append(InputTensor(name, datatype, shape, raw=raw[index]))
            continue
        field = CONTENTS_FIELD.get(datatype)
        if field is None:
            raise invalid(f"input {name!r}: {datatype} data must be sent in raw_input_contents")
        inputs.append(
            InputTensor(name, datatype, shape, values=list(getattr(tensor.contents, field)))
        )
    timeout_s = None
    if "timeout" in request.parameters:
        parameter = request.parameters["timeout"]
        kind = parameter.WhichOneof("parameter_choice")
        if kind not in ("int64_param", "uint64_param"):
            raise invalid(f"'timeout' must be an int64_param (microseconds), got {kind}")
        timeout_s = check_timeout_us(getattr(parameter, kind))
    return InferRequest(
        request.model_name,
        request.model_version,
        inputs,
        [output.name for output in request.outputs] or None,
        request.id,
        timeout_s=timeout_s,
    )


def encode_infer_response(response: InferResponse) -> Any:
    message = service_pb2.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.request_id,
    )
    for spec, array in response.outputs:
        output = message.outputs.add()
        output.name = spec.name
        output.datatype = datatype_of(array)
        output.shape.extend(array.shape)
        message.raw_output_contents.append(to_raw(array))
    return message


class GrpcEndpoints(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """grpc.aio handlers for the v2 service over one `DataPlane`."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    @staticmethod
    def _fail(context: grpc.aio.ServicerContext, error: ServeError) -> None:
        # set_code/set_details rather than abort(): no exception unwinding on the error path.
        context.set_code(grpc.StatusCode[error.kind.grpc_code])
        context.set_details(error.message)

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self._dp.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ModelReadyResponse(
            ready=self._dp.model_ready(request.name, request.version)
        )

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(**self._dp.server_metadata())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            metadata = self._dp.model_metadata(request.name, request.version)
        except ServeError as exc:
            self._fail(context, exc)
            return service_pb2.ModelMetadataResponse()
        return json_format.ParseDict(metadata, service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            config = self._dp.model_config(request.name, request.version)
        except ServeError as exc:
            self._fail(context, exc)
            return service_pb2.ModelConfigResponse()
        return service_pb2.ModelConfigResponse(
            config=json_format.ParseDict(config, model_config_pb2.ModelConfig())
        )

    async def _infer(self, request: Any) -> tuple[Any, ServeError | None]:
        """One instrumented inference; returns (response, None) or (None, error)."""
        size = sum(len(raw) for raw in request.raw_input_contents)

        async def work() -> Any:
            return encode_infer_response(await self._dp.infer(parse_infer_request(request)))

        try:
            return await self._dp.instrumented(Wire.GRPC, size, work), None
        except ServeError as exc:
            return None, exc

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        message, error = await self._infer(request)
        if error is not None:
            self._fail(context, error)
            return service_pb2.ModelInferResponse()
        return message

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        # Errors go in-band (error_message) so one bad request does not end the stream.
        async for request in request_iterator:
            message, error = await self._infer(request)
            if error is not None:
                yield service_pb2.ModelStreamInferResponse(error_message=error.message)
            else:
                yield service_pb2.ModelStreamInferResponse(infer_response=message)


GRPC_RPC_HEADROOM = 16  # transport slots beyond the in-flight cap: health, metadata, refusals


def grpc_server(
    dataplane: DataPlane, max_request_bytes: int | None, max_concurrent_rpcs: int
) -> grpc.aio.Server:
    """A grpc.aio server with the v2 service; the caller binds ports and starts it."""
    server = grpc.aio.server(
        # Past this, gRPC refuses new RPCs itself (RESOURCE_EXHAUSTED) before buffering them.
        maximum_concurrent_rpcs=max_concurrent_rpcs + GRPC_RPC_HEADROOM,
        options=[
            # Over-limit messages are refused by gRPC itself with RESOURCE_EXHAUSTED.
            ("grpc.max_receive_message_length", max_request_bytes or FALLBACK_REQUEST_BYTES),
            ("grpc.max_send_message_length", -1),
            # Never share a port with another process: a second server must fail to bind.
            ("grpc.so_reuseport", 0),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(GrpcEndpoints(dataplane), server)
    return server
