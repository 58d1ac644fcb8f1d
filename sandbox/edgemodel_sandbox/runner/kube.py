"""Owns the runner's access to the API server: the project's one client, callable from threads.

The runner is a threaded, synchronous program (a thread per pod, plus the pod and claim
watches); the project's one API client, `edgemodel_operator.kube.Kube`, is async (aiohttp).
`SyncKube` runs one asyncio event loop on a thread of its own, builds the `Kube` there and
hands every call to that loop (`asyncio.run_coroutine_threadsafe`), blocking only the calling
thread. Retries with backoff (429, 5xx, an unreachable server), the token re-read and what a
404 means are `Kube`'s and are not repeated here: a refusal is a `KubeError` with its HTTP
status (0: unreachable after the retries, or the client closed). A watch runs as one task on
the loop that feeds a queue the calling thread iterates. `parse_kubeconfig` turns the runner's
kubeconfig into `Credentials` (docs/architecture.md, "One way to talk to Kubernetes").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import logging
import queue
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edgemodel_operator.kube import Credentials, Kube, KubeError

log = logging.getLogger("edgemodel.runner")
T = TypeVar("T")
WATCH_SECONDS = 300  # the server ends a watch after this; the caller watches on
POLL_SECONDS = 1.0  # how often a blocked caller looks whether the client was closed
CLOSE_SECONDS = 10.0
RETRY_SECONDS = 2.0  # after a failed list or watch
CLOSED = "the API client is closed"

# What a watch's queue carries: an event, the error that ended it, or None (it ended).
_Item = dict[str, Any] | BaseException | None


class KubeconfigError(ValueError):
    """The kubeconfig does not say where the API server is or how to authenticate to it."""


@dataclass(frozen=True)
class Kubeconfig:
    """What a kubeconfig's current context says. Inline client certificate data is kept
    apart: the TLS library loads a certificate chain from files only."""

    credentials: Credentials
    certificate_data: bytes | None = None
    key_data: bytes | None = None


def _entry(config: Mapping[str, Any], section: str, name: str, source: str) -> dict[str, Any]:
    """The body (`cluster`, `user`, `context`) of the entry `name` of a kubeconfig section."""
    key = section.rstrip("s")
    for entry in config.get(section) or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return dict(entry.get(key) or {})
    raise KubeconfigError(f"{source}: {section} has no entry named {name!r}")


def _decoded(entry: Mapping[str, Any], field: str, source: str) -> bytes | None:
    value = entry.get(field)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KubeconfigError(f"{source}: {field} is not base64 ({exc})") from exc


def _file(entry: Mapping[str, Any], field: str, base: Path | None) -> str | None:
    """A file the kubeconfig names; relative to the kubeconfig's folder, as kubectl reads it."""
    value = entry.get(field)
    if not value:
        return None
    path = Path(str(value))
    return str(base / path if base is not None and not path.is_absolute() else path)


def _context(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The current context (the only one when none is current)."""
    current = config.get("current-context")
    if current:
        return _entry(config, "contexts", str(current), source)
    contexts = config.get("contexts") or []
    if len(contexts) != 1:
        raise KubeconfigError(f"{source}: no current-context, and not exactly one context")
    return dict(contexts[0].get("context") or {})


def parse_kubeconfig(
    config: Mapping[str, Any], source: str = "kubeconfig", base: Path | None = None
) -> Kubeconfig:
    """The credentials of a kubeconfig's current context (pure). `source` names it in errors;
    `base` is the folder relative file names are read from."""
    context = _context(config, source)
    if not context.get("cluster"):
        raise KubeconfigError(f"{source}: the current context names no cluster")
    cluster = _entry(config, "clusters", str(context["cluster"]), source)
    user = _entry(config, "users", str(context["user"]), source) if context.get("user") else {}
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise KubeconfigError(f"{source}: cluster {context['cluster']!r} has no server")
    certificate_data = _decoded(user, "client-certificate-data", source)
    key_data = _decoded(user, "client-key-data", source)
    certificate_path = _file(user, "client-certificate", base)
    key_path = _file(user, "client-key", base)
    if bool(certificate_data or certificate_path) != bool(key_data or key_path):
        raise KubeconfigError(f"{source}: a client certificate needs its key, and a key its cert")
    credentials = Credentials(
        server=server,
        token=str(user["token"]) if user.get("token") else None,
        token_path=_file(user, "tokenFile", base),
        ca_path=_file(cluster, "certificate-authority", base),
        ca_data=_decoded(cluster, "certificate-authority-data", source),
        certificate_path=certificate_path,
        private_key_path=key_path,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )
    return Kubeconfig(credentials, certificate_data, key_data)


def read_kubeconfig(path: Path) -> Kubeconfig:
    """`parse_kubeconfig` of the file at `path`."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(loaded, Mapping):
        raise KubeconfigError(f"{path}: not a kubeconfig (no mapping at the top)")
    return parse_kubeconfig(loaded, str(path), base=path.parent)


async def _open(credentials: Credentials, attempts: int | None) -> Kube:
    # aiohttp's session belongs to the loop it is made on: this one.
    return Kube(credentials) if attempts is None else Kube(credentials, attempts)


async def _pump(events: AsyncIterator[dict[str, Any]], out: queue.Queue[_Item]) -> None:
    """Move a watch's events into `out`, then its end (None) or the error that ended it."""
    try:
        async for event in events:
            out.put(event)
    except asyncio.CancelledError:  # the client closed (or nobody reads any more)
        out.put(KubeError(0, CLOSED))
        raise
    except Exception as exc:
        out.put(exc)
        return
    out.put(None)


class SyncKube:
    """The project's `Kube` behind blocking calls, for the runner's threads; paths are raw
    API paths, answers plain dicts."""

    def __init__(self, credentials: Credentials, attempts: int | None = None) -> None:
        self._server = credentials.server.rstrip("/")
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube", daemon=True)
        self._thread.start()
        try:
            self._kube = self._call(_open(credentials, attempts))
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    @classmethod
    def from_kubeconfig(cls, path: Path, attempts: int | None = None) -> SyncKube:
        """A client with the credentials of the kubeconfig at `path`."""
        config = read_kubeconfig(path)
        try:
            return cls._with_certificate(config, attempts)
        except (OSError, ssl.SSLError) as exc:
            raise KubeconfigError(f"{path}: its credentials do not load ({exc})") from exc

    @classmethod
    def _with_certificate(cls, config: Kubeconfig, attempts: int | None) -> SyncKube:
        if config.certificate_data is None or config.key_data is None:
            return cls(config.credentials, attempts)
        # The operator's client loads an inline certificate itself (kube.Credentials).
        credentials = dataclasses.replace(
            config.credentials,
            certificate_data=config.certificate_data,
            private_key_data=config.key_data,
        )
        return cls(credentials, attempts)

    @property
    def server(self) -> str:
        return self._server

    @property
    def requests(self) -> int:
        """Requests sent so far, every attempt counted (the client's own count)."""
        return self._kube.requests

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the client's loop and wait for it; KubeError(0) once closed."""
        if self._closed:
            coroutine.close()
            raise KubeError(0, CLOSED)
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        while True:
            done, _ = concurrent.futures.wait([future], timeout=POLL_SECONDS)
            if done:
                break
            if self._closed and not self._loop.is_running():
                future.cancel()
                raise KubeError(0, CLOSED)
        try:
            return future.result()
        except concurrent.futures.CancelledError as exc:  # cancelled by close()
            raise KubeError(0, CLOSED) from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """The answer to one request ({} when it had no body, or was a 404 on a GET)."""
        answer = self._call(
            self._kube.request(method, path, params=query, body=body, content_type=content_type)
        )
        return dict(answer) if isinstance(answer, Mapping) else {}

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        found = self._call(self._kube.request("GET", path, params=query))
        return dict(found) if isinstance(found, Mapping) else None

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST `body`; None when it already exists."""
        try:
            return self.request("POST", path, body=body)
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: dict[str, Any] | None = None) -> bool:
        """DELETE; False when it was already gone (or a precondition no longer holds)."""
        try:
            gone = self._call(self._kube.request("DELETE", path, body=body))
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return gone is not None

    def watch(
        self,
        api_version: str,
        kind: str,
        resource_version: str,
        *,
        labels: Mapping[str, str] | None = None,
        timeout_s: int = WATCH_SECONDS,
    ) -> Iterator[dict[str, Any]]:
        """The events ({"type", "object"}) of a cluster-wide collection from
        `resource_version` on, until the server ends the watch. KubeError(410): the version
        is too old, list again. Leaving the loop early stops the watch."""
        if self._closed:
            raise KubeError(0, CLOSED)
        events = self._kube.watch(
            api_version, kind, None, resource_version, timeout_s, labels=labels
        )
        out: queue.Queue[_Item] = queue.Queue()
        pump = asyncio.run_coroutine_threadsafe(_pump(events, out), self._loop)
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            pump.cancel()

    def close(self) -> None:
        """Cancel what is in flight (its callers get KubeError(0)), close the session, stop."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(CLOSE_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_SECONDS)

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._kube.close()


def relisting(stop: threading.Event, what: str, list_and_watch: Callable[[], None]) -> None:
    """Run `list_and_watch` until `stop` is set: again at once after a 410 (its version is
    too old), after RETRY_SECONDS after any other failure (the API server may be restarting)."""
    while not stop.is_set():
        try:
            list_and_watch()
        except KubeError as exc:
            if exc.status == 410 or stop.is_set():  # stopping: the client was closed
                continue
            log.warning("%s watch failed: %s", what, exc)
            stop.wait(RETRY_SECONDS)
        except Exception as exc:  # a malformed answer, say: stay up and list again
            log.warning("%s watch failed: %s", what, exc)
            stop.wait(RETRY_SECONDS)
