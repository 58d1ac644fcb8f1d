"""The protocol floor: a v2 server on the same Python stacks as `edgemodel serve` that does no work.

It answers every ModelInfer (gRPC, grpc.aio) and every infer POST (HTTP, aiohttp) with a response
computed once at start-up (the model's real output for the benchmark row), and reports ready.
Nothing is parsed, validated, executed or counted, so what the client measures against it is
the cost of the client, the transport and the Python server stacks alone: the lowest latency
and the highest throughput any server written on them could reach on this machine.

Usage (by bench/serve/run.py): echo_server.py MODEL_NAME HTTP_PORT GRPC_PORT OUTPUT.npy
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import grpc
import numpy as np
from aiohttp import web
from tritonclient.grpc import service_pb2


def responses(model: str, output: np.ndarray) -> tuple[bytes, bytes, int]:
    """(gRPC response bytes, HTTP body, HTTP JSON header length) for `output`."""
    message = service_pb2.ModelInferResponse(model_name=model, model_version="1")
    tensor = message.outputs.add()
    tensor.name = "probabilities"
    tensor.datatype = "FP32"
    tensor.shape.extend(output.shape)
    message.raw_output_contents.append(output.tobytes())
    raw = output.tobytes()
    header = json.dumps(
        {
            "model_name": model,
            "model_version": "1",
            "outputs": [
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": list(output.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
        },
        separators=(",", ":"),
    ).encode()
    return message.SerializeToString(), header + raw, len(header)


async def main(model: str, http_port: int, grpc_port: int, output: np.ndarray) -> None:
    grpc_body, http_body, header_length = responses(model, output)

    async def model_infer(_request: bytes, _context: Any) -> bytes:
        return grpc_body

    def identity(data: bytes) -> bytes:
        return data

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService",
                {
                    "ModelInfer": grpc.unary_unary_rpc_method_handler(
                        model_infer, request_deserializer=identity, response_serializer=identity
                    )
                },
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        response = web.Response(body=http_body, content_type="application/octet-stream")
        response.headers["Inference-Header-Content-Length"] = str(header_length)
        return response

    async def ready(_request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_post(f"/v2/models/{model}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)
    await runner.cleanup()


if __name__ == "__main__":
    name, http, grpc_port, path = sys.argv[1:5]
    asyncio.run(main(name, int(http), int(grpc_port), np.load(path)))
