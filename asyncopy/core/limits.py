"""The limits every count from the command line or a file is held to, checked before
anything is allocated or written.

A copy is held to the same limits as the readers of what it writes: a manifest or journal
that a copy wrote is always one that ``verify --manifest`` and ``--resume`` accept, and a
manifest or journal header past them is refused before any table is made from it.

- ``MAX_SIZE``: a volume's bytes (1 EiB, far past any volume).
- ``MAX_CHUNK_SIZE``: one chunk, one buffer per worker.
- ``MAX_MANIFEST_CHUNKS``: a manifest's chunks. A manifest lists one digest per chunk (a
  copy's own tables follow its data, not its size): 1 << 26 chunks is a 2.3 GB manifest, a
  256 TiB volume at the default 4 MiB chunk; a larger volume's manifest takes a larger
  chunk.
- ``MAX_DEPTH``: past a few dozen chunks in flight nothing gets faster; each holds a buffer.
- ``memory_limit()``: the buffers in flight, at most half the machine's physical memory.

A buffer is never larger than the volume it is for (``buffer_size``): a 1 GiB chunk size
for a 4 KiB volume maps 4 KiB per worker, not 1 GiB.
"""

from __future__ import annotations

import os

from asyncopy.errors import UsageError

MAX_SIZE = 1 << 60
MAX_CHUNK_SIZE = 1 << 30
MAX_MANIFEST_CHUNKS = 1 << 26
MAX_DEPTH = 1024


def memory_limit() -> int:
    """The most buffer memory a copy may ask for: half the machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


def grid_fault(size: int, chunk_size: int) -> str | None:
    """Why ``size`` bytes cut in ``chunk_size`` chunks are past the limits; None if not."""
    if not 0 <= size <= MAX_SIZE:
        return f"size {size} is not between 0 and {MAX_SIZE}"
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        return f"chunk size {chunk_size} is not between 1 and {MAX_CHUNK_SIZE}"
    return None


def manifest_fault(size: int, chunk_size: int) -> str | None:
    """``grid_fault``, and too many chunks for a manifest to list; None if neither."""
    if -(-size // chunk_size) > MAX_MANIFEST_CHUNKS:
        chunks = f"{size} bytes in chunks of {chunk_size}"
        return f"{chunks} are more than a manifest's {MAX_MANIFEST_CHUNKS} chunks"
    return grid_fault(size, chunk_size)


def check_counts(chunk_size: int, depth: int) -> None:
    """Refuse a chunk size or depth past the limits.

    Raises:
        UsageError: naming the limit.
    """
    if chunk_size <= 0 or depth <= 0:
        raise UsageError("chunk size and depth must be positive")
    if chunk_size > MAX_CHUNK_SIZE:
        raise UsageError(f"chunk size {chunk_size} is more than {MAX_CHUNK_SIZE}")
    if depth > MAX_DEPTH:
        raise UsageError(f"depth {depth} is more than {MAX_DEPTH}")


def check_memory(chunk_size: int, workers: int) -> None:
    """Refuse ``workers`` buffers of ``chunk_size`` bytes past ``memory_limit()``.

    Raises:
        UsageError: naming the bytes asked for and the machine's memory.
    """
    held = workers * chunk_size
    if held > memory_limit():
        raise UsageError(
            f"{workers} chunks of {chunk_size} bytes in flight need {held} bytes "
            f"of buffers, more than half of this machine's memory ({memory_limit() * 2})"
        )


def buffer_size(chunk_size: int, length: int, block: int) -> int:
    """The bytes a chunk buffer needs for ``length`` bytes: a chunk, or all of them (rounded
    up to ``block``) when they are fewer."""
    return min(chunk_size, -(-max(length, 1) // block) * block)
