"""Walking a volume chunk by chunk with a bounded set of workers.

``fan_out`` is the one place that owns the pipeline's nursery: a producer sends work down an
unbuffered channel to a fixed number of workers (each owning one buffer, which is the memory
bound). The first error cancels every task and is raised alone, not as a group; a
cancellation from the caller passes through untouched.
"""

from __future__ import annotations

import mmap
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

import trio

from asyncopy.core.endpoint import Volume, all_data
from asyncopy.core.plan import (
    DataChunk,
    Work,
    ZeroRun,
    data_ranges,
    fill_zero,
    plan_window,
)
from asyncopy.errors import CopyFailed, EndpointError

T = TypeVar("T")

# Chunks planned per call to ``extents`` where there is data: bounds one allocation-map query.
WINDOW_CHUNKS = 256


def aligned_buffer(size: int) -> memoryview:
    """A page-aligned buffer (good for O_DIRECT) of ``size`` bytes."""
    try:
        return memoryview(mmap.mmap(-1, max(size, 1)))[:size]
    except (OSError, MemoryError) as exc:
        reason = getattr(exc, "strerror", None) or "out of memory"
        raise CopyFailed(f"cannot allocate a buffer of {size} bytes: {reason}") from exc


async def run_all(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run jobs concurrently; the first error cancels the others and is raised alone."""
    errors: list[Exception] = []

    async def guarded(job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except Exception as exc:
            errors.append(exc)
            nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(guarded, job)
    except BaseExceptionGroup as group:  # KeyboardInterrupt or Cancelled from inside a task
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if errors:
        raise errors[0]


async def fan_out(
    produce: Callable[[trio.MemorySendChannel[T]], Awaitable[None]],
    workers: Sequence[Callable[[T], Awaitable[None]]],
) -> None:
    """Run ``produce`` feeding items to one task per worker; raise the first error alone."""
    send, receive = trio.open_memory_channel[T](0)

    async def feed() -> None:
        async with send:
            await produce(send)

    async def serve(
        worker: Callable[[T], Awaitable[None]], inbox: trio.MemoryReceiveChannel[T]
    ) -> None:
        async with inbox:
            async for item in inbox:
                await worker(item)

    jobs: list[Callable[[], Awaitable[None]]] = [feed]
    with receive:
        jobs += [partial(serve, worker, receive.clone()) for worker in workers]
    await run_all(jobs)


async def alongside(work: Callable[[], Awaitable[T]], beside: Callable[[], Awaitable[None]]) -> T:
    """Run ``work``, and ``beside`` beside it until ``work`` ends; the first error of either
    is raised alone."""
    ending = trio.CancelScope()
    done: list[T] = []

    async def working() -> None:
        try:
            done.append(await work())
        finally:
            ending.cancel()

    async def besides() -> None:
        with ending:
            await beside()

    await run_all([working, besides])
    return done[0]


async def plan_volume(
    volume: Volume,
    length: int,
    chunk_size: int,
    grid: int,
    send: Callable[[Work], Awaitable[None]],
    use_map: bool = True,
    begin: int = 0,
) -> None:
    """Send the work for [begin, length) of ``volume`` (``begin`` on the chunk grid), asking
    its allocation map window by window.

    A window of ``WINDOW_CHUNKS`` chunks with no data makes the next one twice as long, so a
    hole of any size costs a few queries (log2 of its length in windows), and the window that
    finds data is cut one window past it: the work planned from one query stays bounded.
    Consecutive zero runs are sent as one.
    """
    base = chunk_size * WINDOW_CHUNKS
    start, span = begin, base
    zeros = _ZeroMerger(send)
    while start < length:
        end = min(start + span, length)
        extents = (
            await volume.extents(start, end - start) if use_map else all_data(start, end - start)
        )
        ranges = data_ranges(extents, start, end, grid)
        if ranges and span > base:
            end = min(end, ranges[0][0] // chunk_size * chunk_size + base)
            ranges = [(lo, min(hi, end)) for lo, hi in ranges if lo < end]
        for work in plan_window(ranges, start, end, chunk_size):
            await zeros.send(work)
        span = base if ranges else span * 2
        start = end
    await zeros.flush()


class _ZeroMerger:
    """Passes work on, holding a zero run back until the work after it shows it ends."""

    def __init__(self, send: Callable[[Work], Awaitable[None]]) -> None:
        self._send = send
        self._held: ZeroRun | None = None

    async def send(self, work: Work) -> None:
        held = self._held
        if isinstance(work, ZeroRun):
            if held is not None and held.offset + held.length == work.offset:
                self._held = ZeroRun(held.offset, held.length + work.length)
                return
            await self.flush()
            self._held = work
            return
        await self.flush()
        await self._send(work)

    async def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            await self._send(held)


async def read_chunk(volume: Volume, chunk: DataChunk, view: memoryview) -> int:
    """Fill ``view`` with the chunk: its data ranges read, the rest zeros; return bytes read."""
    cursor = chunk.offset
    total = 0
    for start, end in chunk.data:
        if start > cursor:
            fill_zero(view[cursor - chunk.offset : start - chunk.offset])
        want = end - start
        got = await volume.read_into(start, view[start - chunk.offset : end - chunk.offset])
        if got != want:
            raise EndpointError(
                volume.name, "read", f"short read: got {got} of {want} bytes", start, want
            )
        total += want
        cursor = end
    chunk_end = chunk.offset + chunk.length
    if cursor < chunk_end:
        fill_zero(view[cursor - chunk.offset : chunk.length])
    return total
