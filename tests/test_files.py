"""Regular-file endpoints on a real filesystem."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from asyncopy.access.posix import DIRECT_ALIGN, is_aligned, pread_direct
from asyncopy.api import copy_sync, copy_uri
from asyncopy.core.endpoint import ExtentKind
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.core.pipeline import aligned_buffer
from asyncopy.core.progress import Progress
from asyncopy.errors import EndpointError
from asyncopy.sinks.file import FileSink
from asyncopy.sources.file import FileSource
from asyncopy.specs import open_sink, open_source
from asyncopy.testing import Faults, FaultyVolume
from tests.conftest import MiB, open_fds, write_pattern

LAYOUT = [(0, 4096), (1 * MiB, 64 * 1024), (5 * MiB + 4096, 8192)]


async def test_seek_extents_report_data_and_holes(tmp_path: Path) -> None:
    path = tmp_path / "src.img"
    write_pattern(path, 8 * MiB, LAYOUT)
    async with open_source(str(path)) as volume:
        extents = await volume.extents(0, volume.size)
    data = [(e.offset, e.length) for e in extents if e.kind is ExtentKind.DATA]
    assert data == LAYOUT
    assert sum(e.length for e in extents) == 8 * MiB


def test_a_new_destination_is_an_exact_sparse_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    image = write_pattern(src, 9 * MiB + 123, [*LAYOUT, (9 * MiB, 123)])
    result = copy_sync(str(src), str(dst), CopyOptions(verify=True))
    assert dst.read_bytes() == image
    assert os.stat(dst).st_blocks <= os.stat(src).st_blocks
    assert result.bytes_skipped > 8 * MiB
    assert result.verified


def test_an_existing_dirty_file_ends_up_equal_with_holes_punched(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    image = write_pattern(src, 8 * MiB, LAYOUT)
    dst.write_bytes(random.Random(3).randbytes(8 * MiB + 4096))
    result = copy_sync(str(src), str(dst))
    assert dst.read_bytes()[: 8 * MiB] == image
    assert result.bytes_skipped == 0
    assert result.bytes_zeroed > 7 * MiB
    assert os.stat(dst).st_blocks * 512 < 1 * MiB  # zeroing punched holes


async def test_a_failed_copy_removes_the_file_it_created_and_closes_everything(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 8 * MiB, LAYOUT)
    before = open_fds()

    async def fail() -> None:
        async with open_source(str(src)) as volume, open_sink(str(dst), size=volume.size) as sink:
            await copy(FaultyVolume(volume, Faults(read_eio_at=1 * MiB)), sink)

    with pytest.raises(EndpointError, match=r"read failed on .*src.img at offset 1048576"):
        await fail()
    assert not dst.exists()
    assert open_fds() == before


async def test_cancellation_mid_copy_releases_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 16 * MiB, [(0, 16 * MiB)])
    before = open_fds()
    with trio.move_on_after(0.2) as scope:
        async with open_source(str(src)) as volume, open_sink(str(dst), size=volume.size) as sink:
            slow = FaultyVolume(volume, Faults(delay=0.05))
            await copy(slow, sink, CopyOptions(chunk_size=1 * MiB, depth=2))
    assert scope.cancelled_caught
    assert not dst.exists()
    assert open_fds() == before


async def test_the_source_is_opened_read_only(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 4 * MiB, LAYOUT)
    modes: list[int] = []

    def look(_: Progress) -> None:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target == str(src):
                flags = Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
                modes.append(int(flags, 8) & os.O_ACCMODE)

    await copy_uri(str(src), str(dst), CopyOptions(progress_interval=0), progress=look)
    assert modes
    assert set(modes) == {os.O_RDONLY}


async def test_a_file_sink_writes_aligned_buffers_with_o_direct(tmp_path: Path) -> None:
    dst = tmp_path / "dst.img"
    async with open_sink(str(dst), size=3 * MiB + 1000) as sink:
        assert isinstance(sink, FileSink)
        assert sink.direct is not None  # this filesystem (ext4 or tmpfs) takes O_DIRECT
        assert sink.needs_aligned_buffers
        flags = fcntl.fcntl(sink.direct, fcntl.F_GETFL)
        assert flags & os.O_DIRECT
        assert flags & os.O_ACCMODE == os.O_WRONLY


def test_only_aligned_writable_buffers_go_direct() -> None:
    buf = aligned_buffer(3 * DIRECT_ALIGN)
    assert is_aligned(buf)
    assert is_aligned(buf[DIRECT_ALIGN:])
    assert not is_aligned(buf[1 : 1 + DIRECT_ALIGN])  # address off the grid
    assert not is_aligned(buf[: DIRECT_ALIGN + 1])  # length off the grid
    assert not is_aligned(memoryview(bytes(DIRECT_ALIGN)))  # not ours: never assumed
    assert not is_aligned(buf[:0])


def test_an_odd_sized_file_copies_exactly_through_both_descriptors(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    size = 5 * MiB + 777
    src.write_bytes(random.Random(3).randbytes(size))
    dst.write_bytes(b"\xff" * size)  # existing and dirty: every byte must be written
    result = copy_sync(str(src), str(dst), CopyOptions(chunk_size=MiB, verify=True))
    assert result.verified
    assert dst.read_bytes() == src.read_bytes()


ODD_SIZES = [1, 4095, 4097, 12345, 1 * MiB + 1, 3 * MiB - 512]


def takes_o_direct(directory: Path) -> bool:
    """Whether the filesystem holding ``directory`` lets a file be opened with O_DIRECT."""
    probe = directory / ".probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mount: a real filesystem that refuses O_DIRECT at open (EINVAL)."""
    mount_point = tmp_path / "ramfs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(mount_point)], check=False)
    assert done.returncode == 0, "cannot mount a ramfs (the tests run as root)"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture(params=["disk", "tmpfs", "ramfs"])
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """tmp_path (ext4 here), a directory on /dev/shm, and a ramfs."""
    if request.param == "ramfs":
        yield request.getfixturevalue("ramfs")
    elif request.param == "tmpfs":
        shm = Path("/dev/shm")
        assert shm.is_dir(), "no /dev/shm"
        made = Path(shm / f"asyncopy-{os.getpid()}-{tmp_path.name}")
        made.mkdir()
        try:
            yield made
        finally:
            shutil.rmtree(made)
    else:
        yield tmp_path


@pytest.mark.parametrize("size", ODD_SIZES)
def test_odd_sized_files_copy_byte_exact_wherever_they_are(directory: Path, size: int) -> None:
    src, dst = directory / "src.img", directory / "dst.img"
    src.write_bytes(random.Random(size).randbytes(size))
    result = copy_sync(str(src), str(dst), CopyOptions(chunk_size=MiB, verify=True))
    assert result.verified
    assert result.bytes_read == size
    assert dst.read_bytes() == src.read_bytes()


async def test_the_source_reads_through_o_direct_where_the_filesystem_takes_it(
    directory: Path,
) -> None:
    src = directory / "src.img"
    src.write_bytes(random.Random(1).randbytes(2 * DIRECT_ALIGN + 10))
    async with open_source(str(src)) as volume:
        assert isinstance(volume, FileSource)
        assert (volume.direct is not None) == takes_o_direct(directory)
        flags = {fd: _fdinfo_flags(fd) for fd in (volume.fd, volume.direct) if fd is not None}
        buf = aligned_buffer(volume.size)
        assert await volume.read_into(0, buf) == volume.size
    assert bytes(buf) == src.read_bytes()
    assert not flags[volume.fd] & os.O_DIRECT
    if volume.direct is not None:
        assert flags[volume.direct] & os.O_DIRECT
    assert {flag & os.O_ACCMODE for flag in flags.values()} == {os.O_RDONLY}


async def test_a_source_on_a_filesystem_that_refuses_o_direct_is_read_buffered(
    ramfs: Path,
) -> None:
    src = ramfs / "src.img"
    src.write_bytes(random.Random(4).randbytes(DIRECT_ALIGN + 1))
    async with open_source(str(src)) as volume:
        assert isinstance(volume, FileSource)
        assert volume.direct is None
        buf = aligned_buffer(volume.size)
        assert await volume.read_into(0, buf) == volume.size
    assert bytes(buf) == src.read_bytes()


def _fdinfo_flags(fd: int) -> int:
    """The open flags of one of this process's descriptors, as the kernel reports them."""
    return int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)


def _cached_bytes(path: Path) -> int:
    """How many bytes of ``path`` the page cache holds (util-linux fincore)."""
    done = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.split()[0])


def test_a_source_read_leaves_the_page_cache_empty_but_for_its_last_partial_page(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    size = 8 * MiB + 100
    src.write_bytes(random.Random(7).randbytes(size))
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert _cached_bytes(src) == 0, "the test directory keeps a file's pages (tmpfs?)"
    copy_sync(str(src), str(dst), CopyOptions(chunk_size=MiB))
    assert _cached_bytes(src) <= DIRECT_ALIGN  # the tail, read through the buffered descriptor
    assert dst.read_bytes() == src.read_bytes()
    assert _cached_bytes(src) >= 8 * MiB  # a buffered read fills it: fincore does see it


def test_direct_reads_return_the_bytes_of_buffered_ones_on_and_off_the_grid(
    tmp_path: Path,
) -> None:
    path = tmp_path / "src.img"
    content = random.Random(2).randbytes(3 * DIRECT_ALIGN + 57)
    path.write_bytes(content)
    fd = os.open(path, os.O_RDONLY)
    direct = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        whole = aligned_buffer(8 * DIRECT_ALIGN)
        for offset in (0, DIRECT_ALIGN, 3 * DIRECT_ALIGN, 100, len(content), len(content) + 9):
            for length in (0, 1, DIRECT_ALIGN, 2 * DIRECT_ALIGN + 57, 5 * DIRECT_ALIGN):
                for shift in (0, 8):  # a page-aligned buffer, and one that is not
                    buf = whole[shift : shift + length]
                    got = pread_direct(fd, direct, buf, offset, DIRECT_ALIGN)
                    expected = content[offset : offset + length]
                    assert (got, bytes(buf[:got])) == (len(expected), expected)
    finally:
        os.close(direct)
        os.close(fd)
