"""Volumes reached through a POSIX file descriptor: regular files and block devices.

Every blocking call runs in a worker thread under the volume's own limiter; errors become
``EndpointError`` naming the path, the operation and the offset.

Sources read through a second descriptor opened with O_DIRECT (``FdSource``), as sinks write:
no copy through the page cache and no cache evicted by a large copy. ``open_direct`` is the
one place that decides whether a path takes O_DIRECT (ramfs and some other filesystems refuse
it at open with EINVAL); when it does not, every read is buffered. The engine reads into
page-aligned buffers at offsets on its sparse-size grid (4 KiB by default), so all of a read
goes direct but the last partial block of an odd-sized file, which ``pread_direct`` reads
through the buffered descriptor, as it does any read off the grid.

Two copies never write one file, nor one writes a file another reads: a sink holds an
exclusive ``flock`` on its file for the whole copy and a source a shared one (``take_lock``),
taken without waiting, so the second copy is refused before it writes anything. flock locks
the open file, whatever its name, and goes with the last descriptor (a killed copy's too); on
NFS the kernel turns it into a whole-file byte-range lock that the server arbitrates among
hosts. It binds only those that take it: other writers are the ``ReadLease``'s business.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import signal
import stat
import struct
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import trio

from asyncopy.core.endpoint import Extent, ExtentKind, Identity
from asyncopy.errors import UsageError, map_errors

T = TypeVar("T")

IO_THREADS = 16

# <linux/fs.h>
BLKSSZGET = 0x1268
BLKIOMIN = 0x1278
BLKIOOPT = 0x1279
BLKZEROOUT = 0x127F
BLKGETSIZE64 = 0x80081272
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int]:
    call = ctypes.CDLL(None, use_errno=True).fallocate
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return call


class FdVolume:
    """The reading half shared by file and block-device endpoints."""

    def __init__(self, name: str, fd: int, size: int, block_size: int, io_size: int) -> None:
        self.name = name
        self.fd = fd
        self.size = size
        self.block_size = block_size
        self.io_size = io_size
        self._limiter = trio.CapacityLimiter(IO_THREADS)

    async def run(
        self,
        operation: str,
        offset: int | None,
        length: int | None,
        fn: Callable[..., T],
        *args: object,
    ) -> T:
        """Run a blocking call in a thread; an OSError names this volume and the offset."""
        with map_errors(self.name, operation, offset, length):
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def read_into(self, offset: int, buf: memoryview) -> int:
        return await self.run("read", offset, len(buf), pread_full, self.fd, buf, offset)

    def identities(self) -> frozenset[Identity]:
        return stat_identities(os.fstat(self.fd))

    def version(self) -> str | None:
        """A file's size and its modification and change times (any write moves them); a
        block device's size, all it can tell."""
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            return f"size {self.size}"
        return f"size {st.st_size} modified {st.st_mtime_ns} changed {st.st_ctime_ns}"

    def version_tells_writes(self) -> bool:
        return stat.S_ISREG(os.fstat(self.fd).st_mode)


class FdSource(FdVolume):
    """A source read through ``direct`` (O_DIRECT, or None where refused) where aligned to
    ``align``, and through the buffered ``fd`` otherwise; both are read-only."""

    def __init__(
        self,
        name: str,
        fd: int,
        direct: int | None,
        geometry: tuple[int, int, int],
        align: int,
    ) -> None:
        super().__init__(name, fd, *geometry)
        self.direct = direct
        self.align = align

    async def read_into(self, offset: int, buf: memoryview) -> int:
        return await self.run(
            "read", offset, len(buf), pread_direct, self.fd, self.direct, buf, offset, self.align
        )


def take_lock(name: str, fd: int, role: str, *, exclusive: bool) -> None:
    """flock ``fd``, exclusively for a sink or shared for a source; a UsageError (nothing
    written yet) when another copy holds a lock that conflicts."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        doing = "read or written" if exclusive else "written"
        raise UsageError(f"{role} {name} is being {doing} by another copy (locked)") from exc
    except OSError as exc:
        raise UsageError(f"{role} {name}: cannot lock: {exc.strerror}") from exc


class ReadLease:
    """A read lease (``F_SETLEASE F_RDLCK``) on a read-only descriptor: while it is held, a
    process that opens the file for writing, or truncates it, waits in the kernel, and the
    lease shows it (``F_GETLEASE`` is no longer F_RDLCK). ``intact`` then gives the lease up
    at once, so that the writer waits no longer, and says the file may change from now on.

    The kernel would signal the break with SIGIO, whose default action ends the process: the
    signal is made SIGURG (ignored by default) and then sent to no one. Without a lease
    (another process has the file open for writing already, a filesystem without leases such
    as NFS, a file not owned by a caller without CAP_LEASE) ``intact`` is always True and the
    file's times are all there is to go by.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.broken = False
        try:
            fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
            self.held = True
        except OSError:
            self.held = False

    def intact(self) -> bool:
        """False once another process has opened the file for writing since the lease."""
        if self.held and fcntl.fcntl(self.fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK:
            self.broken = True
            self.release()
        return not self.broken

    def release(self) -> None:
        if self.held:
            self.held = False
            with suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def pread_full(fd: int, buf: memoryview, offset: int) -> int:
    """Read until buf is full or the end is reached; return the count."""
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


def pread_direct(fd: int, direct: int | None, buf: memoryview, offset: int, align: int) -> int:
    """``pread_full``, through ``direct`` for the whole ``align`` blocks of a read whose offset
    and buffer are aligned; through ``fd`` for the rest (a partial last block)."""
    done = 0
    if direct is not None and offset % align == 0 and buf and address(buf) % align == 0:
        body = len(buf) - len(buf) % align
        while done < body:
            got = os.preadv(direct, [buf[done:body]], offset + done)
            done += got
            if got == 0 or got % align:  # the end of the file: fd reads what is left, if any
                break
    return done + pread_full(fd, buf[done:], offset + done)


def address(buf: memoryview) -> int:
    """The memory address of a writable, non-empty buffer."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def pwrite_full(fd: int, data: memoryview, offset: int) -> None:
    """Write all of data; a write that makes no progress is an error."""
    done = 0
    while done < len(data):
        put = os.pwritev(fd, [data[done:]], offset + done)
        if put <= 0:
            raise OSError(errno.EIO, "write made no progress")
        done += put


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _fallocate()(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


MAP_EXTENTS = 1 << 18  # a 1 GiB window of 4 KiB runs of data and holes, each


def seek_extents(fd: int, offset: int, length: int) -> list[Extent]:
    """The data and hole runs of a file from SEEK_DATA/SEEK_HOLE: a hole of any length costs
    one call. Past ``MAP_EXTENTS`` runs the rest of the range is reported as data (read, not
    trusted), so a map of any range stays bounded."""
    end = offset + length
    extents: list[Extent] = []
    pos = offset
    while pos < end:
        if len(extents) >= MAP_EXTENTS:
            extents.append(Extent(pos, end - pos, ExtentKind.DATA))
            break
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no data after pos
                raise
            data = end
        data = min(data, end)
        if data > pos:
            extents.append(Extent(pos, data - pos, ExtentKind.HOLE))
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        extents.append(Extent(data, hole - data, ExtentKind.DATA))
        pos = hole
    return extents


XATTR_PREFIX = "user."  # where an unprivileged label lives on Linux filesystems
_NO_XATTRS = (errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.ENOSPC, errno.E2BIG)


def get_label(fd: int, key: str) -> str | None:
    """The file's extended attribute ``user.KEY``; None when it has none (or none can be)."""
    try:
        return os.getxattr(fd, XATTR_PREFIX + key).decode(errors="replace")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, *_NO_XATTRS):
            return None
        raise


def set_label(fd: int, key: str, value: str) -> bool:
    """Set ``user.KEY``; False where the filesystem takes no extended attributes."""
    try:
        os.setxattr(fd, XATTR_PREFIX + key, value.encode())
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return False
        raise
    return True


def block_device_geometry(fd: int) -> tuple[int, int, int]:
    """(size, logical block size, preferred I/O size) of a block device."""
    size = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0]
    block = struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0]
    opt = struct.unpack("I", fcntl.ioctl(fd, BLKIOOPT, b"\0" * 4))[0]
    minimum = struct.unpack("I", fcntl.ioctl(fd, BLKIOMIN, b"\0" * 4))[0]
    return size, block, max(opt, minimum, block)


def block_zero_out(fd: int, offset: int, length: int) -> None:
    fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", offset, length))


def stat_identities(st: os.stat_result) -> frozenset[Identity]:
    """A regular file's inode; a block device's number, and a loop device's backing file."""
    if not stat.S_ISBLK(st.st_mode):
        return frozenset({("inode", st.st_dev, st.st_ino)})
    found: set[Identity] = {("device", st.st_rdev)}
    backing = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/loop/backing_file"
    with suppress(OSError):  # not a loop device, or its backing file is gone
        found |= stat_identities(os.stat(Path(backing).read_text().rstrip("\n")))
    return frozenset(found)


def path_identities(path: str | os.PathLike[str]) -> frozenset[Identity]:
    """``stat_identities`` of what ``path`` names (links followed); empty if nothing."""
    try:
        return stat_identities(os.stat(path))
    except OSError:
        return frozenset()


def kind_of(path: str) -> str | None:
    """'file', 'block' or None when the path does not exist; anything else is bad input."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from exc
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISBLK(mode):
        return "block"
    raise UsageError(f"{path}: not a regular file or block device")


DIRECT_ALIGN = 4096  # offsets, lengths and buffers of O_DIRECT I/O: any logical block size


def is_aligned(data: memoryview) -> bool:
    """Whether ``data`` may be written with O_DIRECT: its address and length are aligned."""
    if data.readonly or not data or len(data) % DIRECT_ALIGN:
        return False  # a read-only buffer (bytes) is not ours to align: never assumed
    return address(data) % DIRECT_ALIGN == 0


async def open_direct(
    path: str, access: int = os.O_WRONLY, what: str = "destination"
) -> int | None:
    """A second descriptor on an open file, for I/O with O_DIRECT (``access`` is O_WRONLY
    or O_RDONLY); None where the filesystem refuses O_DIRECT."""
    try:
        flags = access | os.O_DIRECT | os.O_CLOEXEC
        return await trio.to_thread.run_sync(os.open, path, flags)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise UsageError(f"{what} {path}: cannot open: {exc.strerror}") from exc


async def open_fd(path: str, flags: int, what: str) -> int:
    """Open a path in a thread; failure is bad input, reported in one line."""
    try:
        return await trio.to_thread.run_sync(os.open, path, flags | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot open: {exc.strerror}") from exc


def close_fd(name: str, fd: int) -> None:
    """Close synchronously (it must happen under cancellation too); an error fails the copy."""
    with map_errors(name, "close"):
        os.close(fd)


def zero_file_range(fd: int, offset: int, length: int) -> bool:
    """Punch a hole (or zero the range) in a file; False if the filesystem can do neither."""
    for mode in (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE):
        try:
            fallocate(fd, mode, offset, length)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
    return False


def sync_and_drop_cache(fd: int) -> None:
    """Make writes durable, then drop the now clean cached pages so re-reads hit the disk."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
