"""The sequential reference copier: the oracle the engine is tested against.

It reads and writes every byte in order, one block at a time, with no sparseness, no
concurrency and no zero detection, so that it is obviously right.
"""

from __future__ import annotations

from asyncopy.core.endpoint import Sink, Volume
from asyncopy.errors import EndpointError

BLOCK = 1 << 20


async def reference_copy(source: Volume, sink: Sink, block: int = BLOCK) -> None:
    """Copy source onto the start of sink, byte for byte (sinks with 1-byte blocks)."""
    buf = memoryview(bytearray(block))
    for offset in range(0, source.size, block):
        view = buf[: min(block, source.size - offset)]
        got = await source.read_into(offset, view)
        if got != len(view):
            raise EndpointError(source.name, "read", "short read", offset, len(view))
        await sink.write(offset, view)
    await sink.flush()
