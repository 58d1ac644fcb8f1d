"""Owns `edgemodel fetch`: the runtime pod's init step, cache first, then the artifact server.

1. If `<cache>/<sha256>/model.onnx` is there and hashes right, use it without any network
   (an edge site cut off from the cluster still restarts its pods).
2. Otherwise download from `--server` (`/v1/artifacts/<sha256>`) or `--uri`, verify, and put it
   in the cache, retrying with backoff until `--timeout-s`.
3. Lay it out in `--dest`: plain (`model.onnx`, or `--file-name`: the runtime pod fetches a
   generative model's tokenizer.json this way too) or a Triton model repository.
4. Keep the node cache within `--cache-max-bytes`: least-recently-used entries go first, never
   the one just fetched (see `artifacts.cache`).

Prints one JSON line: {"sha256", "cacheHit", "layout", "path"}. Exit codes: 0 ready, 2 bad
arguments or a model Triton cannot describe, 1 no verified artifact (unreachable until the
timeout, or the source holds other bytes than the digest).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgemodel_runtime.artifacts.cache import DEFAULT_CACHE_MAX_BYTES
from edgemodel_runtime.errors import FailureKind, exit_code
from edgemodel_runtime.sources import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from edgemodel_runtime.artifacts.cache import NodeCache

EXIT_FAILED = exit_code(FailureKind.UNAVAILABLE)
EXIT_BAD_INPUT = exit_code(FailureKind.INVALID_INPUT)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sha256", required=True, metavar="HEX", help="artifact digest")
    parser.add_argument("--dest", required=True, type=Path, metavar="PATH", help="layout directory")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--server", metavar="URL", help="artifact server base URL")
    source.add_argument("--uri", metavar="URI", help="http(s)://, file:// or a path")
    parser.add_argument("--cache", required=True, type=Path, metavar="DIR", help="node cache dir")
    parser.add_argument("--layout", choices=("plain", "triton"), default="plain")
    parser.add_argument("--model-name", default="model", metavar="N", help="Triton model name")
    parser.add_argument(
        "--file-name",
        default=None,
        metavar="NAME",
        help="plain layout: the file's name in --dest (default model.onnx)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        metavar="N",
        help="Triton max_batch_size (default 64 when the model has a dynamic batch dim)",
    )
    parser.add_argument("--instance-count", type=int, default=1, metavar="N")
    parser.add_argument("--gpu", action="store_true", help="Triton instances on the GPU")
    parser.add_argument("--fp16", action="store_true", help="TensorRT FP16 (with --gpu)")
    parser.add_argument("--timeout-s", type=float, default=120.0, metavar="S")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N")
    parser.add_argument(
        "--cache-max-bytes",
        type=int,
        default=DEFAULT_CACHE_MAX_BYTES,
        metavar="N",
        help="evict least-recently-used cache entries beyond this many bytes "
        f"(default {DEFAULT_CACHE_MAX_BYTES})",
    )


class _Failed(Exception):
    """Ends the command with an exit code and a one-line reason on stderr."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def run(args: argparse.Namespace) -> int:
    from edgemodel_runtime.artifacts import cache as node_cache

    try:
        sha256, uri = _validated(args)
        if args.fp16 and not args.gpu:
            # TensorRT is a GPU accelerator; on CPU the flag has nothing to act on.
            print("edgemodel fetch: --fp16 ignored without --gpu", file=sys.stderr)
        store = node_cache.NodeCache(args.cache)
        cached, hit = _obtain(store, sha256, uri, args)
        placed = _place(cached, args)
    except _Failed as failed:
        print(f"edgemodel fetch: {failed}", file=sys.stderr)
        return failed.code
    _evict(store, sha256, args)
    print(
        json.dumps(
            {"sha256": sha256, "cacheHit": hit, "layout": args.layout, "path": str(placed)},
            separators=(",", ":"),
        )
    )
    return 0


def _validated(args: argparse.Namespace) -> tuple[str, str | None]:
    """The artifact's digest and where to fetch it from (None: the cache only)."""
    from edgemodel_runtime.artifacts import cache as node_cache
    from edgemodel_runtime.artifacts import client
    from edgemodel_runtime.sources import local_path, normalize_sha256

    try:
        sha256 = normalize_sha256(args.sha256)
        uri: str | None = None
        if args.server is not None:
            uri = client.artifact_url(client.normalize_server(args.server), sha256)
        elif args.uri is not None:
            local_path(args.uri)  # refuses unsupported schemes before any retrying
            uri = args.uri
        if args.layout == "triton":
            node_cache.validate_model_name(args.model_name)
        if args.file_name is not None:
            _check_file_name(args.file_name, args.layout)
        if args.instance_count < 1:
            raise ValueError("--instance-count must be at least 1")
        if args.max_batch_size is not None and args.max_batch_size < 0:
            raise ValueError("--max-batch-size must not be negative")
        if not args.timeout_s > 0 or args.max_bytes <= 0 or args.cache_max_bytes <= 0:
            raise ValueError("--timeout-s, --max-bytes and --cache-max-bytes must be positive")
    except ValueError as exc:  # SourceError is a ValueError
        raise _Failed(EXIT_BAD_INPUT, str(exc)) from None
    return sha256, uri


def _check_file_name(name: str, layout: str) -> None:
    if layout != "plain":
        raise ValueError("--file-name needs --layout plain")
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"--file-name {name!r} must be a plain file name")


def _obtain(
    store: NodeCache, sha256: str, uri: str | None, args: argparse.Namespace
) -> tuple[Path, bool]:
    """The cached artifact (fetched with retries on a miss) and whether it was a hit."""
    from edgemodel_runtime.artifacts import cache as node_cache
    from edgemodel_runtime.artifacts import client
    from edgemodel_runtime.sources import SourceError

    try:
        cached = store.lookup(sha256)
    except OSError as exc:
        raise _Failed(
            EXIT_FAILED, f"cannot read the cache {args.cache}: {exc.strerror or exc}"
        ) from None
    if cached is not None:
        return cached, True
    if uri is None:
        raise _Failed(EXIT_BAD_INPUT, f"{sha256} is not in the cache and no --server/--uri given")
    source: str = uri

    def download() -> Path:
        try:
            return store.fill(
                sha256, source, max_bytes=args.max_bytes, timeout_s=min(60.0, args.timeout_s)
            )
        except SourceError as exc:
            raise client.Transient(str(exc)) from None

    def on_retry(exc: client.ClientError, delay: float) -> None:
        print(f"edgemodel fetch: retrying in {delay:.2g} s: {exc}", file=sys.stderr)

    try:
        return client.retry(download, deadline_s=args.timeout_s, on_retry=on_retry), False
    except (client.Unreachable, node_cache.CacheError) as exc:
        raise _Failed(EXIT_FAILED, str(exc)) from None
    except OSError as exc:
        raise _Failed(
            EXIT_FAILED, f"cannot write the cache {args.cache}: {exc.strerror or exc}"
        ) from None


def _place(cached: Path, args: argparse.Namespace) -> Path:
    from edgemodel_runtime.artifacts import cache as node_cache

    try:
        if args.layout == "plain":
            return node_cache.layout_plain(cached, args.dest, args.file_name)
        return _layout_triton(cached, args)
    except ValueError as exc:  # TritonConfigError, or an ONNX file onnx cannot parse
        raise _Failed(EXIT_BAD_INPUT, str(exc)) from None
    except OSError as exc:
        raise _Failed(
            EXIT_FAILED, f"cannot lay out into {args.dest}: {exc.strerror or exc}"
        ) from None


def _evict(store: NodeCache, sha256: str, args: argparse.Namespace) -> None:
    try:
        evicted = store.evict(args.cache_max_bytes, keep=frozenset({sha256}))
    except OSError as exc:  # a full or read-only cache must not fail a ready pod
        print(f"edgemodel fetch: cache eviction failed: {exc}", file=sys.stderr)
        return
    if evicted:
        print(f"edgemodel fetch: evicted {len(evicted)} cache entries", file=sys.stderr)


def _layout_triton(cached: Path, args: argparse.Namespace) -> Path:
    import onnx
    from google.protobuf.message import DecodeError

    from edgemodel_runtime.artifacts.cache import layout_triton
    from edgemodel_runtime.artifacts.triton import triton_config

    try:
        # Only the graph's signature is needed; external weights (if any) stay on disk.
        model = onnx.load(str(cached), load_external_data=False)
    except DecodeError as exc:
        raise ValueError(f"{cached}: not an ONNX model ({exc})") from None
    text = triton_config(
        model,
        args.model_name,
        max_batch_size=args.max_batch_size,
        gpu=args.gpu,
        fp16=args.fp16,
        instance_count=args.instance_count,
    )
    return layout_triton(cached, args.dest, args.model_name, text)
