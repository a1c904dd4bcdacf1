"""The pure core: allocation maps, chunk plans, zero detection, sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncopy.core.endpoint import Extent, ExtentKind
from asyncopy.core.plan import DataChunk, ZeroRun, data_ranges, plan_window, zero_segments
from asyncopy.core.sizes import parse_size
from asyncopy.errors import UsageError

D, Z, H = ExtentKind.DATA, ExtentKind.ZERO, ExtentKind.HOLE


def test_gaps_in_a_map_count_as_data() -> None:
    extents = [Extent(100, 50, H), Extent(300, 10, H)]
    assert data_ranges(extents, 0, 400, 1) == [(0, 100), (150, 300), (310, 400)]


def test_data_runs_round_outward_to_the_grid_and_merge() -> None:
    extents = [Extent(0, 4096, H), Extent(4096, 10, D), Extent(4106, 8182, H), Extent(12288, 1, D)]
    extents.append(Extent(12289, 20000 - 12289, H))
    assert data_ranges(extents, 0, 20000, 4096) == [(4096, 8192), (12288, 16384)]


def test_rounding_stops_at_the_end_of_the_volume() -> None:
    assert data_ranges([Extent(0, 5000, D)], 0, 5000, 4096) == [(0, 5000)]


def test_zero_extents_are_not_read() -> None:
    assert data_ranges([Extent(0, 10, Z), Extent(10, 10, D)], 0, 20, 1) == [(10, 20)]


def test_plan_merges_empty_chunks_into_zero_runs() -> None:
    ranges = [(4096, 8192), (40000, 41000)]
    plan = list(plan_window(ranges, 0, 41000, 8192))
    assert plan == [
        DataChunk(0, 8192, ((4096, 8192),)),
        ZeroRun(8192, 24576),
        DataChunk(32768, 8192, ((40000, 40960),)),
        DataChunk(40960, 40, ((40960, 41000),)),
    ]
    plan = list(plan_window([(39000, 40000)], 0, 41000, 8192))
    assert plan[0] == ZeroRun(0, 32768)
    assert plan[1] == DataChunk(32768, 8192, ((39000, 40000),))
    assert plan[2] == ZeroRun(40960, 40)


def test_a_range_across_chunks_is_split() -> None:
    plan = list(plan_window([(100, 9000)], 0, 16384, 8192))
    assert plan == [DataChunk(0, 8192, ((100, 8192),)), DataChunk(8192, 8192, ((8192, 9000),))]


def test_zero_segments() -> None:
    buf = bytearray(16384)
    buf[5000] = 1
    buf[16383] = 2
    segs = [(s.start, s.end, s.zero) for s in zero_segments(memoryview(buf), 4096)]
    assert segs == [
        (0, 4096, True),
        (4096, 8192, False),
        (8192, 12288, True),
        (12288, 16384, False),
    ]
    assert [s.zero for s in zero_segments(memoryview(bytes(10000)), 4096)] == [True]
    assert [(s.start, s.end) for s in zero_segments(memoryview(buf), 0)] == [(0, 16384)]
    short = bytearray(5000)
    short[4999] = 1
    segs = [(s.start, s.end, s.zero) for s in zero_segments(memoryview(short), 4096)]
    assert segs == [(0, 4096, True), (4096, 5000, False)]


def reference_segments(data: bytes, size: int) -> list[tuple[int, int, bool]]:
    """Block by block, merged: the obvious way, to check the sampled one against."""
    out: list[tuple[int, int, bool]] = []
    for pos in range(0, len(data), size):
        stop = min(pos + size, len(data))
        zero = not any(data[pos:stop])
        if out and out[-1][2] == zero:
            out[-1] = (out[-1][0], stop, zero)
        else:
            out.append((pos, stop, zero))
    return out


@given(
    size=st.sampled_from([16, 512, 4096]),
    blocks=st.integers(1, 40),
    tail=st.integers(0, 511),
    writes=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=12),
)
def test_zero_segments_match_a_block_by_block_scan(
    size: int, blocks: int, tail: int, writes: list[tuple[float, int]]
) -> None:
    data = bytearray(blocks * size + tail)
    for where, value in writes:  # single bytes anywhere: often between the sampled ones
        data[int(where * len(data))] = value
    found = [(s.start, s.end, s.zero) for s in zero_segments(memoryview(data), size)]
    assert found == reference_segments(bytes(data), size)


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("64K", 65536), ("4M", 4 << 20), ("4MiB", 4 << 20), ("1g", 1 << 30)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "4Q", "-1", "1.5G", "M"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="bad size"):
        parse_size(text)
