"""The library surface: copy and verify endpoints named by URI, with or without trio."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypedDict, TypeVar, Unpack

import trio

from asyncopy.access.posix import path_identities
from asyncopy.core.endpoint import Identified, Identity, Sink, Volume, Watched, endpoint_of
from asyncopy.core.engine import (
    CopyOptions,
    CopyResult,
    ProgressCallback,
    check_fit,
    check_source,
    copy,
)
from asyncopy.core.journal import (
    Header,
    Journal,
    check_destination,
    check_resumable,
    create,
    label,
    new_tag,
    open_existing,
    reserve,
)
from asyncopy.core.rate import RateLimit
from asyncopy.core.verify import Manifest, check_manifest, compare, manifest_file
from asyncopy.errors import HungUp, Terminated, UsageError
from asyncopy.incremental import Since, check_base, check_snapshot_destination, plan
from asyncopy.incremental import snapshot_destination as snapshot_destination_of
from asyncopy.specs import EndpointOptions, check, open_sink, open_source, parse

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
    rate: RateLimit | None = None,
    journal: Path | None = None,
    resume: bool = False,
    trust_source: bool = False,
    trust_destination: bool = False,
    since: Since | None = None,
    snapshot_destination: bool = False,
) -> CopyResult:
    """Open ``src`` read-only and ``dst`` for writing, copy, and write the manifest if asked.

    ``rate`` limits the bytes the copy reads (``asyncopy.core.rate``); it may be shared with
    other copies and changed while this one runs. ``journal`` keeps a record of the work on
    the destination (``core.journal``), and a destination this copy creates is kept if it
    fails; with ``resume`` the journal exists and the copy continues where it shows it
    stopped, from the same source (unchanged: ``trust_source`` for one that cannot tell)
    onto the same destination, which still holds what the journal shows done (what it no
    longer holds is copied again, and a ``UserWarning`` says so). ``since`` copies only what
    changed since an earlier snapshot of an RBD source onto a destination that holds it
    (``asyncopy.incremental``). ``trust_destination``: the destination is taken to be the
    journal's, or to hold the base snapshot, unchecked. ``snapshot_destination`` takes the
    name of the source's snapshot on an RBD destination once the copy is done.

    Raises:
        UsageError: bad input; nothing was written.
        CopyFailed: the copy, its flush, close or verification failed.
    """
    options = options or CopyOptions()
    if manifest is not None:
        options = replace(options, digests=True)
    check(src)
    check(dst)
    if since is not None:
        _check_since(src, since, target_is_zero, journal, manifest, options)
    if trust_destination and not resume and since is None:
        raise UsageError("trusting the destination goes with resuming or --since")
    if resume and manifest is not None and not options.verify:
        raise UsageError(
            "--manifest with --resume needs --verify (the chunks journaled without a digest "
            "are read again)"
        )
    if snapshot_destination and (parse(dst)[0] != "rbd" or "@" not in parse(src)[1]):
        raise UsageError("--snapshot-destination needs an rbd:...@SNAP source and an rbd: DST")
    files = [(kind, path) for kind, path in (("manifest", manifest), ("journal", journal)) if path]
    refuse_same_paths(src, dst, files)
    with ExitStack() as held:
        commit = held.enter_context(manifest_file(manifest)) if manifest else None
        kept, reserved = None, None
        if journal is not None and resume:
            kept = held.enter_context(_resumed(journal))
            options = replace(options, chunk_size=kept.header.chunk_size)
        elif journal is not None:
            reserved = held.enter_context(_reserved(journal))
        async with open_source(src, src_options) as source:
            refuse_same(source, [], files)
            check_source(source, options, manifest=manifest is not None)
            async with open_sink(
                dst,
                size=source.size,
                target_is_zero=target_is_zero,
                options=like_source(source, dst_options),
                must_exist=resume or since is not None,
                keep_on_failure=journal is not None,
            ) as sink:
                refuse_same(sink, [source], files)
                check_fit(source, sink, options)
                if snapshot_destination:
                    await check_snapshot_destination(source, sink)
                if kept is not None:
                    check_resumable(kept, source, sink, trust_source=trust_source)
                    if not trust_destination:
                        await _check_resumed_destination(kept, sink, options, rate)
                elif journal is not None and reserved is not None:
                    kept = await _start_journal(journal, reserved, source, sink, options)
                    held.callback(kept.close)
                unchanged = None
                if since is not None:
                    unchanged = await _since_start(source, sink, since, options, trust_destination)
                result = await copy(
                    source, sink, options, progress, rate, journal=kept, unchanged=unchanged
                )
                if snapshot_destination:
                    await snapshot_destination_of(source, sink)
                if commit is not None and result.digests is not None:
                    commit(Manifest(result.digests, endpoint_of(source)))  # fails the copy
    return result


def _check_since(
    src: str,
    since: Since,
    target_is_zero: bool,
    journal: Path | None,
    manifest: Path | None,
    options: CopyOptions,
) -> None:
    """What an incremental copy cannot be combined with, refused before anything opens."""
    if parse(src)[0] != "rbd":
        raise UsageError(f"--since {since.snapshot}: the source must be an rbd: image")
    if target_is_zero:
        raise UsageError("--since: the destination holds the base snapshot, not zeros")
    if journal is not None:
        raise UsageError("--since cannot be journaled (yet): copy the increment again")
    if manifest is not None and not options.verify:
        raise UsageError("--manifest with --since needs --verify (it reads the unchanged chunks)")


async def _since_start(
    source: Volume, sink: Sink, since: Since, options: CopyOptions, trust_destination: bool
) -> bytearray:
    await check_base(source, sink, since, options.workers, trust=trust_destination)
    return await plan(source, since, options.chunk_size)


async def _start_journal(
    path: Path, fd: int, source: Volume, sink: Sink, options: CopyOptions
) -> Journal:
    """Label the destination with a new tag where it can carry one, then write the header."""
    tag = new_tag()
    tagged = await label(sink, tag)
    header = Header(
        source.size, options.chunk_size, endpoint_of(source), endpoint_of(sink), tag, tagged
    )
    return create(path, header, os.dup(fd))


async def _check_resumed_destination(
    journal: Journal, sink: Sink, options: CopyOptions, rate: RateLimit | None
) -> None:
    differing = await check_destination(journal, sink, options.workers, rate)
    if differing:
        warnings.warn(
            f"{sink.name}: {len(differing)} chunk(s) the journal shows done differ (written "
            f"since?), first at offset {differing[0] * journal.header.chunk_size}: "
            "copying them again",
            UserWarning,
            stacklevel=2,
        )


@contextmanager
def _resumed(path: Path) -> Iterator[Journal]:
    """The journal to resume, read before anything is opened."""
    kept = open_existing(path)
    try:
        yield kept
    finally:
        kept.close()


@contextmanager
def _reserved(path: Path) -> Iterator[int]:
    """A new journal's file, made before anything is opened; removed if the copy fails
    before its header is written (there is nothing to resume then)."""
    fd = reserve(path)
    try:
        yield fd
    except BaseException:
        if os.fstat(fd).st_size == 0:
            path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


class CopyArguments(TypedDict, total=False):
    """``copy_uri``'s keyword arguments, which ``copy_sync`` passes on."""

    target_is_zero: bool
    manifest: Path | None
    progress: ProgressCallback | None
    src_options: EndpointOptions | None
    dst_options: EndpointOptions | None
    rate: RateLimit | None
    journal: Path | None
    resume: bool
    trust_source: bool
    trust_destination: bool
    since: Since | None
    snapshot_destination: bool


def copy_sync(
    src: str, dst: str, options: CopyOptions | None = None, **kwargs: Unpack[CopyArguments]
) -> CopyResult:
    """``copy_uri`` for callers without trio: runs its own event loop in this thread."""
    return run_interruptibly(partial(copy_uri, src, dst, options, **kwargs))


def run_interruptibly(job: Callable[[], Awaitable[T]]) -> T:
    """``trio.run(job)``; Ctrl-C (SIGINT), SIGTERM or SIGHUP cancels the job, then raises
    KeyboardInterrupt, ``Terminated`` or ``HungUp``.

    A cancellation lets endpoints close as designed: shielded waits for requests already
    sent to librbd or to an iSCSI target run to their end, a destination the copy created is
    removed, locks and sessions are released. trio's own KeyboardInterrupt is raised in
    whatever code runs when the signal comes and breaks through shields: it was seen to stop
    an iSCSI session's pump for good (the copy never ends) and to close an RBD image with a
    request in flight (a hang, or heap corruption at exit). Off the main thread signals
    cannot be caught, and this is plain ``trio.run``.
    """
    if threading.current_thread() is not threading.main_thread():
        return trio.run(job)
    received: list[int] = []

    async def interruptible() -> T:
        stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        with trio.open_signal_receiver(*stopping) as signals, trio.CancelScope() as scope:
            watching = trio.CancelScope()

            async def watch() -> None:
                with watching:
                    if not watching.cancel_called:  # the job may be over before this starts
                        async for number in signals:
                            received.append(number)
                            scope.cancel()

            trio.lowlevel.spawn_system_task(watch)
            try:
                result = await job()
            finally:
                watching.cancel()
        if scope.cancel_called:  # only a signal cancels this scope, even if the job then ended
            if received[0] == signal.SIGHUP:
                raise HungUp
            if received[0] == signal.SIGTERM:
                raise Terminated
            raise KeyboardInterrupt
        return result

    return trio.run(interruptible)


async def verify_uris(
    a: str, b: str, chunk_size: int, workers: int, options: EndpointOptions | None = None
) -> list[tuple[int, int]]:
    """The byte ranges where two endpoints differ (empty: identical).

    Raises:
        CopyFailed: either may have been written while it was read (``Watched``): neither
            answer can be vouched for.
    """
    async with open_source(a, options) as left, open_source(b, options) as right:
        differing = await compare(left, right, chunk_size, workers)
        await confirm_unchanged(left, right)
        return differing


async def verify_manifest(
    path: Path, spec: str, workers: int, options: EndpointOptions | None = None
) -> list[tuple[int, int]]:
    """The byte ranges where an endpoint differs from a manifest (empty: identical)."""
    manifest = Manifest.read(path)
    async with open_source(spec, options) as volume:
        differing = await check_manifest(volume, manifest, workers)
        await confirm_unchanged(volume)
        return differing


async def confirm_unchanged(*volumes: Volume) -> None:
    """A CopyFailed if a volume that can tell may have been written while it was read."""
    for volume in volumes:
        if isinstance(volume, Watched):
            await volume.confirm_unchanged()


def like_source(source: Volume, options: EndpointOptions | None) -> EndpointOptions:
    """A destination image created from an RBD source gets its object size, as ``rbd cp``."""
    options = options or EndpointOptions()
    rbd = sys.modules.get("asyncopy.sources.rbd")  # not imported: the source is not an image
    if rbd is not None and isinstance(source, rbd.RbdVolume):
        create = replace(options.create, default_object_size=source.io_size)
        options = replace(options, create=create)
    return options


def refuse_same_paths(src: str, dst: str, files: Sequence[tuple[str, Path]] = ()) -> None:
    """Before anything is opened: SRC and DST (local paths, any spelling or link) must be two
    volumes, and a manifest or journal neither of them."""
    local = [rest for scheme, rest in (parse(src), parse(dst)) if scheme == "file"]
    if len(local) == 2 and path_identities(local[0]) & path_identities(local[1]):
        raise UsageError(f"{src} and {dst} are the same volume")
    taken = frozenset().union(*(path_identities(path) for path in local))
    for kind, path in files:
        if path_identities(path) & taken or any(_same_path(path, name) for name in local):
            raise UsageError(f"{kind} {path}: is the source or the destination")


def refuse_same(
    volume: Volume, opened: list[Volume], files: Sequence[tuple[str, Path]] = ()
) -> None:
    """Once opened, by what each volume says it is (inode, device, loop backing file,
    cluster image, LUN): ``volume`` is none of ``opened``, and the manifest or journal is
    none of them."""
    mine = identities(volume)
    for other in opened:
        if mine & identities(other):
            raise UsageError(f"{volume.name} and {other.name} are the same volume")
    for kind, path in files:
        if path_identities(path) & mine:
            raise UsageError(f"{kind} {path}: is {volume.name}")


def identities(volume: Volume) -> frozenset[Identity]:
    return volume.identities() if isinstance(volume, Identified) else frozenset()


def _same_path(a: Path, b: str) -> bool:
    """The same name once links and dots are resolved (``b`` may not exist yet)."""
    return os.path.realpath(a) == os.path.realpath(b)
