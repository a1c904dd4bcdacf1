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
"""

from __future__ import annotations

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
    """Cut [start, end) (start on the grid) into zero runs and data chunks."""
    index = 0
    zero_start: int | None = None
    for c_start in range(start, end, chunk_size):
        c_end = min(c_start + chunk_size, end)
        while index < len(ranges) and ranges[index][1] <= c_start:
            index += 1
        pieces = []
        scan = index
        while scan < len(ranges) and ranges[scan][0] < c_end:
            pieces.append((max(ranges[scan][0], c_start), min(ranges[scan][1], c_end)))
            scan += 1
        if not pieces:
            zero_start = c_start if zero_start is None else zero_start
            continue
        if zero_start is not None:
            yield ZeroRun(zero_start, c_start - zero_start)
            zero_start = None
        yield DataChunk(c_start, c_end - c_start, tuple(pieces))
    if zero_start is not None:
        yield ZeroRun(zero_start, end - zero_start)


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
