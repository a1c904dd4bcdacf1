"""Sparse volumes at the edge: time and memory follow the data, not the apparent size.

The pure tests run a petabyte through the planner, the digest table and the engine with a
``SparseVolume`` (a huge volume holding a few runs of bytes, behind the endpoint Protocol);
the end-to-end ones copy and verify the largest sparse file the test directory's filesystem
takes (1 PiB where it can; ext4 stops short of 16 TiB).
"""

from __future__ import annotations

import bisect
import errno
import os
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from types import FrameType

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncopy.core import journal as journals
from asyncopy.core import plan
from asyncopy.core.endpoint import Endpoint, Extent, ExtentKind
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.core.pipeline import WINDOW_CHUNKS, plan_volume
from asyncopy.core.plan import DataChunk, Work, ZeroRun, plan_window
from asyncopy.core.verify import DigestTable, chunk_digest, compare, zero_digest

MiB = 1 << 20
GiB = 1 << 30
PiB = 1 << 50
CHUNK = 4 * MiB
ASYNCOPY = (sys.executable, "-m", "asyncopy")


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail a synchronous block that runs longer than ``seconds``."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def peak_memory(limit: int) -> Iterator[None]:
    """Fail a block whose Python allocations peak above ``limit`` bytes."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak} bytes"


# -- the planner -------------------------------------------------------------------------


def reference_plan(ranges: list[tuple[int, int]], end: int, chunk: int) -> list[Work]:
    """The plan worked out from the chunks the data touches (a different road there)."""
    pieces: dict[int, list[tuple[int, int]]] = {}
    for lo, hi in ranges:
        for first in range(lo // chunk, -(-hi // chunk)):
            c_lo, c_hi = first * chunk, min((first + 1) * chunk, end)
            pieces.setdefault(first, []).append((max(lo, c_lo), min(hi, c_hi)))
    work: list[Work] = []
    cursor = 0
    for first in sorted(pieces):
        if first * chunk > cursor:
            work.append(ZeroRun(cursor, first * chunk - cursor))
        length = min(chunk, end - first * chunk)
        work.append(DataChunk(first * chunk, length, tuple(pieces[first])))
        cursor = first * chunk + length
    if cursor < end:
        work.append(ZeroRun(cursor, end - cursor))
    return work


def test_a_petabyte_hole_is_planned_in_one_step() -> None:
    middle = PiB // 2
    with deadline(5):
        work = list(plan_window([(middle, middle + 4096)], 0, PiB, CHUNK))
    assert work == [
        ZeroRun(0, middle),
        DataChunk(middle, CHUNK, ((middle, middle + 4096),)),
        ZeroRun(middle + CHUNK, middle - CHUNK),
    ]


@settings(max_examples=200, deadline=None)
@given(
    runs=st.lists(st.tuples(st.integers(0, PiB // 4096), st.integers(1, 5 * CHUNK)), max_size=12),
    tail=st.integers(0, 4095),
)
def test_a_plan_over_a_petabyte_matches_the_chunks_its_data_touches(
    runs: list[tuple[int, int]], tail: int
) -> None:
    end = PiB - tail
    ranges: list[tuple[int, int]] = []
    for start, length in sorted((block * 4096, length) for block, length in runs):
        lo, hi = max(start, ranges[-1][1] if ranges else 0), min(start + length, end)
        if lo >= hi:
            continue
        if ranges and lo == ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    with deadline(5):
        work = list(plan_window(ranges, 0, end, CHUNK))
    assert work == reference_plan(ranges, end, CHUNK)


class SparseVolume:
    """A volume of any size holding a few runs of bytes (4 KiB aligned); a sink too. Counts
    the allocation-map queries and the zeroing asked of it."""

    def __init__(self, size: int, runs: dict[int, bytes], *, known_zero: bool = True) -> None:
        self.name = "sparse"
        self.size = size
        self.block_size = 4096
        self.io_size = 4096
        self.known_zero = known_zero
        self.needs_aligned_buffers = False
        self.runs = dict(runs)
        self.queries = 0
        self.zero_calls = 0
        self.zeroed = 0
        self.largest_zero = 0

    def _overlapping(self, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
        starts = sorted(self.runs)
        at = max(bisect.bisect_right(starts, offset) - 1, 0)
        for start in starts[at:]:
            if start >= end:
                return
            if start + len(self.runs[start]) > offset:
                yield start, self.runs[start]

    async def read_into(self, offset: int, buf: memoryview) -> int:
        await trio.lowlevel.checkpoint()
        count = max(0, min(len(buf), self.size - offset))
        buf[:count] = bytes(count)
        for start, data in self._overlapping(offset, offset + count):
            lo, hi = max(start, offset), min(start + len(data), offset + count)
            buf[lo - offset : hi - offset] = data[lo - start : hi - start]
        return count

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        await trio.lowlevel.checkpoint()
        self.queries += 1
        found: list[Extent] = []
        cursor, end = offset, offset + length
        for start, data in self._overlapping(offset, end):
            lo, hi = max(start, offset), min(start + len(data), end)
            if lo > cursor:
                found.append(Extent(cursor, lo - cursor, ExtentKind.HOLE))
            found.append(Extent(lo, hi - lo, ExtentKind.DATA))
            cursor = hi
        if cursor < end:
            found.append(Extent(cursor, end - cursor, ExtentKind.HOLE))
        return found

    async def write(self, offset: int, data: memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.runs[offset] = bytes(data)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        self.zero_calls += 1
        self.zeroed += length
        self.largest_zero = max(self.largest_zero, length)
        for start, _ in list(self._overlapping(offset, offset + length)):
            del self.runs[start]
        return True

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()


RUNS = {
    0: b"\x01" * 4096,
    PiB // 3 // CHUNK * CHUNK + 4096: b"\x02" * 3 * MiB,
    PiB - 8192: b"\x03" * 8192,
}


async def test_a_petabyte_hole_costs_a_few_map_queries() -> None:
    volume = SparseVolume(PiB, RUNS)
    work: list[Work] = []

    async def keep(item: Work) -> None:
        work.append(item)

    with trio.fail_after(10):
        await plan_volume(volume, PiB, CHUNK, 4096, keep)
    chunks = [w.offset for w in work if isinstance(w, DataChunk)]
    assert chunks == [0, PiB // 3 // CHUNK * CHUNK, PiB - CHUNK]
    assert sum(w.length for w in work) == PiB
    assert not any(isinstance(a, ZeroRun) and isinstance(b, ZeroRun) for a, b in pairwise(work))
    # a few doublings of the window per hole, not one query per window of the petabyte
    assert volume.queries < 4 * 64 < PiB // (WINDOW_CHUNKS * CHUNK)


# -- the digest table --------------------------------------------------------------------


def test_a_digest_table_of_a_petabyte_is_as_small_as_its_data() -> None:
    count = PiB // CHUNK
    data, zeros = chunk_digest(b"\x07" * CHUNK), zero_digest(CHUNK)  # zeros: cached, shared
    with deadline(5), peak_memory(1 * MiB):
        holes = DigestTable(PiB, CHUNK)
        holes.set_zero(0, PiB)
        some = DigestTable(PiB, CHUNK)
        some.set_zero(0, CHUNK * 1000)
        some.set(1000, data)
        some.set_zero(CHUNK * 1001, PiB - CHUNK * 1001)
        assert holes.complete()
        assert some.complete()
        assert some.get(1000) == data
        assert some.get(count - 1) == zeros
        assert holes.differing(some) == [(CHUNK * 1000, CHUNK)]
        assert some.differing(some) == []


def test_the_chunks_never_set_come_as_runs() -> None:
    with deadline(5):
        table = DigestTable(PiB + 5, CHUNK)
        table.set(5, zero_digest(CHUNK))
        table.set_zero(10 * CHUNK, 5 * CHUNK)
        table.set(PiB // CHUNK, zero_digest(5))
        assert list(table.missing()) == [(0, 5), (6, 10), (15, PiB // CHUNK)]
        assert not table.complete()
        table.set_zero(0, PiB)
        assert table.complete()
        assert table.get(PiB // CHUNK) == zero_digest(5)


@settings(max_examples=300, deadline=None)
@given(
    adds=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 60)), max_size=25),
    others=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 60)), max_size=25),
)
def test_a_chunk_set_holds_what_a_set_of_indices_would(
    adds: list[tuple[int, int]], others: list[tuple[int, int]]
) -> None:
    chunks, other = plan.ChunkSet(200), plan.ChunkSet(200)
    expected: set[int] = set()
    for first, length in adds:
        chunks.add(first, first + length)
        expected |= set(range(first, min(first + length, 200)))
    for first, length in others:
        other.add(first, first + length)
    mask = [1 if i in expected else 0 for i in range(200)]
    assert list(chunks) == mask
    assert chunks.covered == len(expected)
    assert bool(chunks) == bool(expected)
    assert [i for i in range(200) if i in chunks] == sorted(expected)
    assert [i for lo, hi in chunks.gaps(0, 200) for i in range(lo, hi)] == [
        i for i in range(200) if i not in expected
    ]
    assert all(chunks.covers(lo, hi) for lo, hi in chunks.runs())
    assert list(plan.ChunkSet.from_mask(bytearray(mask)).runs()) == list(chunks.runs())
    both = {i for i in range(200) if i in other} & expected
    assert [i for lo, hi in chunks.intersection(other).runs() for i in range(lo, hi)] == sorted(
        both
    )


def test_a_new_journal_of_a_petabyte_copy_holds_no_byte_per_chunk(tmp_path: Path) -> None:
    path = tmp_path / "copy.journal"
    end = Endpoint("sparse", ("x",), None)
    header = journals.Header(PiB, CHUNK, end, end, journals.new_tag(), False)
    with deadline(5), peak_memory(1 * MiB):
        journal = journals.create(path, header, journals.reserve(path))
        journal.append([journals.Record(0, PiB // CHUNK, None)])
        journal.close()
        again = journals.open_existing(path)
        again.close()
    assert again.done.covers(0, PiB // CHUNK)


# -- the engine --------------------------------------------------------------------------


async def test_a_petabyte_copy_and_its_verification_follow_the_data() -> None:
    source, sink = SparseVolume(PiB, RUNS), SparseVolume(PiB, {})
    with trio.fail_after(60):
        result = await copy(source, sink, CopyOptions(verify=True))
        differing = await compare(source, sink, CHUNK, 8)
    assert result.verified
    assert differing == []
    assert sink.runs == RUNS
    assert result.bytes_read == result.bytes_written == sum(map(len, RUNS.values()))
    assert result.bytes_skipped == PiB - result.bytes_written
    assert source.queries < 3 * 4 * 64  # copy, re-read for the check, compare


async def test_a_resumed_petabyte_copy_redoes_nothing(tmp_path: Path) -> None:
    source, sink = SparseVolume(PiB, RUNS), SparseVolume(PiB, {})
    path = tmp_path / "copy.journal"
    end = Endpoint("sparse", ("x",), None)
    header = journals.Header(PiB, CHUNK, end, end, journals.new_tag(), False)
    with trio.fail_after(60):
        journal = journals.create(path, header, journals.reserve(path))
        await copy(source, sink, journal=journal)
        journal.close()
        again = journals.open_existing(path)
        result = await copy(source, sink, CopyOptions(verify=True), journal=again)
        again.close()
    assert result.bytes_read == 0
    assert result.bytes_written == 0
    assert result.bytes_unchanged == PiB
    assert result.verified
    assert sink.runs == RUNS


async def test_zeroing_a_petabyte_destination_goes_in_bounded_pieces() -> None:
    source = SparseVolume(PiB, RUNS)
    sink = SparseVolume(PiB, {PiB // 2: b"\x09" * 4096}, known_zero=False)
    with trio.fail_after(120):
        result = await copy(source, sink)
    assert sink.runs == RUNS
    assert sink.zeroed == result.bytes_zeroed == PiB - sum(map(len, RUNS.values()))
    assert sink.largest_zero <= GiB  # each call can be interrupted soon enough
    assert sink.zero_calls < PiB // GiB + 16


async def test_zeroing_a_destination_is_journaled_piece_by_piece(tmp_path: Path) -> None:
    size = 64 << 40
    runs = {0: b"\x01" * 4096, size - 4096: b"\x02" * 4096}
    source, sink = SparseVolume(size, runs), SparseVolume(size, {}, known_zero=False)
    path = tmp_path / "copy.journal"
    end = Endpoint("sparse", ("x",), None)
    header = journals.Header(size, CHUNK, end, end, journals.new_tag(), False)
    with trio.fail_after(60):
        journal = journals.create(path, header, journals.reserve(path))
        result = await copy(source, sink, journal=journal)
        journal.close()
    again = journals.open_existing(path, writable=False)
    again.close()
    zeros = [record for record in again.records if record.digest is None]
    assert sum(record.count for record in zeros) * CHUNK == size - 2 * CHUNK
    assert max(record.count for record in zeros) * CHUNK <= GiB  # a crash redoes one piece
    assert again.done.covers(0, size // CHUNK)
    assert result.bytes_zeroed == size - 8192


# -- real files, end to end --------------------------------------------------------------


def largest_sparse_size(directory: Path) -> int:
    """The largest size, at most 1 PiB and a multiple of 4 KiB, that a file here can have."""
    probe = directory / "probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        low, high = 0, PiB // 4096  # in 4 KiB blocks: low fits, high may not
        while low < high:
            middle = (low + high + 1) // 2
            try:
                os.ftruncate(fd, middle * 4096)
                low = middle
            except OSError as exc:
                if exc.errno != errno.EFBIG:
                    raise
                high = middle - 1
        return low * 4096
    finally:
        os.close(fd)
        probe.unlink()


def write_runs(path: Path, size: int, runs: dict[int, bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, size)
        for offset, data in runs.items():
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def data_map(path: Path) -> list[tuple[int, bytes]]:
    """The data runs of a file (SEEK_DATA/SEEK_HOLE), with their bytes."""
    found = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, position = os.fstat(fd).st_size, 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            found.append((start, os.pread(fd, end - start, start)))
            position = end
    finally:
        os.close(fd)
    return found


def measured(report: Path, *args: str) -> tuple[int, float, int, str]:
    """Run asyncopy under /usr/bin/time (forked from a small process: a child forked from
    this one would count its memory too): exit code, wall seconds, peak RSS in bytes, stderr."""
    done = subprocess.run(
        ["/usr/bin/time", "-o", str(report), "-f", "%e %M", *ASYNCOPY, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    seconds, kib = report.read_text().split()[-2:]
    return done.returncode, float(seconds), int(kib) * 1024, done.stderr


RSS_LIMIT = 96 * MiB


def within_bounds(report: Path, expected: int, *args: str) -> None:
    """Run asyncopy: it must exit with ``expected`` within a minute and ``RSS_LIMIT``."""
    code, seconds, rss, stderr = measured(report, *args)
    assert code == expected, stderr
    assert seconds < 60, args
    assert rss < RSS_LIMIT, (args, rss)


def test_the_largest_sparse_file_copies_and_verifies_in_time_and_memory_of_its_data(
    tmp_path: Path,
) -> None:
    size = largest_sparse_size(tmp_path)
    report = tmp_path / "time"
    assert size >= 1 << 40  # the filesystem takes big sparse files (ext4: 16 TiB - 4 KiB)
    layouts = {
        "4k": {size // 2 // 4096 * 4096: os.urandom(4096)},
        "mib": {
            int(size * fraction) // 4096 * 4096: os.urandom(MiB * (index % 3 + 1))
            for index, fraction in enumerate((0.0, 0.1, 0.37, 0.5, 0.77, 0.99))
        }
        | {size - 4096: os.urandom(4096)},
    }
    for name, runs in layouts.items():
        src, dst = tmp_path / f"{name}.src", tmp_path / f"{name}.dst"
        write_runs(src, size, runs)
        within_bounds(report, 0, "copy", str(src), str(dst))
        assert os.stat(dst).st_size == size
        assert data_map(dst) == data_map(src)
        assert os.stat(dst).st_blocks <= os.stat(src).st_blocks
        within_bounds(report, 0, "verify", str(src), str(dst))
        with open(dst, "r+b") as out:
            out.seek(size - 1)
            out.write(b"\x01")
        within_bounds(report, 1, "verify", str(src), str(dst))
        dst.unlink()
        src.unlink()
