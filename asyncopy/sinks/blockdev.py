"""A block device as a sink: O_DIRECT, opened exclusively, zeroed with BLKZEROOUT.

An existing device may hold anything, so it is never known to read zeros unless the caller
asserts it (``--target-is-zero``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from asyncopy.access.posix import (
    FdVolume,
    block_device_geometry,
    block_zero_out,
    close_fd,
    open_fd,
    pwrite_full,
)
from asyncopy.core.endpoint import Extent, all_data


class BlockDeviceSink(FdVolume):
    needs_aligned_buffers = True

    def __init__(
        self, name: str, fd: int, geometry: tuple[int, int, int], known_zero: bool
    ) -> None:
        super().__init__(name, fd, *geometry)
        self.known_zero = known_zero

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return all_data(offset, length)

    async def write(self, offset: int, data: memoryview) -> None:
        await self.run("write", offset, len(data), pwrite_full, self.fd, data, offset)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        return await self.run("zero", offset, length, _zero_out, self.fd, offset, length)

    async def flush(self) -> None:
        await self.run("flush", None, None, os.fsync, self.fd)


def _zero_out(fd: int, offset: int, length: int) -> bool:
    try:
        block_zero_out(fd, offset, length)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
            return False
        raise
    return True


@asynccontextmanager
async def open_block_sink(
    path: str, *, target_is_zero: bool = False
) -> AsyncIterator[BlockDeviceSink]:
    """Open a block device for writing, exclusively (not mounted, not in use)."""
    fd = await open_fd(path, os.O_RDWR | os.O_DIRECT | os.O_EXCL, "destination")
    try:
        geometry = block_device_geometry(fd)
        yield BlockDeviceSink(path, fd, geometry, known_zero=target_is_zero)
    finally:
        close_fd(path, fd)
