"""The copy engine.

Design:
- The source is cut on the digest grid of ``chunk_size`` chunks. A planner asks the source's
  allocation map window by window and sends each chunk down an unbuffered channel, merging
  chunks with no data into zero runs (nothing is read for them).
- ``workers`` tasks take chunks, each chunk in a slot of the in-flight window
  (``asyncopy.core.window``) with one of its aligned buffers: ``--depth`` slots, or as many
  as the window finds worth it, within ``max_inflight``. The engine's own buffers are at most
  max_inflight bytes, whatever the volume size (a library may hold as much again in requests
  in flight: librados' receive buffers). A worker reads the
  chunk's data ranges into it (the rest of the buffer is zero-filled), hashes it and finds
  its all-zero ``sparse_size`` blocks on the event loop (for a 4 MiB chunk that costs less
  than a hop to a thread and back), then writes the data runs from the same buffer. Chunks
  are disjoint, so the writes in flight never overlap, though they complete in any order.
- Zeros are skipped on a sink known to read zeros, and zeroed otherwise: ``write_zeroes``
  first (at most ``ZERO_STEP`` bytes a call), zero buffers when the sink cannot. A hole is
  never trusted on any other sink.
- Time and memory follow the data, not the volume's size: the planner steps over a hole of
  any length at once, and what is kept per chunk (digests, chunks to skip) is kept as runs of
  chunks and pages of digests (``plan.ChunkSet``, ``verify.DigestTable``).
- A rate limit (``asyncopy.core.rate``) is spent by every read: a worker that has read a chunk
  waits for its share of the limit before writing it.
- Only the last write can end off the sink's block grid (a source whose size is not a
  multiple of the sink's block size); that block is read, patched and written back.
- The first error cancels the pipeline and is raised alone. The sink is flushed at the end;
  with ``verify`` it is then re-read and every chunk's digest compared with the source's.
  Chunks are hashed (xxh3-128) only for ``verify``, a journal (which keeps each chunk's
  digest) or when the result's digests are wanted (a manifest): a plain copy skips it.

A chunk's way through the modules: ``pipeline.plan_volume`` asks the source's ``extents``
(``sources/``) and ``plan`` cuts them into ``DataChunk``s and ``ZeroRun``s;
``pipeline.fan_out`` hands each to a worker here; ``pipeline.read_chunk`` reads it into the
worker's buffer;
``plan`` finds its zero blocks and ``verify`` hashes it; ``rate`` charges it; the sink
(``sinks/``) writes its data runs and zeroes the rest; ``verify.digest_volume`` re-reads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from asyncopy.core.endpoint import ReadsTwice, Sink, Volume, Watched
from asyncopy.core.journal import Journal, Record
from asyncopy.core.limits import (
    buffer_size,
    check_counts,
    check_memory,
    grid_fault,
    manifest_fault,
)
from asyncopy.core.pipeline import aligned_buffer, alongside, fan_out, plan_volume, read_chunk
from asyncopy.core.plan import (
    ChunkSet,
    DataChunk,
    Segment,
    Work,
    ZeroRun,
    fill_zero,
    zero_segments,
)
from asyncopy.core.progress import Meter, Progress
from asyncopy.core.rate import RateLimit
from asyncopy.core.verify import DIGEST_SIZE, DigestTable, chunk_digest, digest_volume
from asyncopy.core.window import Window
from asyncopy.errors import EndpointError, UsageError, VerificationFailed

MiB = 1 << 20
DEFAULT_CHUNK_SIZE = 4 * MiB
DEFAULT_DEPTH = None  # the window tunes itself; a number fixes it
DEFAULT_MAX_INFLIGHT = 64 * MiB
ADAPTIVE_LIMIT = 64  # chunks in flight a tuned window may reach (max_inflight bounds it too)
DEFAULT_SPARSE_SIZE = 4096  # as qemu-img convert -S
UNHASHED = bytes(DIGEST_SIZE)  # what a chunk's digest is when no hashing was asked for
ZERO_STEP = 1 << 30  # a zero run on a sink to be zeroed: zeroed and journaled in such pieces
COMMIT_INTERVAL = 1.0  # seconds at most between two journal commits (a sink flush each)
COMMIT_GAP = 0.25  # seconds at least between two commits


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """How to copy. Sizes in bytes; ``sparse_size`` 0 writes every byte (fully allocated)."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    depth: int | None = DEFAULT_DEPTH  # chunks in flight; None: tuned (``core.window``)
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT
    sparse_size: int = DEFAULT_SPARSE_SIZE
    verify: bool = False
    digests: bool = False  # hash every chunk for the result (a manifest); verify always does
    progress_interval: float = 0.5

    def __post_init__(self) -> None:
        check_counts(self.chunk_size, 1 if self.depth is None else self.depth)
        if self.sparse_size < 0 or (self.sparse_size and self.chunk_size % self.sparse_size):
            raise UsageError(
                f"sparse size {self.sparse_size} must divide the chunk size {self.chunk_size}"
            )
        if self.max_inflight_bytes < self.chunk_size:
            raise UsageError(
                f"in-flight budget {self.max_inflight_bytes} is smaller than one chunk "
                f"({self.chunk_size})"
            )
        check_memory(self.chunk_size, self.workers)

    @property
    def workers(self) -> int:
        """The most chunks in flight: ``depth``, or what a tuned window may reach."""
        most = ADAPTIVE_LIMIT if self.depth is None else self.depth
        return min(most, self.max_inflight_bytes // self.chunk_size)


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What a finished (and, with ``verified``, checked) copy did; ``digests`` is None when
    the options asked for none (no hashing was done)."""

    bytes_total: int
    bytes_read: int
    bytes_written: int
    bytes_zeroed: int
    bytes_skipped: int
    seconds: float
    verified: bool
    digests: DigestTable | None = field(repr=False, compare=False)
    verify_seconds: float = 0.0  # of ``seconds``, the re-read
    # on the destination already: found done in a journal, or unchanged since a base snapshot
    bytes_unchanged: int = 0
    depth: int = 0  # the most chunks the window let in flight at once

    def summary(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (digests left out)."""
        return {
            "bytes_total": self.bytes_total,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "bytes_zeroed": self.bytes_zeroed,
            "bytes_skipped": self.bytes_skipped,
            "seconds": round(self.seconds, 6),
            "verified": self.verified,
            "verify_seconds": round(self.verify_seconds, 6),
            "bytes_unchanged": self.bytes_unchanged,
            "depth": self.depth,
        }


ProgressCallback = Callable[[Progress], None]


async def copy(
    source: Volume,
    sink: Sink,
    options: CopyOptions | None = None,
    progress: ProgressCallback | None = None,
    rate: RateLimit | None = None,
    *,
    journal: Journal | None = None,
    unchanged: bytearray | None = None,
) -> CopyResult:
    """Copy every byte of ``source`` onto the start of ``sink``.

    Args:
        source: an open endpoint to read.
        sink: an open endpoint at least as large as the source.
        options: chunking, concurrency, sparseness and verification settings.
        progress: called at most every ``options.progress_interval`` seconds, and at the end.
        rate: a bytes-per-second limit on what the copy reads (``asyncopy.core.rate``), which may
            be shared with other copies and changed while this one runs; none if None.
        journal: what is on the sink already (skipped; read from the source again to
            verify), and where the work done goes, with each chunk's digest, after each
            flush of the sink (``core.journal``).
        unchanged: one byte per chunk, non-zero for the chunks the sink holds already (an
            incremental copy): neither read nor written.

    Raises:
        UsageError: the sink is too small or the block sizes do not fit the options;
            nothing was written.
        CopyFailed: an I/O error, a short read, a failed flush or a failed verification.
    """
    options = options or CopyOptions()
    check_fit(source, sink, options)
    copying = _Copy(source, sink, options, progress, rate)
    copying.skip_done(journal, unchanged)
    return await copying.run()


def check_source(source: Volume, options: CopyOptions, *, manifest: bool = False) -> None:
    """Refuse, before the destination is opened, a source past the limits of a copy (and of
    its manifest, when one is asked for), or off the options' grid."""
    faulty = manifest_fault if manifest else grid_fault
    fault = faulty(source.size, options.chunk_size)
    if fault is not None:
        raise UsageError(f"source {source.name}: {fault}")
    _check_grid(options, source.block_size, source.name)


def check_fit(source: Volume, sink: Sink, options: CopyOptions) -> None:
    """Refuse, before anything is written or allocated, a copy that cannot be done."""
    check_source(source, options)
    if sink.size < source.size:
        raise UsageError(
            f"destination {sink.name} is too small: {sink.size} bytes, "
            f"source {source.name} is {source.size} bytes"
        )
    align = math.lcm(source.block_size, sink.block_size)
    _check_grid(options, align, f"{source.name} and {sink.name}")


def _check_grid(options: CopyOptions, align: int, names: str) -> None:
    grid = options.sparse_size or options.chunk_size
    if options.chunk_size % align or grid % align:
        raise UsageError(
            f"chunk size {options.chunk_size} and sparse size {options.sparse_size} must be "
            f"multiples of the block size {align} of {names}"
        )


class _Copy:
    def __init__(
        self,
        source: Volume,
        sink: Sink,
        options: CopyOptions,
        progress: ProgressCallback | None,
        rate: RateLimit | None,
    ) -> None:
        self.source = source
        self.rate = rate or RateLimit()
        self.sink = sink
        self.options = options
        self.progress = progress
        # Without hashing the table still records which chunks were done, with no digest
        self.digests = DigestTable(source.size, options.chunk_size)
        self.hashing = options.digests or options.verify
        self.journal: Journal | None = None
        self.commit_due = trio.Event()
        self.skip: ChunkSet | None = None  # chunks done already, or unchanged
        self.resumed = 0  # bytes found done or unchanged
        self.read = self.written = self.zeroed = self.skipped = 0
        self.last_report = 0.0
        self.meter = Meter(source.size)
        self.tail = aligned_buffer(sink.block_size)
        block = math.lcm(source.block_size, sink.block_size)
        self.buffer_size = buffer_size(options.chunk_size, source.size, block)
        self.window = Window(
            window_limit(options, source),
            self.buffer_size,
            aligned_buffer,
            fixed=options.depth is not None,
        )
        # A source that hands its own buffers over, when the sink takes any buffer

    def skip_done(self, journal: Journal | None, unchanged: bytearray | None) -> None:
        """Leave out what ``journal`` shows done and what is ``unchanged``."""
        if journal is not None:
            if (journal.header.size, journal.header.chunk_size) != (
                self.digests.size,
                self.digests.chunk_size,
            ):
                raise UsageError(f"journal {journal.path}: made for another size or chunk size")
            self.journal = journal
            self.hashing = True  # the journal keeps each chunk's digest, to check on resuming
            self._skip(journal.done)
        if unchanged is not None:
            self._skip(unchanged)

    def _skip(self, mask: ChunkSet | bytearray) -> None:
        chunks = mask if isinstance(mask, ChunkSet) else ChunkSet.from_mask(mask)
        if self.skip is None:
            self.skip = ChunkSet(self.digests.count)
        for first, end in chunks.runs():
            for lo, hi in self.skip.gaps(first, end):
                self.resumed += self._length(lo, hi)
            self.skip.add(first, end)

    async def run(self) -> CopyResult:
        started = time.monotonic()
        # The buffers live only as long as the window: verification then allocates its own.
        workers = [self._work for _ in range(self.window.limit)]
        copying = partial(fan_out, self._produce, workers)
        try:
            if self.journal is None:
                await copying()
            else:
                await alongside(copying, self._committing)
        finally:
            self.window.release()
        skip = self.skip
        if any(skip is None or not skip.covers(*run) for run in self.digests.missing()):
            raise EndpointError(self.source.name, "copy", "not every chunk was copied")
        if isinstance(self.source, Watched):  # every read is done: were they of one moment?
            await self.source.confirm_unchanged()
        await self.sink.flush()
        if self.journal is not None:
            await self._append(self.journal.take())
        copied = time.monotonic()
        if self.options.verify:
            await self._verify()
        self._report(force=True)
        ended = time.monotonic()
        return CopyResult(
            bytes_total=self.source.size,
            bytes_read=self.read,
            bytes_written=self.written,
            bytes_zeroed=self.zeroed,
            bytes_skipped=self.skipped,
            seconds=ended - started,
            verified=self.options.verify,
            digests=self.digests if self.hashing else None,
            verify_seconds=ended - copied if self.options.verify else 0.0,
            bytes_unchanged=self.resumed,
            depth=self.window.largest,
        )

    async def _produce(self, send: trio.MemorySendChannel[Work]) -> None:
        grid = self.options.sparse_size or self.options.chunk_size
        use_map = self.options.sparse_size > 0

        async def forward(work: Work) -> None:
            for piece in self._left_to_do(work) if self.skip else (work,):
                await send.send(piece)

        await plan_volume(
            self.source, self.source.size, self.options.chunk_size, grid, forward, use_map
        )

    def _left_to_do(self, work: Work) -> Iterator[Work]:
        """``work`` without its chunks that are skipped (a zero run may split in several)."""
        assert self.skip is not None
        size = self.options.chunk_size
        first = work.offset // size
        if isinstance(work, DataChunk):
            if first not in self.skip:
                yield work
            return
        end = work.offset + work.length
        for lo, hi in self.skip.gaps(first, -(-end // size)):
            yield ZeroRun(lo * size, min(hi * size, end) - lo * size)

    def _length(self, first: int, end: int) -> int:
        """The bytes in chunks [first, end)."""
        size = self.options.chunk_size
        return min(end * size, self.source.size) - first * size

    async def _committing(self) -> None:
        """Once a worker's worth of chunks is done (or ``COMMIT_INTERVAL`` passed), and
        ``COMMIT_GAP`` after the last: flush the sink, then journal what that made durable.
        So an interrupted copy redoes at most the chunks in flight and those done in the last
        quarter second or so (a worker's worth, when the copy is slower than that)."""
        assert self.journal is not None
        while True:
            with trio.move_on_after(COMMIT_INTERVAL):
                await self.commit_due.wait()
            await trio.sleep(COMMIT_GAP)  # at most a few flushes a second, however fast
            self.commit_due = trio.Event()
            records = self.journal.take()
            if not records:
                continue
            try:
                await self.sink.flush()
            except BaseException:  # the copy ended meanwhile, or failed: not journaled yet
                self.journal.pending[:0] = records
                raise
            with trio.CancelScope(shield=True):  # a local write and sync: it ends
                await self._append(records)

    async def _append(self, records: list[Record]) -> None:
        assert self.journal is not None
        await trio.to_thread.run_sync(self.journal.append, records)

    async def _work(self, item: Work) -> None:
        """One chunk, or one zero run, in a slot of the window."""
        async with self.window.slot() as buf:
            if isinstance(item, ZeroRun):
                for piece in self._zero_pieces(item):
                    self.digests.set_zero(piece.offset, piece.length)
                    await self._zero(piece.offset, piece.length)
                    self._done(piece.offset, piece.length, None)
                    self._report()
            else:
                digest = await self._copy_chunk(item, buf[: item.length])
                self._done(item.offset, item.length, digest)
                self.window.done(item.length)
        self._report()

    def _zero_pieces(self, run: ZeroRun) -> Iterator[ZeroRun]:
        """A zero run whole for a sink known to read zeros; else in pieces of about
        ``ZERO_STEP`` bytes on the chunk grid, each zeroed and journaled on its own."""
        if self.sink.known_zero:
            yield run
            return
        step = max(ZERO_STEP // self.options.chunk_size, 1) * self.options.chunk_size
        end = run.offset + run.length
        for offset in range(run.offset, end, step):
            yield ZeroRun(offset, min(step, end - offset))

    def _done(self, offset: int, length: int, digest: bytes | None) -> None:
        """Work whose writes have completed: journaled after the sink's next flush."""
        if self.journal is not None:
            size = self.options.chunk_size
            self.journal.record(offset // size, -(-length // size), digest)
            if len(self.journal.pending) >= self.options.workers:
                self.commit_due.set()

    async def _copy_chunk(self, chunk: DataChunk, buf: memoryview) -> bytes:
        view, got = buf, await read_chunk(self.source, chunk, buf)
        self.read += got  # not `+= await`: that loads the counter before other tasks run
        await self.rate.spend(got)
        digest, segments = _analyse(view, self.options.sparse_size, self.hashing)
        for segment in segments:
            offset = chunk.offset + segment.start
            if segment.zero:
                await self._zero(offset, segment.end - segment.start)
            else:
                await self._write(offset, view[segment.start : segment.end])
        self.digests.set(chunk.offset // self.options.chunk_size, digest)
        return digest

    async def _write(self, offset: int, data: memoryview) -> None:
        body = self._aligned_length(offset, len(data))
        if body:
            await self.sink.write(offset, data[:body])
        if body < len(data):
            await self._patch_tail(offset + body, data[body:])
        self.written += len(data)

    async def _zero(self, offset: int, length: int) -> None:
        if self.sink.known_zero:
            self.skipped += length
            return
        body = self._aligned_length(offset, length)
        if body and not await self.sink.write_zeroes(offset, body):
            await self._write_zero_buffers(offset, body)
        if body < length:
            await self._patch_tail(offset + body, None, length - body)
        self.zeroed += length

    async def _write_zero_buffers(self, offset: int, length: int) -> None:
        zeros = _zero_buffer(self.buffer_size)
        for start in range(offset, offset + length, len(zeros)):
            piece = zeros[: min(len(zeros), offset + length - start)]
            await self.rate.spend(len(piece))
            await self.sink.write(start, piece)

    def _aligned_length(self, offset: int, length: int) -> int:
        """How much of [offset, offset+length) can be written as is (all but an unaligned end)."""
        block = self.sink.block_size
        end = offset + length
        if block == 1 or end % block == 0:
            return length
        return max(end // block * block - offset, 0)

    async def _patch_tail(self, offset: int, data: memoryview | None, length: int = 0) -> None:
        """Write the last, partial block: read it from the sink, patch it, write it back."""
        block = self.sink.block_size
        got = await self.sink.read_into(offset, self.tail)
        if got != block:
            raise EndpointError(self.sink.name, "read", f"short read: got {got} of {block}", offset)
        if data is None:
            fill_zero(self.tail[:length])
        else:
            self.tail[: len(data)] = data
        await self.sink.write(offset, self.tail)

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self.last_report >= self.options.progress_interval:
            self.last_report = now
            done = self.resumed + self.written + self.zeroed + self.skipped
            self.progress(self.meter.reading(now, done, self.skipped))

    async def _verify(self) -> None:
        if not self.digests.complete():
            await self._digest_skipped()
        expected = self.digests
        actual = await digest_volume(
            self.sink,
            self.source.size,
            self.options.chunk_size,
            self.window.size,
            self.rate,
        )
        differing = expected.differing(actual)
        if differing:
            raise VerificationFailed(self.sink.name, differing)

    async def _digest_skipped(self) -> None:
        """Read from the source the chunks this copy left out (found done in a journal, or
        unchanged): a journal or a base snapshot says what to skip, never what the source
        holds, so verification compares the destination with digests of the source alone."""
        size, table = self.options.chunk_size, self.digests
        skipped = [
            (first * size, min(end * size, table.size) - first * size)
            for first, end in table.missing()
        ]
        read = await digest_volume(
            self.source,
            self.source.size,
            size,
            max(1, self.window.size // 2),
            self.rate,
            ranges=skipped,
        )
        table.take(read)


def window_limit(options: CopyOptions, source: Volume) -> int:
    """The most chunks in flight: ``depth`` when fixed; else what ``max_inflight`` holds,
    a chunk read from a source that reads twice counting twice."""
    if options.depth is not None or not (isinstance(source, ReadsTwice) and source.reads_twice()):
        return options.workers
    return max(1, min(options.workers, options.max_inflight_bytes // (2 * options.chunk_size)))


def _analyse(view: memoryview, sparse_size: int, hashing: bool) -> tuple[bytes, list[Segment]]:
    return chunk_digest(view) if hashing else UNHASHED, zero_segments(view, sparse_size)


_ZERO_BUFFERS: dict[int, memoryview] = {}


def _zero_buffer(size: int) -> memoryview:
    """A shared aligned buffer of zeros (never written), for sinks that cannot zero."""
    if size not in _ZERO_BUFFERS:
        _ZERO_BUFFERS[size] = aligned_buffer(size)
    return _ZERO_BUFFERS[size]
