"""Endpoints for tests, behind the same Protocol as the real ones.

``MemoryVolume`` holds a volume in memory with a chosen allocation map. ``FaultyVolume`` wraps
any endpoint and injects EIO at an offset, short reads, silent corruption and delays.
``RecordingSink`` wraps a sink and records every write, zero and flush in order.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from asyncopy.core.endpoint import Extent, Sink, Volume, all_data
from asyncopy.errors import EndpointError, map_errors


class MemoryVolume:
    """A volume in memory; a sink too. I/O off its block grid is an error, as with O_DIRECT."""

    def __init__(
        self,
        data: bytes | bytearray,
        *,
        name: str = "memory",
        extents: Sequence[Extent] | None = None,
        known_zero: bool = False,
        block_size: int = 1,
        can_zero: bool = True,
    ) -> None:
        self.data = bytearray(data)
        self.name = name
        self.map = list(extents) if extents is not None else None
        self.known_zero = known_zero
        self.block_size = block_size
        self.io_size = 4096
        self.can_zero = can_zero
        self.needs_aligned_buffers = False
        self.flushes = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def _check(self, operation: str, offset: int, length: int) -> None:
        if offset % self.block_size or length % self.block_size:
            raise EndpointError(self.name, operation, "off the block grid", offset, length)
        if offset < 0 or offset + length > self.size:
            raise EndpointError(self.name, operation, "beyond the end", offset, length)

    async def read_into(self, offset: int, buf: memoryview) -> int:
        await trio.lowlevel.checkpoint()
        count = max(0, min(len(buf), self.size - offset))
        self._check("read", offset, count)
        buf[:count] = self.data[offset : offset + count]
        return count

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        await trio.lowlevel.checkpoint()
        if self.map is None:
            return all_data(offset, length)
        end = offset + length
        return [
            Extent(max(e.offset, offset), min(e.end, end) - max(e.offset, offset), e.kind)
            for e in self.map
            if e.end > offset and e.offset < end
        ]

    async def write(self, offset: int, data: memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self._check("write", offset, len(data))
        self.data[offset : offset + len(data)] = data

    async def write_zeroes(self, offset: int, length: int) -> bool:
        await trio.lowlevel.checkpoint()
        if not self.can_zero:
            return False
        self._check("zero", offset, length)
        self.data[offset : offset + length] = bytes(length)
        return True

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()
        self.flushes += 1


class _Wrapper:
    """Forwards every Protocol member to the wrapped endpoint."""

    def __init__(self, inner: Volume | Sink) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def block_size(self) -> int:
        return self.inner.block_size

    @property
    def io_size(self) -> int:
        return self.inner.io_size

    @property
    def known_zero(self) -> bool:
        return self._sink.known_zero

    @property
    def needs_aligned_buffers(self) -> bool:
        return self._sink.needs_aligned_buffers

    @property
    def _sink(self) -> Sink:
        if not hasattr(self.inner, "write"):
            raise TypeError(f"{self.inner.name} is not a sink")
        return self.inner  # type: ignore[return-value]

    async def read_into(self, offset: int, buf: memoryview) -> int:
        return await self.inner.read_into(offset, buf)

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return await self.inner.extents(offset, length)

    async def write(self, offset: int, data: memoryview) -> None:
        await self._sink.write(offset, data)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        return await self._sink.write_zeroes(offset, length)

    async def flush(self) -> None:
        await self._sink.flush()


@dataclass
class Faults:
    """What to break. Offsets fire when an I/O covers them."""

    read_eio_at: int | None = None
    write_eio_at: int | None = None
    short_read_at: int | None = None
    corrupt_write_at: int | None = None
    flush_eio: bool = False
    delay: float = 0.0
    reads_started: list[int] = field(default_factory=list)


class FaultyVolume(_Wrapper):
    """Wraps an endpoint and injects the chosen faults."""

    def __init__(self, inner: Volume | Sink, faults: Faults) -> None:
        super().__init__(inner)
        self.faults = faults

    @staticmethod
    def _hits(at: int | None, offset: int, length: int) -> bool:
        return at is not None and offset <= at < offset + length

    async def read_into(self, offset: int, buf: memoryview) -> int:
        self.faults.reads_started.append(offset)
        await trio.sleep(self.faults.delay)
        with map_errors(self.name, "read", offset, len(buf)):
            if self._hits(self.faults.read_eio_at, offset, len(buf)):
                raise OSError(errno.EIO, "Input/output error")
        got = await self.inner.read_into(offset, buf)
        if self._hits(self.faults.short_read_at, offset, len(buf)):
            return got // 2
        return got

    async def write(self, offset: int, data: memoryview) -> None:
        await trio.sleep(self.faults.delay)
        with map_errors(self.name, "write", offset, len(data)):
            if self._hits(self.faults.write_eio_at, offset, len(data)):
                raise OSError(errno.EIO, "Input/output error")
        at = self.faults.corrupt_write_at
        if at is not None and self._hits(at, offset, len(data)):
            spoiled = bytearray(data)
            spoiled[at - offset] ^= 0xFF
            data = memoryview(spoiled)
        await super().write(offset, data)

    async def flush(self) -> None:
        with map_errors(self.name, "flush"):
            if self.faults.flush_eio:
                raise OSError(errno.EIO, "Input/output error")
        await super().flush()


class RecordingSink(_Wrapper):
    """Wraps a sink and records ("write"|"zero", offset, length) and ("flush", 0, 0) in order."""

    def __init__(self, inner: Sink) -> None:
        super().__init__(inner)
        self.ops: list[tuple[str, int, int]] = []

    async def write(self, offset: int, data: memoryview) -> None:
        self.ops.append(("write", offset, len(data)))
        await super().write(offset, data)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        self.ops.append(("zero", offset, length))
        return await super().write_zeroes(offset, length)

    async def flush(self) -> None:
        self.ops.append(("flush", 0, 0))
        await super().flush()
