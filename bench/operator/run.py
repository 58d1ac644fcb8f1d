"""Operator benchmark: apply-to-Deployments latency, fleet-scale convergence, API requests.

Brings up its own sandbox (temporary state dir, `--nodes` kwok nodes, `kwok_pods=True`: kwok
marks every pod Running/Ready, so no real runtime process runs and the control loop is
measured end to end at a scale real processes cannot reach on one machine) and tears it down
at the end. Compression is cached: a local `edgemodel artifact-server` holds the digits
model and a passed record for every variant of every EdgeModel, and the operator looks
artifacts up there (`--artifact-url`), so it goes straight to Deployments. Records are keyed
by the EdgeModel's UID, known only once it exists, so EdgeModels are created and seeded while
the operator is paused (SIGSTOP) and timed from the moment it resumes.

Two operators, one after the other, each in namespaces of its own (the first one's are
deleted before the second starts): "after", the operator as built (watch-fed caches), and
"before", the same operator with EDGEMODEL_OBSERVE_BY_LIST=1 (a GET and four LISTs per pass,
every write preceded by its ownership GET), side by side in one table:
  1. one EdgeModel (3 targets) at a time, `--single` times ("after" only): operator resumed
     -> all 3 of its Deployments exist (seen on a watch); p50 / p95; also -> phase Ready.
  2. `--models` EdgeModels x 3 targets created at once (16 client threads): from the
     operator's resuming, time until all Deployments exist and every EdgeModel is Ready.
  3. from the operator's JSON log (`reconciled` lines: seconds, api_requests, api_writes):
     reconcile p50 / p95, API requests of a model's first pass and of a pass that writes
     nothing (no-op).
  4. the operator process's peak RSS (VmHWM at the end; VmRSS sampled each second).

The bench talks to the API server through the operator's own client (kube.Kube, on an
event loop of its own thread): one client for operator and benches (docs/architecture.md).

Run: .venv/bin/python bench/operator/run.py [--nodes 1000] [--models 300] [--single 20]
     [--no-before] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edgemodel_operator import labels
from edgemodel_operator.api import parse_spec
from edgemodel_operator.artifact_lookup import record_path
from edgemodel_operator.builders import revision_digest
from edgemodel_operator.handlers import OBSERVE_BY_LIST_ENV
from edgemodel_operator.kube import Credentials, Kube, KubeError, resource_path
from edgemodel_operator.revision import variants
from edgemodel_sandbox import pki
from edgemodel_sandbox.cluster import Sandbox, free_port
from edgemodel_sandbox.models import digits_classifier, sha256_file
from edgemodel_sandbox.tools import Tools, tools_dir

ROOT = Path(__file__).resolve().parents[2]
EDGEMODEL = Path(sys.executable).with_name("edgemodel")
GROUP, VERSION, PLURAL = labels.GROUP, labels.VERSION, labels.PLURAL
T = TypeVar("T")
TARGET_P50_S = 3.0
TARGET_CONVERGE_S = 120.0  # 300 models x 3 targets, 1000 nodes, on 2 shared cores
TARGET_RSS_MB = 300.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def spec(model_sha: str) -> dict[str, Any]:
    """Three CPU targets (the 1000-node fleet has ~125 GPUs: too few for 300 GPU replicas)."""
    return {
        "model": {
            "uri": "http://edgemodel-artifacts.edgemodel-system.svc:8080/m",
            "sha256": model_sha,
        },
        "compression": {"quantization": "dynamic-int8"},
        "targets": [
            {"name": "arm64-cpu", "arch": "arm64"},
            {"name": "amd64-cpu", "arch": "amd64"},
            {
                "name": "pi5",
                "arch": "arm64",
                "nodeSelector": {"edgemodel.dev/hardware": "raspberry-pi-5"},
            },
        ],
    }


def edgemodel(name: str, body_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": body_spec,
    }


# ------------------------------------------------------------------ the API client


class Api:
    """The sandbox API server through kube.Kube, whose event loop runs in a thread of its own
    so the bench's threads can call it (and its watches run there)."""

    def __init__(self, sandbox: Sandbox) -> None:
        state = sandbox.state()
        assert state is not None
        credentials = pki.PKI(sandbox.directory / "pki")
        self.credentials = Credentials(
            server=f"https://127.0.0.1:{state.ports['apiserver']}",
            token=credentials.admin_token,
            ca_path=str(credentials.ca_cert),
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.kube = self.call(self._client())

    async def _client(self) -> Kube:
        return Kube(self.credentials, attempts=20)  # a fresh CRD answers 429 for a while

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            return self.call(self.kube.request(method, path, body=body))
        except KubeError as exc:
            if exc.status == 409:  # already there
                return None
            raise

    def create_namespace(self, name: str) -> None:
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    def create_edgemodel(self, namespace: str, body: dict[str, Any]) -> str:
        """Creates it; its uid (the artifact store keys its records by it)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        created = self.request("POST", path, body)
        return str(created["metadata"]["uid"])

    def close(self) -> None:
        self.call(self.kube.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@dataclass
class Watch:
    """First-seen times of Deployments (by owning EdgeModel) and of EdgeModels going Ready."""

    api: Api
    namespace: str
    deployments: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> owner, t
    ready: dict[str, float] = field(default_factory=dict)
    status_writes: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)
    _tasks: list[concurrent.futures.Future[None]] = field(default_factory=list)
    stopped: bool = False

    def start(self) -> None:
        kinds = {"Deployment": "apps/v1", "EdgeModel": labels.EDGEMODEL_API_VERSION}
        for kind, api_version in kinds.items():
            listed = threading.Event()
            self._tasks.append(self.api.spawn(self._run(api_version, kind, listed)))
            # Listed, then watched from the list's resourceVersion: live before any create.
            if not listed.wait(60):
                raise RuntimeError(f"listing {kind}s in {self.namespace} did not finish")

    async def _run(self, api_version: str, kind: str, listed: threading.Event) -> None:
        # The API server drops a watcher that falls behind (a burst of 300 creates can do
        # it): the stream then just ends. Re-list (first-seen times of what was missed are a
        # little late, never early) and watch on from the list's resourceVersion.
        kube = self.api.kube
        path = resource_path(api_version, kind, self.namespace)
        while not self.stopped:
            try:
                found = await kube.request("GET", path)
                for item in found.get("items") or []:
                    self._seen(kind, item, False)
                listed.set()
                version = found["metadata"]["resourceVersion"]
                async for event in kube.watch(api_version, kind, self.namespace, version):
                    if event.get("type") != "DELETED":
                        self._seen(kind, event.get("object") or {}, event.get("type") == "MODIFIED")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.stopped:
                    log(f"watch on {path} failed: {exc!r}")
                    await asyncio.sleep(1.0)

    def _seen(self, kind: str, obj: dict[str, Any], modified: bool) -> None:
        now = time.monotonic()
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        with self.lock:
            if kind == "Deployment":
                owner = (meta.get("labels") or {}).get(labels.MODEL, "")
                self.deployments.setdefault(name, (owner, now))
            else:
                self.status_writes += int(modified)
                if (obj.get("status") or {}).get("phase") == "Ready":
                    self.ready.setdefault(name, now)
            self.lock.notify_all()

    def deployments_of(self, owner: str) -> list[float]:
        return [t for o, t in self.deployments.values() if o == owner]

    def wait(self, check: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 1.0))
        return True

    def stop(self) -> None:
        self.stopped = True
        for task in self._tasks:
            task.cancel()


# ------------------------------------------------------------------ processes


@dataclass
class Operator:
    """One operator process, its RSS sampled every second."""

    kubeconfig: Path
    store_url: str
    workers: int
    namespaces: list[str]
    log_path: Path
    observe_by_list: bool = False  # "before": the GET + four LISTs path
    process: subprocess.Popen[bytes] | None = None
    peak_sampled_kb: int = 0
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        # `edgemodel operator`, with edgemodel.operator's DEBUG lines on (a "reconciled"
        # record per reconcile: key, seconds, api_requests, api_writes) and everything else
        # at INFO as usual; JSON lines, read back by `reconcile_stats`.
        command = [
            sys.executable,
            "-c",
            "import logging, sys; from edgemodel_cli.main import main; "
            "logging.getLogger('edgemodel.operator').setLevel(logging.DEBUG); "
            "sys.exit(main(sys.argv[1:]))",
            "operator",
            "--standalone",
            "--resolve-services-via-endpoints",
            "--no-artifact-store",
            "--artifact-url",
            self.store_url,
            "--workers",
            str(self.workers),
            *("--log-format", "json"),
        ]
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(
                    os.environ,
                    KUBECONFIG=str(self.kubeconfig),
                    **{OBSERVE_BY_LIST_ENV: "1" if self.observe_by_list else "0"},
                ),
                start_new_session=True,
            )
        threading.Thread(target=self._sample, daemon=True).start()
        deadline = time.monotonic() + 60
        while "operator started" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator did not start; see {self.log_path}")
            time.sleep(0.2)

    def _field(self, name: str) -> int:
        assert self.process is not None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            rss = self._field("VmRSS")
            if rss:
                self.samples.append(rss)
                self.peak_sampled_kb = max(self.peak_sampled_kb, rss)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The operator stopped (SIGSTOP) inside the block: what is created meanwhile is
        waiting on its watches when it resumes, as on a busy operator."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)

    def hwm_mb(self) -> float:
        return self._field("VmHWM") / 1024

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@contextlib.contextmanager
def artifact_server(root: Path, log_path: Path) -> Iterator[str]:
    port = free_port()
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [
                *(str(EDGEMODEL), "artifact-server", "--root", str(root)),
                *("--host", "127.0.0.1", "--port", str(port)),
                "--insecure-allow-anonymous-writes",  # loopback only, seeded by this bench
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"artifact server did not start; see {log_path}") from None
                time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def put(url: str, data: bytes, content_type: str) -> None:
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201), response.status


@dataclass(frozen=True)
class Store:
    """The bench's artifact store, holding the model blob."""

    url: str
    digest: str
    size: int

    def seed(self, namespace: str, uid: str, body_spec: dict[str, Any]) -> None:
        """A passed record per variant for EdgeModel `uid`: its compression is cached.

        Records are keyed by the EdgeModel's namespace, UID and full revision digest
        (artifact_lookup.record_path), so they can only be written once it exists.
        """
        parsed = parse_spec(body_spec)
        digest = revision_digest(parsed)
        for variant in variants(parsed):
            record = {
                "artifactSha256": self.digest,
                "report": {
                    "mode": "dynamic-int8",
                    "sizes": {"ratio": 1.0, "artifact_bytes": self.size},
                },
                "artifactUri": f"{self.url}/v1/artifacts/{self.digest}",
                "sizeBytes": self.size,
                "ratio": 1.0,
                "mode": "dynamic-int8",
                "result": "passed",
            }
            put(
                self.url + record_path(namespace, uid, digest, variant),
                json.dumps(record).encode(),
                "application/json",
            )


def seed_store(store: str, model: Path) -> Store:
    """The model blob; records follow per EdgeModel (`Store.seed`)."""
    digest = sha256_file(model)
    put(f"{store}/v1/artifacts/{digest}", model.read_bytes(), "application/octet-stream")
    return Store(store, digest, model.stat().st_size)


# ------------------------------------------------------------------ measurements


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def single(
    api: Api,
    operator: Operator,
    store: Store,
    namespace: str,
    count: int,
    body_spec: dict[str, Any],
) -> dict[str, Any]:
    """One at a time: created and its records seeded while the operator is paused, then
    timed from the moment it resumes."""
    watch = Watch(api, namespace)
    watch.start()
    to_deployments, to_ready = [], []
    try:
        for i in range(count):
            name = f"single-{i:03d}"
            with operator.paused():
                uid = api.create_edgemodel(namespace, edgemodel(name, body_spec))
                store.seed(namespace, uid, body_spec)
            started = time.monotonic()
            if not watch.wait(lambda n=name: len(watch.deployments_of(n)) >= 3, 60):
                raise RuntimeError(f"{name}: no 3 Deployments within 60 s")
            to_deployments.append(max(watch.deployments_of(name)) - started)
            if watch.wait(lambda n=name: n in watch.ready, 60):
                to_ready.append(watch.ready[name] - started)
    finally:
        watch.stop()
    return {
        "p50": statistics.median(to_deployments),
        "p95": percentile(to_deployments, 0.95),
        "ready_p50": statistics.median(to_ready) if to_ready else float("nan"),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat); 0 when it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def cpu_meter(sandbox: Sandbox, operator: Operator) -> Callable[[], tuple[float, float]]:
    """CPU seconds used so far by (the operator, kube-apiserver + etcd): what a run costs,
    whatever else loads the machine (wall-clock figures depend on that load, these do not)."""
    state = sandbox.state()
    assert state is not None and operator.process is not None
    control_plane = [p.pid for p in state.processes if p.name in ("kube-apiserver", "etcd")]
    pid = operator.process.pid
    return lambda: (cpu_seconds(pid), sum(cpu_seconds(p) for p in control_plane))


def bulk(
    api: Api,
    operator: Operator,
    store: Store,
    namespace: str,
    count: int,
    body_spec: dict[str, Any],
    timeout: float,
    cpu: Callable[[], tuple[float, float]],
) -> dict[str, Any]:
    """All at once: created (16 client threads) and seeded while the operator is paused,
    then timed from the moment it resumes and finds them all on its watches."""
    watch = Watch(api, namespace)
    watch.start()
    names = [f"m-{i:04d}" for i in range(count)]

    def create(name: str) -> None:
        store.seed(
            namespace, api.create_edgemodel(namespace, edgemodel(name, body_spec)), body_spec
        )

    try:
        with operator.paused():
            begun = time.monotonic()
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(create, names))
            created = time.monotonic() - begun
        started, cpu_at_start = time.monotonic(), cpu()
        log(f"{count} EdgeModels created and seeded in {created:.1f} s (operator paused)")
        want = 3 * count
        all_deps = watch.wait(lambda: len(watch.deployments) >= want, timeout)
        deps_at = (
            max(t for _, t in watch.deployments.values()) - started if all_deps else float("nan")
        )
        log(f"{len(watch.deployments)}/{want} Deployments after {time.monotonic() - started:.1f} s")
        left = max(1.0, timeout - (time.monotonic() - started))
        all_ready = watch.wait(lambda: len(watch.ready) >= count, left)
        ready_at = max(watch.ready.values()) - started if all_ready else float("nan")
        log(f"{len(watch.ready)}/{count} Ready after {time.monotonic() - started:.1f} s")
        ready_times = sorted(t - started for t in watch.ready.values())
        elapsed = time.monotonic() - started
        cpu_at_end = cpu()
    finally:
        watch.stop()
    return {
        "elapsed_s": elapsed,
        "timeout_s": timeout,
        "create_s": created,
        "deployments_s": deps_at,
        "deployments": len(watch.deployments),
        "ready_s": ready_at,
        "ready": len(watch.ready),
        "ready_p50_s": statistics.median(ready_times) if ready_times else float("nan"),
        "ready_by_target": sum(1 for t in ready_times if t <= TARGET_CONVERGE_S),
        "status_writes": watch.status_writes,
        "operator_cpu_s": cpu_at_end[0] - cpu_at_start[0],
        "control_plane_cpu_s": cpu_at_end[1] - cpu_at_start[1],
        "writes_per_s": watch.status_writes / ready_at if all_ready else float("nan"),
    }


def reconcile_records(log_path: Path, namespace: str) -> list[dict[str, Any]]:
    """The operator's `reconciled` records for EdgeModels of `namespace`, in log order."""
    records = []
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or '"reconciled"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            key = record.get("key") or ["", ""]
            if record.get("message") == "reconciled" and key[0] == namespace:
                records.append(record)
    return records


def reconcile_stats(records: list[dict[str, Any]]) -> dict[str, float]:
    """Reconcile time and API requests per pass: a model's first pass, and passes that wrote
    nothing (no-op: a cached operator should need no request for them)."""
    nan = float("nan")
    seconds = [float(r["seconds"]) for r in records]
    first: dict[str, int] = {}
    noop: list[int] = []
    for record in records:
        name = str(record["key"][1])
        first.setdefault(name, int(record.get("api_requests", 0)))
        if int(record.get("api_writes", 0)) == 0:
            noop.append(int(record.get("api_requests", 0)))

    def mean(values: list[int]) -> float:
        return sum(values) / len(values) if values else nan

    return {
        "reconciles": len(records),
        "reconcile_p50_s": statistics.median(seconds) if seconds else nan,
        "reconcile_p95_s": percentile(seconds, 0.95) if seconds else nan,
        "reconcile_max_s": max(seconds) if seconds else nan,
        "api_requests": sum(int(r.get("api_requests", 0)) for r in records),
        "requests_per_reconcile": mean([int(r.get("api_requests", 0)) for r in records]),
        "requests_first_pass": mean(list(first.values())),
        "requests_noop_pass": mean(noop),
        "noop_passes": len(noop),
    }


# ------------------------------------------------------------------ report


def fmt(value: float, unit: str) -> str:
    return "n/a" if value != value else f"{value:.2f} {unit}"  # NaN: did not happen


def reached(bulk_run: dict[str, Any], key: str, done: int, want: int) -> str:
    """Seconds until all were there, or how many were there when the run gave up."""
    value = bulk_run[key]
    if value == value:
        return f"{value:.1f} s"
    return f"not reached: {done}/{want} by {bulk_run['timeout_s']:.0f} s"


Row = tuple[str, str, str, str, bool | None]  # metric, after, before, target, ok


def single_rows(args: argparse.Namespace, after: dict[str, Any]) -> list[Row]:
    s = after.get("single")
    if not s:
        return []
    return [
        (
            f"apply -> 3 Deployments, p50 over {args.single} (cached)",
            fmt(s["p50"], "s"),
            "-",
            f"<= {TARGET_P50_S:.0f} s",
            s["p50"] <= TARGET_P50_S,
        ),
        ("apply -> 3 Deployments, p95", fmt(s["p95"], "s"), "-", "-", None),
        ("apply -> phase Ready, p50", fmt(s["ready_p50"], "s"), "-", "-", None),
    ]


def bulk_rows(args: argparse.Namespace, a: dict[str, Any], b: dict[str, Any] | None) -> list[Row]:
    """Convergence of the bulk run, "after" beside "before" (`b`, None when not run)."""
    n = args.models

    def both(render: Any) -> tuple[str, str]:
        return render(a), (render(b) if b else "-")

    converged = a["ready"] == n and a["ready_s"] <= TARGET_CONVERGE_S
    return [
        (
            f"{n} models: all {3 * n} Deployments exist",
            *both(lambda r: reached(r, "deployments_s", r["deployments"], 3 * n)),
            "-",
            None,
        ),
        (
            f"{n} models x 3 targets: all Ready (converged)",
            *both(lambda r: reached(r, "ready_s", r["ready"], n)),
            f"<= {TARGET_CONVERGE_S:.0f} s",
            converged,
        ),
        (f"{n} models: median model Ready", *both(lambda r: fmt(r["ready_p50_s"], "s")), "-", None),
        (
            f"{n} models: Ready within {TARGET_CONVERGE_S:.0f} s",
            *both(lambda r: f"{r['ready_by_target']}/{n}"),
            "-",
            None,
        ),
        (
            "reconciles/s during the bulk run",
            *both(lambda r: f"{r['reconciles'] / r['elapsed_s']:.1f}"),
            "-",
            None,
        ),
        (
            "one reconcile, p50 / p95 / max",
            *both(
                lambda r: " / ".join(
                    fmt(r[k], "s")
                    for k in ("reconcile_p50_s", "reconcile_p95_s", "reconcile_max_s")
                )
            ),
            "-",
            None,
        ),
    ]


def request_rows(a: dict[str, Any], b: dict[str, Any] | None) -> list[Row]:
    """API requests per reconcile and status writes, "after" beside "before"."""

    def both(render: Any) -> tuple[str, str]:
        return render(a), (render(b) if b else "-")

    return [
        (
            "API requests, a model's first pass (mean)",
            *both(lambda r: f"{r['requests_first_pass']:.1f}"),
            "-",
            None,
        ),
        (
            "API requests, a pass that writes nothing (mean)",
            *both(lambda r: f"{r['requests_noop_pass']:.1f} ({r['noop_passes']} passes)"),
            "-",
            None,
        ),
        (
            "API requests per reconcile, all passes (mean)",
            *both(lambda r: f"{r['requests_per_reconcile']:.2f}"),
            "-",
            None,
        ),
        ("EdgeModel status writes", *both(lambda r: str(r["status_writes"])), "-", None),
        (
            "CPU seconds during the bulk run: operator / kube-apiserver + etcd",
            *both(lambda r: f"{r['operator_cpu_s']:.0f} / {r['control_plane_cpu_s']:.0f}"),
            "-",
            None,
        ),
    ]


def rss_rows(after: dict[str, Any], before: dict[str, Any] | None) -> list[Row]:
    return [
        (
            "operator peak RSS (VmHWM)",
            f"{after['hwm_mb']:.0f} MB",
            f"{before['hwm_mb']:.0f} MB" if before else "-",
            f"<= {TARGET_RSS_MB:.0f} MB",
            after["hwm_mb"] <= TARGET_RSS_MB,
        ),
        (
            "operator peak RSS (1 s samples)",
            f"{after['sampled_mb']:.0f} MB",
            f"{before['sampled_mb']:.0f} MB" if before else "-",
            "-",
            None,
        ),
    ]


def report(args: argparse.Namespace, after: dict[str, Any], before: dict[str, Any] | None) -> bool:
    """Prints the table; whether every row with a target met it."""
    rows = [
        *single_rows(args, after),
        *bulk_rows(args, after["bulk"], before["bulk"] if before else None),
        *request_rows(after["bulk"], before["bulk"] if before else None),
        *rss_rows(after, before),
    ]
    print()
    print(
        f"Operator benchmark: {args.nodes} kwok nodes, kwok-played pods, compression cached; "
        f"node leases {args.node_lease_seconds} s; "
        f"operator --workers {args.workers}; {os.cpu_count()} CPUs shared; load average "
        f"(1 min) {after['load']:.1f} at the end of the 'after' run"
        + (f", {before['load']:.1f} of the 'before' run" if before else "")
    )
    print()
    print(
        "| metric | after: watch-fed caches | before: EDGEMODEL_OBSERVE_BY_LIST=1 | target | ok |"
    )
    print("|---|---|---|---|---|")
    ok = True
    for metric, measured, baseline, target, passed in rows:
        mark = "" if passed is None else ("yes" if passed else "NO")
        ok = ok and passed is not False
        print(f"| {metric} | {measured} | {baseline} | {target} | {mark} |")
    print()
    return ok


@dataclass(frozen=True)
class Setup:
    """What every operator run shares."""

    args: argparse.Namespace
    sandbox: Sandbox
    api: Api
    store: Store
    body_spec: dict[str, Any]
    work: Path


def run_operator(setup: Setup, label: str, observe_by_list: bool) -> dict[str, Any]:
    """One operator, its bulk run (and, for "after", the one-at-a-time run); its figures."""
    args, api = setup.args, setup.api
    with_single = not observe_by_list and args.single > 0
    namespaces = [f"bench-{label}-bulk"] + ([f"bench-{label}-single"] if with_single else [])
    operator = Operator(
        setup.sandbox.kubeconfig,
        setup.store.url,
        args.workers,
        namespaces,
        setup.work / f"operator-{label}.log",
        observe_by_list=observe_by_list,
    )
    for namespace in namespaces:
        api.create_namespace(namespace)
    log(f"starting operator ({label}, observe by list: {observe_by_list})")
    operator.start()
    try:
        out: dict[str, Any] = {}
        if with_single:
            out["single"] = single(
                api, operator, setup.store, namespaces[1], args.single, setup.body_spec
            )
            log(f"single: {out['single']}")
        out["bulk"] = bulk(
            api,
            operator,
            setup.store,
            namespaces[0],
            args.models,
            setup.body_spec,
            args.timeout,
            cpu_meter(setup.sandbox, operator),
        )
        out["load"] = os.getloadavg()[0]
        out["bulk"].update(reconcile_stats(reconcile_records(operator.log_path, namespaces[0])))
        log(f"bulk ({label}): {out['bulk']}")
        out["hwm_mb"] = operator.hwm_mb()
        out["sampled_mb"] = operator.peak_sampled_kb / 1024
        return out
    finally:
        operator.stop()
        delete_namespaces(setup.sandbox, namespaces)


def delete_namespaces(sandbox: Sandbox, namespaces: list[str]) -> None:
    """Deletes `namespaces` and waits (up to 3 minutes) until they are gone, so that the next
    run does not share the control plane with their objects' garbage collection."""
    log(f"deleting {', '.join(namespaces)}")
    kubectl = Tools.at(tools_dir()).kubectl
    subprocess.run(
        [str(kubectl), "delete", "namespace", *namespaces, "--wait=true", "--timeout=180s"],
        env=dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def install_crd(sandbox: Sandbox) -> None:
    kubectl = Tools.at(tools_dir()).kubectl
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig))
    subprocess.run(
        [str(kubectl), "apply", "-f", str(ROOT / "crds" / "edgemodel.yaml")],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            *(str(kubectl), "wait", "--for=condition=Established"),
            *("--timeout=60s", f"crd/{PLURAL}.{GROUP}"),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=240.0, help="per bulk run, seconds")
    parser.add_argument(
        "--no-before",
        action="store_true",
        help="skip the 'before' operator (EDGEMODEL_OBSERVE_BY_LIST=1: a GET and four LISTs "
        "per reconcile, the path before the watch-fed caches)",
    )
    parser.add_argument(
        "--node-lease-seconds",
        type=int,
        default=600,
        help="kwok nodes' lease duration (renewed every quarter of it; the sandbox's own is 40)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument(
        "--sandbox",
        type=Path,
        help="use (or start) the sandbox in this state folder and leave it running, instead of "
        "a temporary one (creating 1000 kwok nodes takes minutes on a loaded machine)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgemodel-bench-operator-"))
    sandbox = Sandbox(args.sandbox or work / "sandbox", node_lease_seconds=args.node_lease_seconds)
    started = time.monotonic()
    try:
        fixture = digits_classifier()
        body_spec = spec(sha256_file(fixture.model))
        log(f"sandbox with {args.nodes} nodes in {sandbox.directory}")
        sandbox.up(nodes=args.nodes, prometheus=False, kwok_pods=True)
        log(f"sandbox up after {time.monotonic() - started:.0f} s")
        install_crd(sandbox)
        api = Api(sandbox)
        try:
            with artifact_server(work / "store", work / "artifact-server.log") as url:
                store = seed_store(url, fixture.model)
                log(f"store {url} holds the model {store.digest[:12]}")
                setup = Setup(args, sandbox, api, store, body_spec, work)
                after = run_operator(setup, "after", observe_by_list=False)
                before = None if args.no_before else run_operator(setup, "before", True)
        finally:
            api.close()
        ok = report(args, after, before)
        print(f"total bench time {time.monotonic() - started:.0f} s")
        return 0 if ok else 1
    finally:
        try:
            if args.sandbox is None:
                log("tearing the sandbox down")
                sandbox.down()
        finally:
            if args.keep:
                log(f"logs kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
