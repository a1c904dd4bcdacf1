from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from devtools import devstack
from devtools.images import write_sparse
from devtools.loopdev import loop_device
from tests.cephtools import Cluster

MiB = 1 << 20

MakeLoop = Callable[..., tuple[str, Path]]


def write_pattern(path: Path, size: int, data_at: list[tuple[int, int]], seed: int = 1) -> bytes:
    """A sparse file of ``size`` with random bytes at (offset, length) runs; returns its bytes."""
    rng = random.Random(seed)
    image = bytearray(size)
    runs = [(offset, rng.randbytes(length)) for offset, length in data_at]
    for offset, chunk in runs:
        image[offset : offset + len(chunk)] = chunk
    write_sparse(path, size, runs)
    return bytes(image)


@pytest.fixture
def make_loop(tmp_path: Path) -> Iterator[MakeLoop]:
    """Attach loop devices over new backing files; all are detached at the end of the test."""
    with ExitStack() as stack:
        count = 0

        def make(
            size: int, *, sector_size: int = 512, fill: bytes | None = None, read_only: bool = False
        ) -> tuple[str, Path]:
            nonlocal count
            count += 1
            backing = tmp_path / f"backing{count}.img"
            with open(backing, "wb") as out:
                out.truncate(size)
                if fill is not None:
                    out.write(fill)
            device = stack.enter_context(
                loop_device(backing, sector_size=sector_size, read_only=read_only)
            )
            return device, backing

        yield make


def poke(path: Path, offset: int, data: bytes) -> None:
    """Change bytes of a file in place."""
    with open(path, "r+b") as out:
        out.seek(offset)
        out.write(data)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    """One dev stack (Ceph and tgtd) for the whole session, started by the project's code."""
    directory = tmp_path_factory.mktemp("devstack")
    started = devstack.up(directory, osd_bytes=2 << 30)
    try:
        yield started
    finally:
        devstack.down(directory)


@pytest.fixture
def ceph(stack: devstack.Stack) -> Cluster:
    return Cluster(stack)


MakeLun = Callable[..., devstack.Lun]


@pytest.fixture
def make_lun(stack: devstack.Stack) -> Iterator[MakeLun]:
    """Targets with one file-backed LUN each in the session's tgtd; removed after the test."""
    made: list[devstack.Lun] = []

    def make(
        size: int,
        *,
        fill: bytes | None = None,
        thin: bool = True,
        read_only: bool = False,
        chap: tuple[str, str] | None = None,
        block_size: int = 512,
    ) -> devstack.Lun:
        name = f"lun-{uuid.uuid4().hex[:8]}"
        lun = devstack.add_lun(
            stack, name, size, thin=thin, read_only=read_only, chap=chap, block_size=block_size
        )
        made.append(lun)
        if fill is not None:
            with open(lun.backing, "r+b") as out:
                out.write(fill)
        return lun

    yield make
    for lun in made:
        devstack.remove_lun(stack, lun)
