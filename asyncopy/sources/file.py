"""A regular file as a source: opened read-only, allocation map from SEEK_DATA/SEEK_HOLE.

Reads bypass the page cache through a second, O_DIRECT descriptor where the filesystem
takes one (``asyncopy.access.posix.FdSource``); the buffered one serves the allocation map and the
last partial block of a file whose size is not a multiple of ``DIRECT_ALIGN``.

A file another process writes while it is read gives a copy of no single moment, so the
source is guarded as the head of an RBD image is (``Watched``):
- a shared lock for the whole copy (``take_lock``): another copy cannot write it, and a copy
  writing it already refuses this one;
- a read lease (``ReadLease``): a process that opens it for writing or truncates it meanwhile
  fails the copy at the next read (and is let through at once);
- its size, modification and change times (``st_mtime_ns``, ``st_ctime_ns``), taken at open
  and compared once every read is done: any write or truncation moves them, also one by a
  process that had the file open for writing before (no lease then) or on NFS (no leases).
A block device source tells nothing of the kind (no times, no leases): it is not guarded.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from asyncopy.access.posix import (
    DIRECT_ALIGN,
    FdSource,
    ReadLease,
    close_fd,
    open_direct,
    open_fd,
    seek_extents,
    take_lock,
)
from asyncopy.core.endpoint import Extent
from asyncopy.errors import EndpointError, map_errors

WRITTEN = "another process opened it for writing or truncated it while it was read"
CHANGED = "it was written or truncated while it was read (its size or times moved)"
HINT = ": its bytes are of no single moment; copy a file nothing writes meanwhile"


class FileSource(FdSource):
    lease: ReadLease
    opened: str | None  # ``version()`` at open

    async def read_into(self, offset: int, buf: memoryview) -> int:
        got = await super().read_into(offset, buf)
        if not self.lease.intact():
            raise EndpointError(self.name, "read", WRITTEN + HINT, offset, len(buf))
        return got

    async def confirm_unchanged(self) -> None:
        """A CopyFailed if the file may have been written since it was opened; every read is
        done, so the lease is given up."""
        if not self.lease.intact():
            raise EndpointError(self.name, "read", WRITTEN + HINT)
        self.lease.release()
        if self.version() != self.opened:
            raise EndpointError(self.name, "read", CHANGED + HINT)

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return await self.run("map", offset, length, seek_extents, self.fd, offset, length)


@asynccontextmanager
async def open_file_source(path: str) -> AsyncIterator[FileSource]:
    """Open a regular file read-only."""
    fd = await open_fd(path, os.O_RDONLY, "source")
    try:
        take_lock(path, fd, "source", exclusive=False)
        lease = ReadLease(fd)
        with map_errors(path, "stat"):
            st = os.fstat(fd)
        direct = await open_direct(path, os.O_RDONLY, "source")
        try:
            source = FileSource(path, fd, direct, (st.st_size, 1, st.st_blksize), DIRECT_ALIGN)
            source.lease = lease
            with map_errors(path, "stat"):
                source.opened = source.version()
            yield source
        finally:
            if direct is not None:
                close_fd(path, direct)
    finally:
        close_fd(path, fd)
