"""Benchmark `edgemodel serve` against raw onnxruntime and a real Triton Inference Server.

One run, one model (the digits MLP fixture, one 64-float row per request), one client
(tritonclient: the sync client at concurrency 1, its asyncio client with N tasks above that),
concurrency 1, 8 and 32. Rows:

  onnxruntime    InferenceSession.run in this process (N threads): the floor, no protocol
  edgemodel      `edgemodel serve` over HTTP and gRPC, with and without dynamic batching
  triton         the `tritonserver` binary from the nvidia-pytriton wheel, Python backend
                 calling onnxruntime (model.py in triton_repo.py), with and without its
                 dynamic batcher
  echo floor     echo_server.py: grpc.aio + aiohttp answering a canned response, no work at
                 all. The client, the transport and these Python server stacks cost this much
                 before any server does anything: no server built on them can beat this row.

Client and servers share this machine's cores, so throughput is partly the client's; the
"server CPU" column (user + system time of the server's process tree, Triton's Python backend
stubs included, per answered request) is the server's own cost, whatever the client does.

Every server gets one onnxruntime intra-op thread so the comparison is serving overhead.
Prints a side-by-side table and the three targets from the issue. Usage:

    .venv/bin/python bench/serve/run.py [--duration 3] [--concurrency 1,8,32] [--skip-triton]

`--cap-compare` instead measures what admission control costs below saturation: `edgemodel
serve` with its default in-flight cap ("cap") against the same server with a cap so large it
never triggers ("no cap"), batching off and on, at concurrency 1 and 8, cells interleaved
round by round; `--baseline-src DIR` adds a third column, the code in DIR (e.g. a
`git archive HEAD runtime_image` export) before admission control existed:

    .venv/bin/python bench/serve/run.py --cap-compare --rounds 6 [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio

from edgemodel_sandbox.cluster import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
import triton_repo

MODEL_NAME = "digits"


@dataclass
class Row:
    system: str
    protocol: str
    batching: str
    concurrency: int
    p50_ms: float
    p99_ms: float
    throughput: float
    errors: int
    server_cpu_us: float | None = None


def summarize(
    system: str,
    protocol: str,
    batching: str,
    concurrency: int,
    latencies: list[float],
    elapsed: float,
    errors: int,
    server_cpu_s: float | None = None,
) -> Row:
    lat = np.asarray(latencies) * 1000.0
    return Row(
        system,
        protocol,
        batching,
        concurrency,
        float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        len(lat) / elapsed,
        errors,
        server_cpu_s / len(lat) * 1e6 if server_cpu_s is not None and len(lat) else None,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its descendants (Triton's backend stubs)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(times.get(member, 0.0) for member in tree)


def run_threads(
    call: Callable[[], Any], concurrency: int, duration: float
) -> tuple[list[float], float, int]:
    """Call `call` from `concurrency` threads for `duration` s (after a short warm-up).

    Concurrency 1 runs in the calling thread: tritonclient.http's gevent client must stay on
    the thread that created it.
    """
    if concurrency == 1:
        for _ in range(50):
            call()
        single: list[float] = []
        failures = 0
        begin = time.perf_counter()
        stop = begin + duration
        while (start := time.perf_counter()) < stop:
            try:
                call()
            except Exception:
                failures += 1
                continue
            single.append(time.perf_counter() - start)
        return single, time.perf_counter() - begin, failures
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = 0.0
    barrier = threading.Barrier(concurrency + 1)

    def worker() -> None:
        nonlocal errors
        mine: list[float] = []
        mine_errors = 0
        for _ in range(50):  # warm-up, not measured
            call()
        barrier.wait()
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                break
            try:
                call()
            except Exception:
                mine_errors += 1
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            errors += mine_errors

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    stop_at = time.perf_counter() + 1e9
    barrier.wait()
    begin = time.perf_counter()
    stop_at = begin + duration
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - begin, errors


async def run_tasks(
    call: Callable[[], Any], concurrency: int, duration: float
) -> tuple[list[float], float, int]:
    """Await `call()` from `concurrency` tasks for `duration` s (after a short warm-up)."""
    for _ in range(20):
        await asyncio.gather(*(call() for _ in range(concurrency)))
    latencies: list[float] = []
    errors = 0
    begin = time.perf_counter()
    stop_at = begin + duration

    async def worker() -> None:
        nonlocal errors
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            try:
                await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - begin, errors


def bench_onnxruntime(
    model: Path, x: np.ndarray, concurrencies: list[int], duration: float
) -> list[Row]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    rows = []
    for concurrency in concurrencies:
        lat, elapsed, errors = run_threads(
            lambda: session.run(None, {"input": x}), concurrency, duration
        )
        rows.append(summarize("onnxruntime", "in-process", "-", concurrency, lat, elapsed, errors))
    return rows


@dataclass(frozen=True)
class Target:
    """One running server configuration under test."""

    system: str
    batching: str
    http_port: int
    grpc_port: int
    pid: int


def check_correct(target: Target, x: np.ndarray, expected: np.ndarray) -> None:
    """A fast wrong answer is not a result: both protocols must match onnxruntime first."""
    http_sync = httpclient.InferenceServerClient(f"127.0.0.1:{target.http_port}")
    grpc_sync = grpcclient.InferenceServerClient(f"127.0.0.1:{target.grpc_port}")
    h_in = httpclient.InferInput("input", list(x.shape), "FP32")
    h_in.set_data_from_numpy(x)
    g_in = grpcclient.InferInput("input", list(x.shape), "FP32")
    g_in.set_data_from_numpy(x)
    for result in (http_sync.infer(MODEL_NAME, [h_in]), grpc_sync.infer(MODEL_NAME, [g_in])):
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
    http_sync.close()
    grpc_sync.close()


def measure(
    target: Target, protocol: str, concurrency: int, duration: float, x: np.ndarray
) -> tuple[list[float], float, int]:
    """One cell: the sync client at concurrency 1, the asyncio client with N tasks above."""
    url = f"127.0.0.1:{target.http_port if protocol == 'HTTP' else target.grpc_port}"
    if concurrency == 1:
        sync: Any = httpclient if protocol == "HTTP" else grpcclient
        client = sync.InferenceServerClient(url)
        tensor = sync.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        try:
            return run_threads(lambda: client.infer(MODEL_NAME, [tensor]), 1, duration)
        finally:
            client.close()

    async def run() -> tuple[list[float], float, int]:
        aio: Any = httpclient_aio if protocol == "HTTP" else grpcclient_aio
        kwargs = {"conn_limit": concurrency} if protocol == "HTTP" else {}
        client = aio.InferenceServerClient(url, **kwargs)
        tensor = aio.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        try:
            return await run_tasks(
                lambda: client.infer(MODEL_NAME, [tensor]), concurrency, duration
            )
        finally:
            await client.close()

    return asyncio.run(run())


def wait_ready(http_port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


@contextlib.contextmanager
def process(
    command: list[str], http_port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(http_port, proc)
            yield proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def edgemodel_command(
    model: Path, ports: tuple[int, int, int], max_batch_size: int, *extra: str
) -> list[str]:
    http, grpc, metrics = ports
    return [
        sys.executable,
        "-m",
        "edgemodel_cli.main",
        "serve",
        str(model),
        "--name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--max-batch-size",
        str(max_batch_size),
        "--intra-op-threads",
        "1",
        "--log-level",
        "WARNING",
        *extra,
    ]


def print_table(rows: list[Row]) -> None:
    header = (
        "system",
        "protocol",
        "batching",
        "conc",
        "p50 ms",
        "p99 ms",
        "req/s",
        "server CPU us/req",
        "errors",
    )
    lines = [header] + [
        (
            r.system,
            r.protocol,
            r.batching,
            str(r.concurrency),
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.throughput:.0f}",
            f"{r.server_cpu_us:.0f}" if r.server_cpu_us is not None else "-",
            str(r.errors),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print(
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
            + " |"
        )
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def find(
    rows: list[Row], system: str, protocol: str, batching: str, concurrency: int
) -> Row | None:
    for row in rows:
        if (row.system, row.protocol, row.batching, row.concurrency) == (
            system,
            protocol,
            batching,
            concurrency,
        ):
            return row
    return None


def print_targets(rows: list[Row]) -> None:
    print()
    floor = find(rows, "onnxruntime", "in-process", "-", 1)
    ours = find(rows, "edgemodel", "gRPC", "off", 1)
    if floor and ours:
        added = ours.p50_ms - floor.p50_ms
        verdict = "met" if added <= 0.3 else "NOT met"
        print(
            f"target 1: gRPC c=1 p50 over raw onnxruntime: +{added:.3f} ms "
            f"(target <= 0.3 ms): {verdict}"
        )
        echo = find(rows, "echo floor", "gRPC", "-", 1)
        if echo:
            print(
                f"          the echo floor (no work at all) is already "
                f"+{echo.p50_ms - floor.p50_ms:.3f} ms; edgemodel adds "
                f"{ours.p50_ms - echo.p50_ms:+.3f} ms to it"
            )
    for protocol in ("HTTP", "gRPC"):
        for batching in ("off", "on"):
            ours8 = find(rows, "edgemodel", protocol, batching, 8)
            triton8 = find(rows, "triton", protocol, batching, 8)
            if ours8 and triton8 and triton8.throughput > 0:
                ratio = ours8.throughput / triton8.throughput
                verdict = "met" if ratio >= 1.5 else "NOT met"
                print(
                    f"target 2: c=8 {protocol} batching {batching}: edgemodel/triton throughput "
                    f"{ratio:.2f}x (target >= 1.5x): {verdict}"
                )
    for protocol in ("HTTP", "gRPC"):
        on = find(rows, "edgemodel", protocol, "on", 32)
        off = find(rows, "edgemodel", protocol, "off", 32)
        if on and off and off.throughput > 0:
            ratio = on.throughput / off.throughput
            verdict = "met" if ratio >= 2.0 else "NOT met"
            print(
                f"target 3: c=32 {protocol}: dynamic batching / no batching throughput "
                f"{ratio:.2f}x (target >= 2x): {verdict}"
            )


UNCAPPED = str(1 << 30)  # an in-flight cap no benchmark reaches


# (system, protocol, batching, concurrency) -> (latencies, seconds, errors, server CPU seconds)
Cells = dict[tuple[str, str, str, int], tuple[list[float], float, int, float]]


def cap_compare(
    fixture_model: Path,
    x: np.ndarray,
    expected: np.ndarray,
    work: Path,
    rounds: int,
    duration: float,
    concurrencies: list[int],
    baseline_src: Path | None,
) -> list[Row]:
    """edgemodel with the default cap vs no effective cap (and the baseline code), interleaved."""
    variants: list[tuple[str, tuple[str, ...], dict[str, str] | None]] = [
        ("cap", (), None),
        ("no cap", ("--max-inflight", UNCAPPED, "--max-inflight-bytes", str(1 << 40)), None),
    ]
    if baseline_src is not None:
        variants.append(("baseline", (), {**os.environ, "PYTHONPATH": str(baseline_src)}))
    targets: list[Target] = []
    cells: Cells = {}
    with contextlib.ExitStack() as stack:
        for max_batch, label in ((0, "off"), (32, "on")):
            for name, extra, variant_env in variants:
                ports = (free_port(), free_port(), free_port())
                command = edgemodel_command(fixture_model, ports, max_batch, *extra)
                log = work / f"edgemodel-{label}-{name.replace(' ', '-')}.log"
                pid = stack.enter_context(process(command, ports[0], log, env=variant_env))
                targets.append(Target(f"edgemodel {name}", label, ports[0], ports[1], pid))
        for target in targets:
            check_correct(target, x, expected)
        print(f"servers ready: {len(targets)}; {rounds} rounds", flush=True)
        for round_index in range(rounds):
            for concurrency in concurrencies:
                # Alternate the order each round so neither variant always runs first.
                ordered = targets if round_index % 2 == 0 else targets[::-1]
                for target in ordered:
                    for protocol in ("HTTP", "gRPC"):
                        _measure_cell(cells, target, protocol, concurrency, duration / rounds, x)
            print(f"round {round_index + 1}/{rounds} done", flush=True)
    return [
        summarize(system, protocol, batching, concurrency, lat, elapsed, errors, cpu)
        for (system, protocol, batching, concurrency), (lat, elapsed, errors, cpu) in sorted(
            cells.items(), key=lambda item: (item[0][2], item[0][3], item[0][1], item[0][0])
        )
    ]


def print_cap_verdict(rows: list[Row]) -> None:
    print()
    for row in rows:
        if row.system != "edgemodel cap":
            continue
        for other in ("edgemodel no cap", "edgemodel baseline"):
            ref = find(rows, other, row.protocol, row.batching, row.concurrency)
            if ref is None or ref.throughput <= 0:
                continue
            print(
                f"c={row.concurrency} {row.protocol} batching {row.batching}: cap vs "
                f"{other.removeprefix('edgemodel ')}: p50 {row.p50_ms - ref.p50_ms:+.3f} ms, "
                f"throughput {100 * (row.throughput / ref.throughput - 1):+.1f}%"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--skip-triton", action="store_true")
    parser.add_argument(
        "--cap-compare", action="store_true", help="only: in-flight cap on vs off, c=1 and 8"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="with --cap-compare: a runtime_image/ tree to run as the 'before' column",
    )
    parser.add_argument(
        "--hidden",
        default="256,128",
        help="MLP hidden layers of the digits model (default: the fixture's 256,128)",
    )
    return parser


def _start_targets(
    stack: contextlib.ExitStack[Any],
    model: Path,
    expected: np.ndarray,
    work: Path,
    skip_triton: bool,
) -> list[Target]:
    """Start every server (edgemodel off/on, the echo floor, Triton off/on) for the whole run."""
    targets: list[Target] = []
    for max_batch, label in ((0, "off"), (32, "on")):
        ports = (free_port(), free_port(), free_port())
        command = edgemodel_command(model, ports, max_batch)
        pid = stack.enter_context(process(command, ports[0], work / f"edgemodel-{label}.log"))
        targets.append(Target("edgemodel", label, ports[0], ports[1], pid))
    echo_ports = (free_port(), free_port())
    np.save(work / "expected.npy", expected)
    echo = [sys.executable, str(Path(__file__).with_name("echo_server.py")), MODEL_NAME]
    echo += [str(echo_ports[0]), str(echo_ports[1]), str(work / "expected.npy")]
    pid = stack.enter_context(process(echo, echo_ports[0], work / "echo.log"))
    targets.append(Target("echo floor", "-", echo_ports[0], echo_ports[1], pid))
    if not skip_triton:
        targets += _start_triton(stack, model, work)
    return targets


def _start_triton(stack: contextlib.ExitStack[Any], model: Path, work: Path) -> list[Target]:
    targets: list[Target] = []
    for triton_batching, label in ((False, "off"), (True, "on")):
        root = work / f"triton-{label}"
        try:
            binary, repository, backends = triton_repo.build(
                root, model, MODEL_NAME, triton_batching
            )
        except FileNotFoundError as exc:
            print(f"triton skipped: {exc}")
            break
        http, grpc, metrics = free_port(), free_port(), free_port()
        env = dict(os.environ)
        libs = binary.parents[2].parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = f"{libs}:{env.get('LD_LIBRARY_PATH', '')}"
        command = [
            str(binary), f"--model-repository={repository}",
            f"--backend-directory={backends}", f"--http-port={http}",
            f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--allow-metrics=false",
            "--log-verbose=0", "--log-info=false",
        ]  # fmt: skip
        pid = stack.enter_context(process(command, http, work / f"triton-{label}.log", env=env))
        targets.append(Target("triton", label, http, grpc, pid))
    return targets


def _measure_cell(
    cells: Cells, target: Target, protocol: str, concurrency: int, seconds: float, x: np.ndarray
) -> None:
    """One timed run of one (target, protocol, concurrency) cell, added to its totals."""
    key = (target.system, protocol, target.batching, concurrency)
    cpu_before = cpu_seconds(target.pid)
    lat, elapsed, errors = measure(target, protocol, concurrency, seconds, x)
    cpu = cpu_seconds(target.pid) - cpu_before
    old = cells.get(key, ([], 0.0, 0, 0.0))
    cells[key] = (old[0] + lat, old[1] + elapsed, old[2] + errors, old[3] + cpu)


def _measure_rounds(
    targets: list[Target], concurrencies: list[int], rounds: int, duration: float, x: np.ndarray
) -> list[Row]:
    """Every (target, protocol, concurrency) cell, interleaved round by round, summarized."""
    cells: Cells = {}
    for round_index in range(rounds):
        for concurrency in concurrencies:
            for target in targets:
                for protocol in ("HTTP", "gRPC"):
                    _measure_cell(cells, target, protocol, concurrency, duration / rounds, x)
        print(f"round {round_index + 1}/{rounds} done", flush=True)
    return [
        summarize(system, protocol, batching, concurrency, lat, elapsed, errors, cpu)
        for (system, protocol, batching, concurrency), (lat, elapsed, errors, cpu) in sorted(
            cells.items(), key=lambda item: (item[0][0], item[0][2], item[0][3], item[0][1])
        )
    ]


def main() -> int:
    parser = _parser()
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.cap_compare and args.concurrency == parser.get_default("concurrency"):
        concurrencies = [1, 8]

    from edgemodel_sandbox.models import digits_classifier

    fixture = digits_classifier(hidden=tuple(int(h) for h in args.hidden.split(",")))
    x = np.load(fixture.evaluation)["input"][:1].astype(np.float32)
    expected = ort.InferenceSession(str(fixture.model), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"input": x}
    )[0]
    work = Path(tempfile.mkdtemp(prefix="edgemodel-bench-"))
    rows: list[Row] = []
    print(
        f"model=digits MLP hidden={args.hidden} cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f} duration={args.duration}s per cell",
        flush=True,
    )
    if args.cap_compare:
        rows = cap_compare(
            fixture.model,
            x,
            expected,
            work,
            args.rounds,
            args.duration,
            concurrencies,
            args.baseline_src,
        )
        print()
        print_table(rows)
        print_cap_verdict(rows)
        shutil.rmtree(work, ignore_errors=True)
        return 0
    rows += bench_onnxruntime(fixture.model, x, concurrencies, args.duration)

    # Every server runs for the whole benchmark and the cells are interleaved round by round,
    # so a burst of background load hits every system alike instead of whichever ran then.
    with contextlib.ExitStack() as stack:
        targets = _start_targets(stack, fixture.model, expected, work, args.skip_triton)
        for target in targets:
            check_correct(target, x, expected)
        print(f"servers ready: {len(targets)}; {args.rounds} rounds", flush=True)
        rows += _measure_rounds(targets, concurrencies, args.rounds, args.duration, x)

    print()
    print_table(rows)
    print_targets(rows)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
