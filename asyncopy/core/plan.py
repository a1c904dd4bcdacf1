"""The pure core of the copy: no I/O, no trio.

Design rules:
- A volume is cut on a fixed grid of ``chunk_size`` chunks from offset 0; the last chunk may
  be short. Digests use the same grid, so a chunk is the unit of reading, hashing and
  verifying.
- An allocation map is made safe before use: gaps count as data, and each data run is rounded
  outward to ``grid`` (the sparse size, a multiple of every block size), so reads stay aligned
  and a byte of data is never treated as a hole.
- A chunk with no data at all becomes part of a ``ZeroRun`` (nothing read); any other chunk
  is a ``DataChunk`` listing the ranges to read; the rest of it is known to be zeros.
- Nothing here costs time or memory per chunk of a hole: plans walk data ranges, and sets of
  chunks (``ChunkSet``) are runs of indices, so a petabyte hole is one step and one run.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from asyncopy.core.endpoint import Extent, ExtentKind

Range = tuple[int, int]  # (start, end), end exclusive


@dataclass(frozen=True, slots=True)
class ZeroRun:
    """Whole chunks that read as zeros: nothing to read."""

    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class DataChunk:
    """One chunk of the grid, and the absolute ranges in it that hold data."""

    offset: int
    length: int
    data: tuple[Range, ...]


Work = ZeroRun | DataChunk


@dataclass(frozen=True, slots=True)
class Segment:
    """A run inside a chunk buffer, relative to the chunk start."""

    start: int
    end: int
    zero: bool


def data_ranges(extents: Iterable[Extent], start: int, end: int, grid: int) -> list[Range]:
    """The data ranges of [start, end): gaps count as data, runs rounded outward to grid."""
    ranges: list[Range] = []
    cursor = start
    for extent in sorted(extents, key=lambda e: e.offset):
        lo, hi = max(extent.offset, start), min(extent.end, end)
        if hi <= lo:
            continue
        if lo > cursor:
            _append(ranges, cursor, lo, grid, end)
        if extent.kind is ExtentKind.DATA:
            _append(ranges, lo, hi, grid, end)
        cursor = max(cursor, hi)
    if cursor < end:
        _append(ranges, cursor, end, grid, end)
    return ranges


def _append(ranges: list[Range], lo: int, hi: int, grid: int, limit: int) -> None:
    lo = lo // grid * grid
    hi = min(-(-hi // grid) * grid, limit)
    if ranges and lo <= ranges[-1][1]:
        ranges[-1] = (ranges[-1][0], max(ranges[-1][1], hi))
    else:
        ranges.append((lo, hi))


def plan_window(ranges: list[Range], start: int, end: int, chunk_size: int) -> Iterator[Work]:
    """Cut [start, end) (start on the grid) into zero runs and data chunks.

    Walks the data ranges, not the chunks: a zero run of any length costs one step.
    """
    cursor = start  # where the next zero run or chunk begins
    index = 0
    while index < len(ranges) and cursor < end:
        if ranges[index][1] <= cursor:
            index += 1
            continue
        c_start = max(ranges[index][0], cursor) // chunk_size * chunk_size
        c_end = min(c_start + chunk_size, end)
        if c_start > cursor:
            yield ZeroRun(cursor, c_start - cursor)
        pieces = []
        while index < len(ranges) and ranges[index][0] < c_end:
            pieces.append((max(ranges[index][0], c_start), min(ranges[index][1], c_end)))
            if ranges[index][1] > c_end:  # goes on into the next chunk
                break
            index += 1
        yield DataChunk(c_start, c_end - c_start, tuple(pieces))
        cursor = c_end
    if cursor < end:
        yield ZeroRun(cursor, end - cursor)


def zero_segments(view: memoryview, sparse_size: int) -> list[Segment]:
    """Split a buffer into runs of data and of all-zero ``sparse_size`` blocks.

    ``bytes.startswith`` on a memoryview compares at memcmp speed without copying.
    With ``sparse_size`` 0 nothing is detected: the whole buffer is one data run.
    """
    length = len(view)
    if length == 0:
        return []
    if sparse_size <= 0:
        return [Segment(0, length, False)]
    segments: list[Segment] = []
    cursor = 0
    for start, stop in _zero_blocks(view, sparse_size):
        if segments and segments[-1].zero and segments[-1].end == start:
            segments[-1] = Segment(segments[-1].start, stop, True)
        else:
            if start > cursor:
                segments.append(Segment(cursor, start, False))
            segments.append(Segment(start, stop, True))
        cursor = stop
    if cursor < length:
        segments.append(Segment(cursor, length, False))
    return segments


def _zero_blocks(view: memoryview, size: int) -> Iterator[Range]:
    """The byte ranges of the all-zero ``size`` blocks of ``view``, in order.

    Only blocks whose sampled bytes are all zero are compared in full: the samples of every
    block are gathered by strided slices, in C, so a chunk of data costs a few operations,
    not one per block. The samples lie in each block's first cache line, so a block of data
    costs one cache miss; a block that passes them only to hold data further on costs a
    compare that stops at its first byte that is not zero.
    """
    zeros = zero_bytes(max(len(view), size))
    for start, stop in _candidate_runs(view, size):
        if zeros.startswith(view[start:stop]):
            yield start, stop
            continue
        for pos in range(start, stop, size):
            end = min(pos + size, stop)
            if zeros.startswith(view[pos:end]):
                yield pos, end


_SAMPLES = (0, 32)  # the bytes sampled in each block: both in its first cache line


def _candidate_runs(view: memoryview, size: int) -> Iterator[Range]:
    """Byte ranges of consecutive blocks whose sampled bytes are all zero."""
    length = len(view)
    count = -(-length // size)
    marks = 0
    for offset in (sample for sample in _SAMPLES if sample < size):
        sample = bytes(view[offset::size]).ljust(count, b"\0")  # a short last block: 0
        marks |= int.from_bytes(sample, "little")
    for run in _ZERO_RUN.finditer(marks.to_bytes(count, "little")):
        yield run.start() * size, min(run.end() * size, length)


_ZERO_RUN = re.compile(rb"\x00+")


_ZEROS = b""


def zero_bytes(length: int) -> bytes:
    """A shared read-only run of at least ``length`` zero bytes."""
    global _ZEROS
    if len(_ZEROS) < length:
        _ZEROS = bytes(max(length, 2 * len(_ZEROS)))
    return _ZEROS


def fill_zero(view: memoryview) -> None:
    """Overwrite a buffer with zeros."""
    view[:] = zero_bytes(len(view))[: len(view)]


def merge_indices(indices: Iterable[int], chunk_size: int, size: int) -> list[tuple[int, int]]:
    """Chunk indices (sorted) as merged (offset, length) byte ranges clipped to size."""
    ranges: list[tuple[int, int]] = []
    for index in indices:
        start = index * chunk_size
        end = min(start + chunk_size, size)
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
        else:
            ranges.append((start, end - start))
    return ranges


class ChunkSet:
    """A set of chunk indices in [0, count), kept as sorted, disjoint, merged runs
    [first, end): its size follows how many runs it holds, not ``count``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._covered = 0

    @classmethod
    def from_mask(cls, mask: bytes | bytearray) -> ChunkSet:
        """The indices whose byte in ``mask`` (one per chunk) is not zero."""
        chunks = cls(len(mask))
        for run in _NONZERO_RUN.finditer(mask):
            chunks.add(run.start(), run.end())
        return chunks

    def add(self, first: int, end: int) -> None:
        """Add chunks [first, end), merging with the runs it touches."""
        end = min(end, self.count)
        if end <= first:
            return
        lo = bisect.bisect_left(self._ends, first)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            first, end = min(first, self._starts[lo]), max(end, self._ends[hi - 1])
            self._covered -= sum(map(operator.sub, self._ends[lo:hi], self._starts[lo:hi]))
        self._starts[lo:hi] = [first]
        self._ends[lo:hi] = [end]
        self._covered += end - first

    def discard(self, index: int) -> None:
        """Take chunk ``index`` out of the set (nothing if it is not in it)."""
        at = bisect.bisect_right(self._starts, index) - 1
        if at < 0 or index >= self._ends[at]:
            return
        pieces = [(lo, hi) for lo, hi in ((self._starts[at], index), (index + 1, self._ends[at]))]
        kept = [(lo, hi) for lo, hi in pieces if lo < hi]
        self._starts[at : at + 1] = [lo for lo, _ in kept]
        self._ends[at : at + 1] = [hi for _, hi in kept]
        self._covered -= 1

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        at = bisect.bisect_right(self._starts, index) - 1
        return at >= 0 and index < self._ends[at]

    def covers(self, first: int, end: int) -> bool:
        """Whether every chunk of [first, end) is in the set."""
        at = bisect.bisect_right(self._starts, first) - 1
        return at >= 0 and end <= self._ends[at]

    def runs(self) -> Iterator[Range]:
        return zip(self._starts, self._ends, strict=True)

    def gaps(self, first: int, end: int) -> Iterator[Range]:
        """The runs of [first, end) not in the set."""
        cursor = first
        at = max(bisect.bisect_right(self._starts, first) - 1, 0)
        while cursor < end and at < len(self._starts):
            if self._starts[at] > cursor:
                yield cursor, min(self._starts[at], end)
            cursor = max(cursor, self._ends[at])
            at += 1
        if cursor < end:
            yield cursor, end

    def intersection(self, other: ChunkSet) -> ChunkSet:
        both = ChunkSet(min(self.count, other.count))
        mine, theirs = list(self.runs()), list(other.runs())
        i = j = 0
        while i < len(mine) and j < len(theirs):
            first, end = max(mine[i][0], theirs[j][0]), min(mine[i][1], theirs[j][1])
            if first < end:
                both.add(first, end)
            if mine[i][1] < theirs[j][1]:
                i += 1
            else:
                j += 1
        return both

    @property
    def covered(self) -> int:
        """How many chunks are in the set."""
        return self._covered

    def __bool__(self) -> bool:
        return self._covered > 0

    def __iter__(self) -> Iterator[int]:
        """One flag per chunk of [0, count): 1 in the set, 0 not (a mask, walked lazily)."""
        cursor = 0
        for first, end in self.runs():
            yield from itertools.repeat(0, first - cursor)
            yield from itertools.repeat(1, end - first)
            cursor = end
        yield from itertools.repeat(0, self.count - cursor)


_NONZERO_RUN = re.compile(rb"[^\x00]+")
