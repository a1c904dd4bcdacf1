"""A block device as a source: read-only, O_DIRECT, no allocation map (all data)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from asyncopy.endpoint import Extent, all_data
from asyncopy.posix import FdVolume, block_device_geometry, close_fd, open_fd


class BlockDeviceSource(FdVolume):
    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return all_data(offset, length)


@asynccontextmanager
async def open_block_source(path: str) -> AsyncIterator[BlockDeviceSource]:
    """Open a block device read-only, bypassing the page cache."""
    fd = await open_fd(path, os.O_RDONLY | os.O_DIRECT, "source")
    try:
        size, block, io_size = block_device_geometry(fd)
        yield BlockDeviceSource(path, fd, size, block, io_size)
    finally:
        close_fd(path, fd)
