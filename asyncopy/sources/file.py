"""A regular file as a source: opened read-only, allocation map from SEEK_DATA/SEEK_HOLE.

Reads bypass the page cache through a second, O_DIRECT descriptor where the filesystem
takes one (``asyncopy.access.posix.FdSource``); the buffered one serves the allocation map and the
last partial block of a file whose size is not a multiple of ``DIRECT_ALIGN``.

It holds a shared lock for the whole copy (``asyncopy.access.posix.take_lock``): another copy
cannot write it meanwhile, and a copy writing it already refuses this one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from asyncopy.access.posix import (
    DIRECT_ALIGN,
    FdSource,
    close_fd,
    open_direct,
    open_fd,
    seek_extents,
    take_lock,
)
from asyncopy.core.endpoint import Extent
from asyncopy.errors import map_errors


class FileSource(FdSource):
    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return await self.run("map", offset, length, seek_extents, self.fd, offset, length)


@asynccontextmanager
async def open_file_source(path: str) -> AsyncIterator[FileSource]:
    """Open a regular file read-only."""
    fd = await open_fd(path, os.O_RDONLY, "source")
    try:
        take_lock(path, fd, "source", exclusive=False)
        with map_errors(path, "stat"):
            st = os.fstat(fd)
        direct = await open_direct(path, os.O_RDONLY, "source")
        try:
            yield FileSource(path, fd, direct, (st.st_size, 1, st.st_blksize), DIRECT_ALIGN)
        finally:
            if direct is not None:
                close_fd(path, direct)
    finally:
        close_fd(path, fd)
