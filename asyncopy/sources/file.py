"""A regular file as a source: opened read-only, allocation map from SEEK_DATA/SEEK_HOLE."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from asyncopy.endpoint import Extent
from asyncopy.posix import FdVolume, close_fd, open_fd, seek_extents


class FileSource(FdVolume):
    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return await self.run("map", offset, length, seek_extents, self.fd, offset, length)


@asynccontextmanager
async def open_file_source(path: str) -> AsyncIterator[FileSource]:
    """Open a regular file read-only."""
    fd = await open_fd(path, os.O_RDONLY, "source")
    try:
        st = os.fstat(fd)
        yield FileSource(path, fd, st.st_size, 1, st.st_blksize)
    finally:
        close_fd(path, fd)
