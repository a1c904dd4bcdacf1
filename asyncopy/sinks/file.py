"""A regular file as a sink.

A file that does not exist is created sparse at the source's size: it reads as zeros, so
holes are skipped and it stays thin. If the copy then fails, the file is removed. An existing
file is written in place like a volume: it must be at least as large as the source and is
not known to read zeros (unless the caller says so); zero runs are punched out as holes.

Writes go through a second descriptor opened with O_DIRECT when the filesystem allows it:
no copy into the page cache, no cache evicted by a large copy (Cinder's own copies use
``oflag=direct`` for the same reason), and less CPU per byte (the README's "Measured"). A
write that is not aligned to ``DIRECT_ALIGN`` in offset, length and memory (the end of an
odd-sized file) goes through the page cache.

The file is locked exclusively for the whole copy (``asyncopy.access.posix.take_lock``): a
second copy onto it, or onto a file a copy reads, is refused before it writes anything.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

from asyncopy.access.posix import (
    DIRECT_ALIGN,
    FdVolume,
    close_fd,
    get_label,
    is_aligned,
    open_direct,
    open_fd,
    pwrite_full,
    seek_extents,
    set_label,
    sync_and_drop_cache,
    take_lock,
    zero_file_range,
)
from asyncopy.core.endpoint import Extent
from asyncopy.errors import UsageError, map_errors


class FileSink(FdVolume):
    def __init__(
        self, name: str, fd: int, direct: int | None, size: int, io_size: int, known_zero: bool
    ) -> None:
        super().__init__(name, fd, size, 1, io_size)
        self.direct = direct
        self.known_zero = known_zero

    @property
    def needs_aligned_buffers(self) -> bool:
        return self.direct is not None

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return await self.run("map", offset, length, seek_extents, self.fd, offset, length)

    async def write(self, offset: int, data: memoryview) -> None:
        fd = self.fd
        if self.direct is not None and offset % DIRECT_ALIGN == 0 and is_aligned(data):
            fd = self.direct
        await self.run("write", offset, len(data), pwrite_full, fd, data, offset)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        return await self.run("zero", offset, length, zero_file_range, self.fd, offset, length)

    async def flush(self) -> None:
        await self.run("flush", None, None, sync_and_drop_cache, self.fd)

    async def tag(self, key: str) -> str | None:
        return await self.run("read label", None, None, get_label, self.fd, key)

    async def set_tag(self, key: str, value: str) -> bool:
        return await self.run("label", None, None, set_label, self.fd, key, value)


@asynccontextmanager
async def open_file_sink(
    path: str,
    *,
    create_size: int | None = None,
    target_is_zero: bool = False,
    keep_on_failure: bool = False,
) -> AsyncIterator[FileSink]:
    """Open a regular file for writing, or create it sized ``create_size`` when given (and
    remove it if the copy fails, unless ``keep_on_failure``)."""
    created = False
    async with _locked(path, create=create_size is not None) as (fd, exists):
        try:
            created = not exists
            with map_errors(path, "create"):
                if create_size is not None and created:
                    os.ftruncate(fd, create_size)
                st = os.fstat(fd)
            direct = await open_direct(path)
            try:
                known_zero = target_is_zero or not exists
                yield FileSink(path, fd, direct, st.st_size, st.st_blksize, known_zero=known_zero)
            finally:
                if direct is not None:
                    close_fd(path, direct)
        except BaseException:
            if created and not keep_on_failure:
                with suppress(OSError):  # a failed copy leaves no half-written file behind
                    os.unlink(path)
            raise


@asynccontextmanager
async def _locked(path: str, *, create: bool) -> AsyncIterator[tuple[int, bool]]:
    """The file opened for writing under an exclusive lock, and whether it existed.

    An existing file is locked through a read-only descriptor before it is opened for
    writing: that open would break a read lease on it (a copy reading it holds one:
    ``ReadLease``), even were this copy then refused. A file made meanwhile by another copy
    racing this one is opened as one that exists, and its lock decides. Where a read-only
    descriptor cannot hold an exclusive lock (NFS, which has no leases either), the writable
    one takes it.
    """
    if create:
        try:
            fd = await open_fd(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, "destination")
        except UsageError as exc:
            if not isinstance(exc.__cause__, FileExistsError):
                raise
        else:
            try:
                take_lock(path, fd, "destination", exclusive=True)
                yield fd, False
            finally:
                close_fd(path, fd)
            return
    guard = await open_fd(path, os.O_RDONLY, "destination")
    held: int | None = guard  # the descriptor the lock belongs to, until it is closed
    try:
        try:
            take_lock(path, guard, "destination", exclusive=True)
        except UsageError as exc:
            if isinstance(exc.__cause__, BlockingIOError):
                raise
            held = None
            close_fd(path, guard)
        fd = await open_fd(path, os.O_RDWR, "destination")
        try:
            if held is None:
                take_lock(path, fd, "destination", exclusive=True)
            yield fd, True
        finally:
            close_fd(path, fd)
    finally:
        if held is not None:
            close_fd(path, held)
