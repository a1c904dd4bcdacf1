"""The in-flight window: the tuner on throughput curves of known shape, the window's slots and
buffers, and a copy at the defaults tuning itself while ``--depth N`` stays fixed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from asyncopy.api import copy_uri
from asyncopy.core.engine import ADAPTIVE_LIMIT, CopyOptions, window_limit
from asyncopy.core.pipeline import aligned_buffer
from asyncopy.core.window import START, Tuner, Window
from asyncopy.specs import open_source
from tests.cephtools import Cluster
from tests.conftest import write_pattern

MiB = 1 << 20
Curve = Callable[[int], float]


def knee_at(knee: int) -> Curve:
    """Throughput that grows with the window up to ``knee`` chunks, flat after."""
    return lambda size: 100.0 * min(size, knee)


def peak_at(peak: int) -> Curve:
    """Throughput that grows up to ``peak`` chunks and falls after (queues that thrash)."""
    return lambda size: 100.0 * (size if size <= peak else peak - 0.5 * (size - peak))


def settle(tuner: Tuner, curve: Curve, epochs: int = 60) -> list[int]:
    """The sizes the tuner chose over ``epochs`` epochs measured on ``curve``."""
    sizes = []
    for _ in range(epochs):
        sizes.append(tuner.measured(curve(tuner.size)))
    return sizes


@pytest.mark.parametrize("knee", [2, 6, 12, 16])
def test_the_tuner_settles_at_the_knee_of_a_curve_that_goes_flat(knee: int) -> None:
    tuner = Tuner(limit=16)
    settle(tuner, knee_at(knee))
    # The smallest size within GAIN of the flat rate is the knee; a step around it is probed.
    assert knee - max(1, knee // 4) <= tuner.best <= knee


@pytest.mark.parametrize("peak", [3, 8, 20])
def test_the_tuner_backs_off_past_a_peak(peak: int) -> None:
    tuner = Tuner(limit=32)
    sizes = settle(tuner, peak_at(peak))
    assert abs(tuner.best - peak) <= max(1, peak // 4)
    late = sizes[-20:]
    # Probes leave the best size one step at a time, never far.
    assert max(late) <= peak + max(1, peak // 4) + max(1, peak // 3)


def test_the_tuner_never_passes_its_limit() -> None:
    tuner = Tuner(limit=5)
    sizes = settle(tuner, knee_at(1000))
    assert max(sizes) == 5 == tuner.best


def test_the_tuner_follows_a_change_of_conditions() -> None:
    tuner = Tuner(limit=32)
    settle(tuner, knee_at(4))
    assert tuner.best <= 4
    settle(tuner, knee_at(16), epochs=120)  # e.g. a sparse region, then a dense one
    assert tuner.best >= 12


def test_the_tuner_starts_at_qemu_imgs_default() -> None:
    assert Tuner(limit=64).size == START
    assert Tuner(limit=2).size == 2


async def test_a_window_holds_at_most_size_chunks_and_makes_buffers_only_as_needed() -> None:
    made: list[int] = []

    def make(size: int) -> memoryview:
        made.append(size)
        return aligned_buffer(size)

    window = Window(16, MiB, make, fixed=True)
    window.size = 3
    busiest = 0

    async def chunk() -> None:
        nonlocal busiest
        async with window.slot() as buf:
            assert len(buf) == MiB
            busiest = max(busiest, window.busy)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(chunk)
    assert busiest == 3
    assert len(made) == 3  # buffers reused, never one per waiting chunk
    assert window.busy == 0


def test_a_fixed_window_never_changes() -> None:
    window = Window(8, MiB, aligned_buffer, fixed=True)
    for _ in range(100):
        window.done(MiB)
    assert window.size == window.largest == 8


def test_the_default_window_is_tuned_within_max_inflight() -> None:
    assert CopyOptions().depth is None
    assert CopyOptions().workers == min(
        ADAPTIVE_LIMIT, CopyOptions().max_inflight_bytes // MiB // 4
    )
    assert CopyOptions(depth=3).workers == 3
    assert CopyOptions(max_inflight_bytes=8 * MiB).workers == 2


@pytest.mark.parametrize("depth", [None, 2])
async def test_a_copy_at_the_defaults_and_at_a_fixed_depth_is_identical(
    tmp_path: Path, depth: int | None
) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    data = [(i * 5 * MiB + 4096, 3 * MiB) for i in range(40)]
    content = write_pattern(src, 200 * MiB + 512, data)
    result = await copy_uri(str(src), str(dst), CopyOptions(depth=depth, verify=True))
    assert result.verified
    assert dst.read_bytes() == content
    if depth is None:
        assert result.depth >= START  # tuned: at least where it starts, within the limit
        assert result.depth <= CopyOptions().workers
    else:
        assert result.depth == depth


async def test_a_chunk_read_from_rbd_counts_twice_against_the_budget(
    ceph: Cluster, tmp_path: Path
) -> None:
    """librados holds each read's reply in buffers of its own before librbd copies it into
    the engine's: at the defaults an RBD source gets half the chunks in flight a file does."""
    name = ceph.name()
    ceph.create(name, 64 * MiB, [(0, 8 * MiB)])
    plain = tmp_path / "plain.img"
    write_pattern(plain, 8 * MiB, [(0, MiB)])
    defaults, budget = CopyOptions(), CopyOptions(max_inflight_bytes=128 * MiB)
    async with open_source(ceph.uri(name)) as image, open_source(str(plain)) as file:
        assert window_limit(defaults, image) == 8 == defaults.workers // 2
        assert window_limit(budget, image) == 16
        assert window_limit(CopyOptions(depth=12), image) == 12  # a fixed depth is as given
        assert window_limit(defaults, file) == defaults.workers == 16
    result = await copy_uri(ceph.uri(name), str(tmp_path / "copy.img"))
    assert 1 <= result.depth <= 8


async def test_the_copys_buffers_are_let_go_before_it_verifies() -> None:
    """A verifying re-read allocates buffers of its own: the copy's must not be held on top."""
    made: list[memoryview] = []

    def make(size: int) -> memoryview:
        made.append(aligned_buffer(size))
        return made[-1]

    window = Window(4, MiB, make, fixed=True)
    async with window.slot():
        pass
    assert len(window.free) == 1
    window.release()
    assert window.free == []
