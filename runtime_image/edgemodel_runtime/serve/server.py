"""Owns the server process lifecycle: listen, load, warm up, ready, and drain on SIGTERM.

Order matters for Kubernetes: the listeners come up first so liveness answers while a large
model downloads; readiness turns true only after the model is loaded *and* a warm-up inference
ran. On SIGTERM (or SIGINT) the server reports not ready, stops accepting connections and new
RPCs, waits for in-flight requests up to a grace period, and exits 0. The metrics port stays up
until the very end so a final scrape still sees the last requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from edgemodel_runtime.errors import EdgeModelRuntimeError, FailureKind, exit_code
from edgemodel_runtime.sources import (
    DEFAULT_MAX_BYTES,
    SourceError,
    fetch_to_file,
    local_path,
    normalize_sha256,
    sha256_file,
)

from .cpu import available_cpus, read_cpu_limit, threads_for
from .dataplane import DataPlane, DataPlaneConfig, default_max_inflight, read_memory_limit
from .errors import ServeError
from .generative import GenerationOptions, GenerativeService
from .metrics import ServeMetrics, metrics_app
from .model import ModelLoadError, OnnxModel, ProviderUnavailableError, provider_refusal
from .protocol_grpc import grpc_server
from .protocol_http import http_app

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """Everything `edgemodel serve` was asked to do, already validated by the CLI."""

    model_uri: str
    name: str
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    sha256: str | None = None
    revision: str = ""
    target: str = ""
    model_label: str = ""  # the metrics `model` label; the served name when empty
    max_batch_size: int = 32
    max_queue_delay_us: int = 0
    request_timeout_s: float = 30.0
    # None: derived from the model's largest valid request (DataPlane.start).
    max_request_bytes: int | None = None
    # In-flight cap and buffered-body budget; None: derived from the CPUs, batch and limit.
    max_inflight: int | None = None
    max_inflight_bytes: int | None = None
    max_model_bytes: int = DEFAULT_MAX_BYTES
    providers: str = "cpu"
    intra_op_threads: int = 1
    model_cache: Path | None = None
    slo_ms: float = 50.0
    drain_timeout_s: float = 20.0
    shutdown_delay_s: float = 0.0
    execution: str = "auto"
    # Exit (EXIT_PROVIDER) instead of serving when the session lacks the provider asked for,
    # leaving the reason in `termination_log` (the kubelet's terminationMessagePath).
    require_provider: bool = False
    termination_log: Path | None = None
    # --generative: serve the model as a decoder through the generate extension too.
    generation: GenerationOptions | None = None


# --require-provider: the session did not get the provider asked for.
EXIT_PROVIDER = exit_code(FailureKind.PROVIDER_UNAVAILABLE)


class StartupError(EdgeModelRuntimeError):
    """The server cannot start (bad model, port in use); the message is one line."""

    failure = FailureKind.UNAVAILABLE


def resolve_model(
    uri: str, sha256: str | None, cache: Path | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Path:
    """A local, sha256-verified model file for `uri` (a path, file://, http:// or https://).

    Local files are verified in place rather than copied; remote ones are fetched into the
    cache under their digest, and a cached copy whose digest still matches is reused.
    """
    expected = normalize_sha256(sha256) if sha256 else None
    path = local_path(uri)
    if path is not None:
        if not path.is_file():
            raise SourceError(f"{uri}: no such file")
        if expected is not None:
            actual = sha256_file(path)
            if actual != expected:
                raise SourceError(f"{uri}: sha256 mismatch: expected {expected}, got {actual}")
        return path
    cache = cache or Path(tempfile.mkdtemp(prefix="edgemodel-serve-"))
    key = expected or hashlib.sha256(uri.encode()).hexdigest()
    dest = cache / key / "model.onnx"
    if expected is not None and dest.is_file() and sha256_file(dest) == expected:
        return dest
    fetch_to_file(uri, dest, expected_sha256=expected, max_bytes=max_bytes)
    return dest


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _load(options: ServeOptions) -> OnnxModel:
    path = resolve_model(
        options.model_uri, options.sha256, options.model_cache, options.max_model_bytes
    )
    return OnnxModel(path, providers=options.providers, intra_op_threads=options.intra_op_threads)


@dataclass
class _Listeners:
    """The three ports' servers, built before the model exists so probes answer at once."""

    http_site: web.TCPSite
    http_runner: web.AppRunner
    grpc_srv: grpc.aio.Server
    metrics_runner: web.AppRunner


def _dataplane(options: ServeOptions, metrics: ServeMetrics, usable_cpus: int) -> DataPlane:
    return DataPlane(
        DataPlaneConfig(
            name=options.name,
            max_batch_size=options.max_batch_size,
            max_queue_delay_s=options.max_queue_delay_us / 1e6,
            request_timeout_s=options.request_timeout_s,
            execution=options.execution,
            max_inflight=options.max_inflight or 0,
            max_inflight_bytes=options.max_inflight_bytes or 0,
            max_request_bytes=options.max_request_bytes or 0,
            cpus=usable_cpus,
            memory_limit=read_memory_limit(),
        ),
        metrics,
    )


async def _listen(
    options: ServeOptions,
    dataplane: DataPlane,
    metrics: ServeMetrics,
    usable_cpus: int,
    generative: GenerativeService | None = None,
) -> _Listeners | None:
    """Bind and start the metrics, HTTP and gRPC ports; None (cleaned up) if one cannot bind."""
    # access_log=None: a log line per inference costs more than the inference of a small model.
    metrics_runner = web.AppRunner(metrics_app(metrics), access_log=None, shutdown_timeout=1.0)
    http_runner = web.AppRunner(
        http_app(dataplane, generative.routes if generative else None),
        access_log=None,
        shutdown_timeout=1.0,
    )
    # The transport's RPC cap must exist before the model does: the largest the cap can be.
    transport_cap = options.max_inflight or default_max_inflight(
        usable_cpus, max(1, options.max_batch_size)
    )
    grpc_srv = grpc_server(dataplane, options.max_request_bytes, transport_cap)
    await metrics_runner.setup()
    await http_runner.setup()
    http_site = web.TCPSite(http_runner, options.host, options.http_port, reuse_port=False)
    try:
        await web.TCPSite(metrics_runner, options.host, options.metrics_port).start()
        await http_site.start()
        try:
            grpc_srv.add_insecure_port(_grpc_address(options.host, options.grpc_port))
        except RuntimeError as exc:
            raise OSError(f"cannot bind gRPC port {options.grpc_port}: {exc}") from None
        await grpc_srv.start()
    except OSError as exc:
        log.error("cannot listen: host=%s error=%s", options.host, exc)
        await http_runner.cleanup()
        await metrics_runner.cleanup()
        await dataplane.close()
        return None
    log.info(
        "listening: host=%s http=%d grpc=%d metrics=%d model=%s revision=%s target=%s",
        options.host,
        options.http_port,
        options.grpc_port,
        options.metrics_port,
        options.name,
        options.revision,
        options.target,
    )
    return _Listeners(http_site, http_runner, grpc_srv, metrics_runner)


async def _become_ready(
    options: ServeOptions,
    dataplane: DataPlane,
    metrics: ServeMetrics,
    model: OnnxModel,
    generative: GenerativeService | None = None,
) -> None:
    """Check the providers the session got, warm the model up and turn ready."""
    metrics.model_loaded(model.provider, options.providers)
    refusal = provider_refusal(options.providers, model.providers)
    if refusal is not None and options.require_provider:
        raise ProviderUnavailableError(refusal)
    if refusal is not None:
        log.warning(
            "provider fallback: requested=%s serving on=%s",
            options.providers,
            model.provider,
        )
    if generative is None:
        await dataplane.start(model)
    else:  # warm-up runs a real prefill and decode steps; then the decode loop starts
        decoder = generative.decoder(model)
        await dataplane.start(decoder)
        generative.attach(decoder)
    log.info(
        "ready: model=%s providers=%s inputs=%s outputs=%s batching=%s",
        options.name,
        ",".join(model.providers),
        [spec.metadata() for spec in model.inputs],
        [spec.metadata() for spec in model.outputs],
        dataplane.batching,
    )


async def _run(
    options: ServeOptions,
    dataplane: DataPlane,
    metrics: ServeMetrics,
    stop: asyncio.Event,
    generative: GenerativeService | None = None,
) -> int:
    """Load (unless stopped first), become ready and serve until `stop`; the exit code."""
    loop = asyncio.get_running_loop()
    load = loop.run_in_executor(dataplane.executor, _load, options)
    stopped: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
    try:
        waiting: list[asyncio.Future[Any]] = [load, stopped]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            await _become_ready(options, dataplane, metrics, load.result(), generative)
            await stop.wait()
    except (SourceError, ModelLoadError) as exc:
        log.error("cannot load model: uri=%s error=%s", options.model_uri, exc)
        return exc.exit_code
    except ProviderUnavailableError as exc:
        log.error("required provider unavailable: %s", exc.message)
        _write_termination_log(options.termination_log, exc.message)
        return EXIT_PROVIDER
    except ServeError as exc:  # the warm-up inference itself failed
        log.error("model warm-up failed: uri=%s error=%s", options.model_uri, exc.message)
        return 2
    finally:
        stopped.cancel()
    return 0


async def serve(options: ServeOptions, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set); returns the process exit code."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    metrics = ServeMetrics(
        model=options.model_label or options.name,
        revision=options.revision,
        target=options.target,
        slo_seconds=options.slo_ms / 1000.0,
        max_batch_size=max(1, options.max_batch_size),
    )
    usable_cpus = threads_for(read_cpu_limit(), available_cpus())  # the container's CPU limit
    dataplane = _dataplane(options, metrics, usable_cpus)
    generative = None
    if options.generation is not None:
        labels = (options.model_label or options.name, options.revision, options.target)
        generative = GenerativeService(options.generation, dataplane, metrics, labels)
    listeners = await _listen(options, dataplane, metrics, usable_cpus, generative)
    if listeners is None:
        return 1
    try:
        return await _run(options, dataplane, metrics, stop, generative)
    finally:
        await _shutdown(
            options=options, dataplane=dataplane, listeners=listeners, generative=generative
        )


def _write_termination_log(path: Path | None, message: str) -> None:
    if path is None:
        return
    try:
        path.write_text(message)
    except OSError as exc:  # the log line above still carries the message
        log.warning("cannot write the termination log: path=%s error=%s", path, exc)


async def _shutdown(
    *,
    options: ServeOptions,
    dataplane: DataPlane,
    listeners: _Listeners,
    generative: GenerativeService | None = None,
) -> None:
    if options.shutdown_delay_s > 0:
        # Endpoints (EndpointSlices, a client's pool) learn of the shutdown a moment after the
        # signal: keep answering, reported not ready, so no request lands on a closed socket.
        dataplane.announce_shutdown()
        log.info("shutting down: not ready, still serving for %.1fs", options.shutdown_delay_s)
        await asyncio.sleep(options.shutdown_delay_s)
    log.info("draining: inflight_grace_s=%.1f", options.drain_timeout_s)
    dataplane.stop_accepting()
    # gRPC: refuse new RPCs now, let running ones finish within the grace period.
    grpc_stopped = asyncio.ensure_future(listeners.grpc_srv.stop(options.drain_timeout_s))
    # Closes the listening socket; open connections finish their work.
    await listeners.http_site.stop()
    drained = await dataplane.drain(options.drain_timeout_s)
    if not drained:
        log.warning("drain grace period ended with requests still in flight")
    await grpc_stopped
    await listeners.http_runner.cleanup()
    if generative is not None:  # after the drain: the decode loop served the last streams
        await generative.close()
    await dataplane.close()
    await listeners.metrics_runner.cleanup()
    log.info("stopped: drained=%s", drained)
