"""Sparse images with known bytes, for the tests, the demo and the benchmarks: one writer."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path


def write_sparse(
    path: str | Path, size: int, data: Iterable[tuple[int, bytes]], *, sync: bool = False
) -> int:
    """A new sparse file of ``size`` bytes holding each (offset, bytes) of ``data``, the rest
    holes; synced to disk if ``sync``. The bytes written."""
    written = 0
    with open(path, "wb") as out:
        out.truncate(size)
        for offset, chunk in data:
            out.seek(offset)
            out.write(chunk)
            written += len(chunk)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    return written


def make_sparse_image(
    path: str, size: int, fraction: float, *, block: int = 4 << 20, seed: int = 0
) -> int:
    """A sparse file of ``size`` bytes with about ``fraction`` of its ``block``-sized blocks
    filled with distinct random-looking data, scattered; the bytes written."""
    rng = random.Random(seed)
    pattern = bytearray(rng.randbytes(block))
    blocks = -(-size // block)
    chosen = sorted(rng.sample(range(blocks), round(blocks * fraction)))

    def filled() -> Iterable[tuple[int, bytes]]:
        for index in chosen:
            pattern[:8] = index.to_bytes(8, "little")  # every block differs
            yield index * block, bytes(pattern[: min(block, size - index * block)])

    return write_sparse(path, size, filled())
