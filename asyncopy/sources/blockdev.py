"""A block device as a source: read-only, O_DIRECT, no allocation map (all data).

Reads aligned to the logical block size go through an O_DIRECT descriptor (where the device
takes one); a buffered descriptor serves the geometry ioctls and any read off that grid.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from asyncopy.access.posix import FdSource, block_device_geometry, close_fd, open_direct, open_fd
from asyncopy.core.endpoint import Extent, all_data
from asyncopy.errors import map_errors


class BlockDeviceSource(FdSource):
    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return all_data(offset, length)


@asynccontextmanager
async def open_block_source(path: str) -> AsyncIterator[BlockDeviceSource]:
    """Open a block device read-only, bypassing the page cache."""
    fd = await open_fd(path, os.O_RDONLY, "source")
    try:
        with map_errors(path, "geometry"):
            geometry = block_device_geometry(fd)
        direct = await open_direct(path, os.O_RDONLY, "source")
        try:
            yield BlockDeviceSource(path, fd, direct, geometry, geometry[1])
        finally:
            if direct is not None:
                close_fd(path, direct)
    finally:
        close_fd(path, fd)
