"""Operator benchmark: apply-to-Deployments latency, fleet-scale convergence, operator RSS.

Brings up its own sandbox (temporary state dir, `--nodes` kwok nodes, `kwok_pods=True`: kwok
marks every pod Running/Ready, so no real runtime process runs and the control loop is
measured end to end at a scale real processes cannot reach on one machine) and tears it down
at the end. Compression is cached: a local `edgemodel artifact-server` holds the digits
model and a passed record for every variant of every EdgeModel, and the operator looks
artifacts up there (`--artifact-url`), so it goes straight to Deployments. Records are keyed
by the EdgeModel's UID, known only once it exists, so EdgeModels are created and seeded while
the operator is paused (SIGSTOP) and timed from the moment it resumes.

Measured:
  1. one EdgeModel (3 targets) at a time, `--single` times: operator resumed -> all 3 of
     its Deployments exist (seen on a watch); p50 / p95; also -> phase Ready.
  2. `--models` EdgeModels x 3 targets created at once (16 client threads): from the
     operator's resuming, time until all Deployments exist and every EdgeModel is Ready.
  3. the operator process's peak RSS (VmHWM at the end; VmRSS sampled each second).
  4. API requests per reconcile (the operator's `reconciled ... api_requests=N` lines): with
     the watch-fed caches a pass reads nothing; `--no-cache` runs the operator on the path
     before them (a GET and four LISTs per pass) to measure the difference.
Baseline: the same bulk apply against a second operator with `--workers 1` (serial
reconcile), in its own namespace (each operator watches only its namespaces).

The bench talks to the API server through the operator's own client (kube.Kube, on an
event loop of its own thread): one client for operator and benches (docs/architecture.md).

Run: .venv/bin/python bench/operator/run.py [--nodes 1000] [--models 300] [--single 20]
     [--no-cache] [--no-baseline]
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
from collections.abc import Coroutine, Iterator
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
TARGET_CONVERGE_S = 120.0
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
    observe_by_list: bool = False  # --no-cache: the GET + four LISTs path
    process: subprocess.Popen[bytes] | None = None
    peak_sampled_kb: int = 0
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        # `edgemodel operator`, with edgemodel.operator's DEBUG lines on ("reconciled key=..
        # seconds=..": one per reconcile) and everything else at INFO as usual.
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


def bulk(
    api: Api,
    operator: Operator,
    store: Store,
    namespace: str,
    count: int,
    body_spec: dict[str, Any],
    timeout: float,
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
        started = time.monotonic()
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
        "writes_per_s": watch.status_writes / ready_at if all_ready else float("nan"),
    }


def reconcile_stats(log_path: Path, namespace: str) -> dict[str, float]:
    """From the operator's `reconciled ... seconds=S api_requests=N` lines for `namespace`."""
    seconds: list[float] = []
    requests: list[int] = []
    for line in log_path.read_text(errors="replace").splitlines():
        if " reconciled " in line and namespace in line and " seconds=" in line:
            with contextlib.suppress(ValueError):
                seconds.append(float(line.rsplit(" seconds=", 1)[1].split()[0]))
            if " api_requests=" in line:
                with contextlib.suppress(ValueError):
                    requests.append(int(line.rsplit(" api_requests=", 1)[1].split()[0]))
    nan = float("nan")
    if not seconds:
        return {
            "reconciles": 0,
            "reconcile_p50_s": nan,
            "reconcile_max_s": nan,
            "api_requests": 0,
            "requests_per_reconcile": nan,
            "requests_per_reconcile_p50": nan,
        }
    return {
        "reconciles": len(seconds),
        "reconcile_p50_s": statistics.median(seconds),
        "reconcile_max_s": max(seconds),
        "api_requests": sum(requests),
        "requests_per_reconcile": sum(requests) / len(requests) if requests else nan,
        "requests_per_reconcile_p50": statistics.median(requests) if requests else nan,
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


def report(args: argparse.Namespace, ours: dict[str, Any], naive: dict[str, Any] | None) -> bool:
    s, b = ours["single"], ours["bulk"]
    nb = naive["bulk"] if naive else None
    dash = "-"
    rows = [
        (
            f"apply -> 3 Deployments, p50 over {args.single} (cached)",
            fmt(s["p50"], "s"),
            f"<= {TARGET_P50_S:.0f} s",
            dash,
            s["p50"] <= TARGET_P50_S,
        ),
        ("apply -> 3 Deployments, p95", fmt(s["p95"], "s"), dash, dash, None),
        ("apply -> phase Ready, p50", fmt(s["ready_p50"], "s"), dash, dash, None),
        (
            f"{args.models} models: all {3 * args.models} Deployments exist",
            reached(b, "deployments_s", b["deployments"], 3 * args.models),
            dash,
            reached(nb, "deployments_s", nb["deployments"], 3 * args.models) if nb else dash,
            None,
        ),
        (
            f"{args.models} models x 3 targets: all Ready (converged)",
            reached(b, "ready_s", b["ready"], args.models),
            f"<= {TARGET_CONVERGE_S:.0f} s",
            reached(nb, "ready_s", nb["ready"], args.models) if nb else dash,
            b["ready"] == args.models and b["ready_s"] <= TARGET_CONVERGE_S,
        ),
        (
            f"{args.models} models: median model Ready",
            fmt(b["ready_p50_s"], "s"),
            dash,
            fmt(nb["ready_p50_s"], "s") if nb else dash,
            None,
        ),
        (
            f"{args.models} models: Ready within {TARGET_CONVERGE_S:.0f} s",
            f"{b['ready_by_target']}/{args.models}",
            dash,
            f"{nb['ready_by_target']}/{args.models}" if nb else dash,
            None,
        ),
        (
            "reconciles/s during the bulk run",
            f"{b['reconciles'] / b['elapsed_s']:.1f}",
            dash,
            f"{nb['reconciles'] / nb['elapsed_s']:.1f}" if nb else dash,
            None,
        ),
        (
            "one reconcile, p50 / max",
            f"{fmt(b['reconcile_p50_s'], 's')} / {fmt(b['reconcile_max_s'], 's')}",
            dash,
            f"{fmt(nb['reconcile_p50_s'], 's')} / {fmt(nb['reconcile_max_s'], 's')}"
            if nb
            else dash,
            None,
        ),
        (
            "API requests per reconcile, mean / p50",
            f"{b['requests_per_reconcile']:.2f} / {b['requests_per_reconcile_p50']:.0f}",
            dash,
            f"{nb['requests_per_reconcile']:.2f} / {nb['requests_per_reconcile_p50']:.0f}"
            if nb
            else dash,
            None,
        ),
        (
            "EdgeModel status writes during the bulk run",
            str(b["status_writes"]),
            dash,
            str(nb["status_writes"]) if nb else dash,
            None,
        ),
        (
            "operator peak RSS (VmHWM)",
            f"{ours['hwm_mb']:.0f} MB",
            f"<= {TARGET_RSS_MB:.0f} MB",
            f"{naive['hwm_mb']:.0f} MB" if naive else dash,
            ours["hwm_mb"] <= TARGET_RSS_MB,
        ),
        (
            "operator peak RSS (1 s samples)",
            f"{ours['sampled_mb']:.0f} MB",
            dash,
            f"{naive['sampled_mb']:.0f} MB" if naive else dash,
            None,
        ),
    ]
    naive_title = "naive: --workers 1 (serial)" if naive else "naive baseline"
    print()
    print(
        f"Operator benchmark: {args.nodes} kwok nodes, kwok-played pods, compression cached; "
        f"operator --workers {args.workers}; {os.cpu_count()} CPUs shared; "
        f"{'GET + four LISTs per reconcile (--no-cache)' if args.no_cache else 'watch-fed caches'}"
        f"; load average at the end {os.getloadavg()[0]:.1f}"
    )
    print()
    print(f"| metric | measured | target | {naive_title} | ok |")
    print("|---|---|---|---|---|")
    ok = True
    for metric, measured, target, baseline, passed in rows:
        mark = "" if passed is None else ("yes" if passed else "NO")
        ok = ok and passed is not False
        print(f"| {metric} | {measured} | {target} | {baseline} | {mark} |")
    print()
    return ok


def run_operator(
    args: argparse.Namespace,
    sandbox: Sandbox,
    api: Api,
    store: Store,
    workers: int,
    label: str,
    body_spec: dict[str, Any],
    work: Path,
    with_single: bool,
) -> dict[str, Any]:
    namespaces = [f"bench-{label}-bulk"] + ([f"bench-{label}-single"] if with_single else [])
    operator = Operator(
        sandbox.kubeconfig,
        store.url,
        workers,
        namespaces,
        work / f"operator-{label}.log",
        observe_by_list=args.no_cache,
    )
    for namespace in namespaces:
        api.create_namespace(namespace)
    log(f"starting operator ({label}, --workers {workers})")
    operator.start()
    try:
        out: dict[str, Any] = {}
        if with_single:
            out["single"] = single(api, operator, store, namespaces[1], args.single, body_spec)
            log(f"single: {out['single']}")
        timeout = args.timeout if label == "w" else args.baseline_timeout
        out["bulk"] = bulk(api, operator, store, namespaces[0], args.models, body_spec, timeout)
        out["bulk"].update(reconcile_stats(operator.log_path, namespaces[0]))
        log(f"bulk: {out['bulk']}")
        out["hwm_mb"] = operator.hwm_mb()
        out["sampled_mb"] = operator.peak_sampled_kb / 1024
        return out
    finally:
        operator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=240.0, help="per bulk run, seconds")
    parser.add_argument(
        "--baseline-timeout", type=float, default=120.0, help="the --workers 1 run, seconds"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the --workers 1 run")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="operators observe by a GET and four LISTs per reconcile (the path before the "
        "watch-fed caches), to compare API requests per reconcile and convergence",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgemodel-bench-operator-"))
    sandbox = Sandbox(work / "sandbox")
    started = time.monotonic()
    try:
        fixture = digits_classifier()
        body_spec = spec(sha256_file(fixture.model))
        log(f"sandbox with {args.nodes} nodes in {sandbox.directory}")
        sandbox.up(nodes=args.nodes, prometheus=False, kwok_pods=True)
        log(f"sandbox up after {time.monotonic() - started:.0f} s")
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
        api = Api(sandbox)
        try:
            with artifact_server(work / "store", work / "artifact-server.log") as url:
                store = seed_store(url, fixture.model)
                log(f"store {url} holds the model {store.digest[:12]}")
                ours = run_operator(
                    args, sandbox, api, store, args.workers, "w", body_spec, work, True
                )
                naive = None
                if not args.no_baseline:
                    naive = run_operator(
                        args, sandbox, api, store, 1, "serial", body_spec, work, False
                    )
        finally:
            api.close()
        ok = report(args, ours, naive)
        print(f"total bench time {time.monotonic() - started:.0f} s")
        return 0 if ok else 1
    finally:
        log("tearing the sandbox down")
        try:
            sandbox.down()
        finally:
            if args.keep:
                log(f"logs kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
