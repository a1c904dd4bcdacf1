"""Block-device endpoints on real loop devices (512- and 4096-byte logical blocks)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from asyncopy.api import copy_sync, copy_uri, verify_uris
from asyncopy.core.engine import CopyOptions
from asyncopy.core.pipeline import aligned_buffer
from asyncopy.errors import EndpointError, UsageError
from asyncopy.sources.blockdev import BlockDeviceSource
from asyncopy.specs import open_source
from tests.conftest import MakeLoop, MiB, write_pattern

LAYOUT = [(0, 4096), (3 * MiB, 256 * 1024), (7 * MiB, 1 * MiB)]


@pytest.mark.parametrize("sector", [512, 4096])
async def test_geometry(make_loop: MakeLoop, sector: int) -> None:
    device, _ = make_loop(8 * MiB, sector_size=sector)
    async with open_source(device) as volume:
        assert (volume.size, volume.block_size) == (8 * MiB, sector)


@pytest.mark.parametrize("sector", [512, 4096])
def test_file_to_dirty_device_and_back(tmp_path: Path, make_loop: MakeLoop, sector: int) -> None:
    src, back = tmp_path / "src.img", tmp_path / "back.img"
    image = write_pattern(src, 8 * MiB, LAYOUT)
    dirt = random.Random(5).randbytes(10 * MiB)
    device, backing = make_loop(10 * MiB, sector_size=sector, fill=dirt)
    to_device = copy_sync(str(src), device, CopyOptions(verify=True))
    assert to_device.bytes_zeroed > 6 * MiB  # holes zeroed with BLKZEROOUT, not trusted
    content = backing.read_bytes()
    assert content[: 8 * MiB] == image
    assert content[8 * MiB :] == dirt[8 * MiB :]
    back_result = copy_sync(device, str(back), CopyOptions(verify=True))
    assert back.read_bytes()[: 8 * MiB] == image
    assert back_result.bytes_total == 10 * MiB


def test_unaligned_source_onto_a_4k_device_keeps_the_bytes_after_it(
    tmp_path: Path, make_loop: MakeLoop
) -> None:
    size = 4 * MiB + 1000
    src = tmp_path / "src.img"
    image = write_pattern(src, size, [(0, 100), (4 * MiB - 10, 1010)])
    dirt = b"\xee" * (5 * MiB)
    device, backing = make_loop(5 * MiB, sector_size=4096, fill=dirt)
    copy_sync(str(src), device, CopyOptions(verify=True))
    content = backing.read_bytes()
    assert content[:size] == image
    assert content[size:] == dirt[size:]


def test_target_is_zero_skips_holes_on_a_zeroed_device(tmp_path: Path, make_loop: MakeLoop) -> None:
    src = tmp_path / "src.img"
    image = write_pattern(src, 8 * MiB, LAYOUT)
    device, backing = make_loop(8 * MiB)
    result = copy_sync(str(src), device, CopyOptions(verify=True), target_is_zero=True)
    assert result.bytes_zeroed == 0
    assert result.bytes_written == 4096 + 256 * 1024 + 1 * MiB
    assert backing.read_bytes() == image


def test_a_device_too_small_is_refused_untouched(tmp_path: Path, make_loop: MakeLoop) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, 8 * MiB, LAYOUT)
    device, backing = make_loop(4 * MiB, fill=b"\x77" * (4 * MiB))
    with pytest.raises(UsageError, match="too small"):
        copy_sync(str(src), device)
    assert backing.read_bytes() == b"\x77" * (4 * MiB)


async def test_a_read_only_device_is_a_source_and_writes_to_it_fail(
    tmp_path: Path, make_loop: MakeLoop
) -> None:
    device, backing = make_loop(4 * MiB, fill=random.Random(9).randbytes(4 * MiB), read_only=True)
    dst = tmp_path / "dst.img"
    write_pattern(dst, 1 * MiB, [(0, 4096)])
    with pytest.raises(EndpointError, match=f"failed on {device} at offset 0"):
        await copy_uri(str(dst), device)
    dst.unlink()
    await copy_uri(device, str(dst), CopyOptions(verify=True))
    assert dst.read_bytes() == backing.read_bytes()
    assert await verify_uris(device, str(dst), 1 * MiB, 4) == []


def _fdinfo_flags(fd: int) -> int:
    return int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)


@pytest.mark.parametrize("sector", [512, 4096])
async def test_a_device_source_reads_through_o_direct_on_and_off_its_grid(
    make_loop: MakeLoop, sector: int
) -> None:
    size = 1 * MiB + 3 * sector  # not a multiple of 4096 with 512-byte sectors
    device, backing = make_loop(size, sector_size=sector, fill=random.Random(6).randbytes(size))
    content = backing.read_bytes()
    async with open_source(device) as volume:
        assert isinstance(volume, BlockDeviceSource)
        assert volume.direct is not None
        assert volume.align == sector
        assert _fdinfo_flags(volume.direct) & (os.O_DIRECT | os.O_ACCMODE) == os.O_DIRECT
        assert _fdinfo_flags(volume.fd) & (os.O_DIRECT | os.O_ACCMODE) == os.O_RDONLY
        whole = aligned_buffer(size + sector)
        assert await volume.read_into(0, whole[:size]) == size
        assert bytes(whole[:size]) == content
        odd = bytearray(1000)  # off the grid, in memory that is not aligned: buffered
        assert await volume.read_into(size - 700, memoryview(odd)) == 700
        assert bytes(odd[:700]) == content[-700:]


@pytest.mark.parametrize("sector", [512, 4096])
def test_a_device_copies_byte_exact_to_a_file(
    tmp_path: Path, make_loop: MakeLoop, sector: int
) -> None:
    size = 2 * MiB + 5 * sector
    device, backing = make_loop(size, sector_size=sector, fill=random.Random(8).randbytes(size))
    dst = tmp_path / "dst.img"
    result = copy_sync(device, str(dst), CopyOptions(chunk_size=MiB, verify=True))
    assert result.verified
    assert dst.read_bytes() == backing.read_bytes()
