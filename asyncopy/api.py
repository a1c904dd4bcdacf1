"""The library surface: copy and verify endpoints named by URI, with or without trio."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from asyncopy.endpoint import Volume
from asyncopy.engine import CopyOptions, CopyResult, ProgressCallback, copy
from asyncopy.errors import CopyFailed, UsageError
from asyncopy.uri import EndpointOptions, check, open_sink, open_source
from asyncopy.verify import Manifest, check_manifest, compare

T = TypeVar("T")


async def copy_uri(
    src: str,
    dst: str,
    options: CopyOptions | None = None,
    *,
    target_is_zero: bool = False,
    manifest: Path | None = None,
    progress: ProgressCallback | None = None,
    src_options: EndpointOptions | None = None,
    dst_options: EndpointOptions | None = None,
) -> CopyResult:
    """Open ``src`` read-only and ``dst`` for writing, copy, and write the manifest if asked.

    Raises:
        UsageError: bad input; nothing was written.
        CopyFailed: the copy, its flush, close or verification failed.
    """
    if manifest is not None:
        _check_writable_dir(manifest)
        options = replace(options or CopyOptions(), digests=True)
    check(src)
    check(dst)
    async with (
        open_source(src, src_options) as source,
        open_sink(
            dst,
            size=source.size,
            target_is_zero=target_is_zero,
            options=like_source(source, dst_options),
        ) as sink,
    ):
        result = await copy(source, sink, options, progress)
    if manifest is not None and result.digests is not None:
        try:
            Manifest(result.digests).write(manifest)
        except OSError as exc:
            raise CopyFailed(f"manifest {manifest}: cannot write: {exc.strerror}") from exc
    return result


def copy_sync(
    src: str,
    dst: str,
    options: CopyOptions | None = None,
    *,
    target_is_zero: bool = False,
    manifest: Path | None = None,
    progress: ProgressCallback | None = None,
    src_options: EndpointOptions | None = None,
    dst_options: EndpointOptions | None = None,
) -> CopyResult:
    """``copy_uri`` for callers without trio: runs its own event loop in this thread."""
    job = partial(
        copy_uri,
        src,
        dst,
        options,
        target_is_zero=target_is_zero,
        manifest=manifest,
        progress=progress,
        src_options=src_options,
        dst_options=dst_options,
    )
    return run_interruptibly(job)


def run_interruptibly(job: Callable[[], Awaitable[T]]) -> T:
    """``trio.run(job)``; Ctrl-C cancels the job, then raises KeyboardInterrupt.

    A cancellation lets endpoints close as designed: shielded waits for requests already
    sent to librbd or to an iSCSI target run to their end. trio's own KeyboardInterrupt is
    raised in whatever code runs when the signal comes and breaks through shields: it was
    seen to stop an iSCSI session's pump for good (the copy never ends) and to close an RBD
    image with a request in flight (a hang, or heap corruption at exit). Off the main thread
    signals cannot be caught, and this is plain ``trio.run``.
    """
    if threading.current_thread() is not threading.main_thread():
        return trio.run(job)

    async def interruptible() -> T:
        with trio.open_signal_receiver(signal.SIGINT) as signals, trio.CancelScope() as scope:
            watching = trio.CancelScope()

            async def watch() -> None:
                with watching:
                    if not watching.cancel_called:  # the job may be over before this starts
                        async for _ in signals:
                            scope.cancel()

            trio.lowlevel.spawn_system_task(watch)
            try:
                result = await job()
            finally:
                watching.cancel()
        if scope.cancel_called:  # only Ctrl-C cancels this scope, even if the job then ended
            raise KeyboardInterrupt
        return result

    return trio.run(interruptible)


async def verify_uris(
    a: str, b: str, chunk_size: int, workers: int, options: EndpointOptions | None = None
) -> list[tuple[int, int]]:
    """The byte ranges where two endpoints differ (empty: identical)."""
    async with open_source(a, options) as left, open_source(b, options) as right:
        return await compare(left, right, chunk_size, workers)


async def verify_manifest(
    path: Path, spec: str, workers: int, options: EndpointOptions | None = None
) -> list[tuple[int, int]]:
    """The byte ranges where an endpoint differs from a manifest (empty: identical)."""
    manifest = Manifest.read(path)
    async with open_source(spec, options) as volume:
        return await check_manifest(volume, manifest, workers)


def like_source(source: Volume, options: EndpointOptions | None) -> EndpointOptions:
    """A destination image created from an RBD source gets its object size, as ``rbd cp``."""
    options = options or EndpointOptions()
    rbd = sys.modules.get("asyncopy.sources.rbd")  # not imported: the source is not an image
    if rbd is not None and isinstance(source, rbd.RbdVolume):
        create = replace(options.create, default_object_size=source.io_size)
        options = replace(options, create=create)
    return options


def _check_writable_dir(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"manifest {path}: directory {parent} is missing or not writable")
