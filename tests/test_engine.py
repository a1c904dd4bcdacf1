"""The engine against the reference copier, on in-memory endpoints with injected faults."""

from __future__ import annotations

import mmap
import random
from dataclasses import dataclass

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncopy.core.endpoint import Extent, ExtentKind
from asyncopy.core.engine import CopyOptions, CopyResult, copy
from asyncopy.core.progress import Meter, Progress
from asyncopy.core.verify import chunk_digest
from asyncopy.errors import EndpointError, UsageError, VerificationFailed
from asyncopy.testing import Faults, FaultyVolume, MemoryVolume, RecordingSink
from devtools.reference import reference_copy

K = 1024


@dataclass
class Case:
    data: bytes
    extents: list[Extent]
    sink_extra: int
    sink_block: int
    known_zero: bool
    can_zero: bool
    options: CopyOptions


@st.composite
def cases(draw: st.DrawFn) -> Case:
    rng = random.Random(draw(st.integers(0, 2**32)))
    size = draw(st.integers(0, 200 * K))
    image = bytearray(size)
    extents: list[Extent] = []
    pos = 0
    while pos < size:
        length = min(draw(st.integers(1, 24 * K)), size - pos)
        kind = draw(st.sampled_from(["data", "zero-data", "zero", "hole", "unmapped"]))
        if kind == "data":
            image[pos : pos + length] = rng.randbytes(length)
        if kind in ("data", "zero-data"):
            extents.append(Extent(pos, length, ExtentKind.DATA))
        elif kind != "unmapped":  # unmapped: a gap in the map, which must count as data
            extents.append(Extent(pos, length, ExtentKind[kind.upper()]))
        pos += length
    block = draw(st.sampled_from([1, 512, 4096]))
    sparse = draw(st.sampled_from([0, 1, 2, 4])) * max(block, 512)
    chunk = max(sparse, block, 512) * draw(st.sampled_from([1, 2, 8, 32]))
    options = CopyOptions(
        chunk_size=chunk,
        depth=draw(st.integers(1, 8)),
        max_inflight_bytes=chunk * draw(st.integers(1, 8)),
        sparse_size=sparse,
        verify=draw(st.booleans()),
        digests=True,
    )
    return Case(
        bytes(image),
        extents,
        sink_extra=draw(st.integers(0, 5000)),
        sink_block=block,
        known_zero=draw(st.booleans()),
        can_zero=draw(st.booleans()),
        options=options,
    )


def _sink_bytes(case: Case) -> bytes:
    size = -(-(len(case.data) + case.sink_extra) // case.sink_block) * case.sink_block
    if case.known_zero:
        return bytes(size)
    return random.Random(len(case.data)).randbytes(size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_engine_writes_exactly_what_the_reference_writes(case: Case) -> None:
    source = MemoryVolume(case.data, extents=case.extents)
    expected = MemoryVolume(_sink_bytes(case))
    trio.run(reference_copy, source, expected)
    sink = MemoryVolume(
        _sink_bytes(case),
        known_zero=case.known_zero,
        block_size=case.sink_block,
        can_zero=case.can_zero,
    )
    result = trio.run(copy, source, sink, case.options)
    assert sink.data == expected.data
    assert sink.flushes == 1
    assert result.bytes_written + result.bytes_zeroed + result.bytes_skipped == len(case.data)
    assert result.bytes_read <= len(case.data)
    if not case.known_zero:
        assert result.bytes_skipped == 0
    chunk = case.options.chunk_size
    assert result.digests is not None
    for index in range(result.digests.count):
        assert result.digests.get(index) == chunk_digest(
            case.data[index * chunk : (index + 1) * chunk]
        )


LAYOUT_CHUNK = 64 * K


def _layout() -> MemoryVolume:
    """Chunk 0 all data; chunk 1 a hole; chunk 2 data with a zero 4 KiB block at 8 KiB;
    chunk 3 mapped as data but all zeros; a 1000-byte tail of data."""
    data = bytearray(4 * LAYOUT_CHUNK + 1000)
    data[0:LAYOUT_CHUNK] = b"\x01" * LAYOUT_CHUNK
    data[2 * LAYOUT_CHUNK : 3 * LAYOUT_CHUNK] = b"\x02" * LAYOUT_CHUNK
    data[2 * LAYOUT_CHUNK + 8 * K : 2 * LAYOUT_CHUNK + 12 * K] = bytes(4 * K)
    data[4 * LAYOUT_CHUNK :] = b"\x03" * 1000
    extents = [
        Extent(0, LAYOUT_CHUNK, ExtentKind.DATA),
        Extent(LAYOUT_CHUNK, LAYOUT_CHUNK, ExtentKind.HOLE),
        Extent(2 * LAYOUT_CHUNK, 2 * LAYOUT_CHUNK + 1000, ExtentKind.DATA),
    ]
    return MemoryVolume(data, extents=extents)


SEQUENTIAL = CopyOptions(chunk_size=LAYOUT_CHUNK, depth=1, sparse_size=4 * K)


async def test_known_zero_sink_gets_only_the_data() -> None:
    source = _layout()
    sink = RecordingSink(MemoryVolume(bytes(source.size), known_zero=True))
    result = await copy(source, sink, SEQUENTIAL)
    c = LAYOUT_CHUNK
    assert sink.ops == [
        ("write", 0, c),
        ("write", 2 * c, 8 * K),
        ("write", 2 * c + 12 * K, c - 12 * K),
        ("write", 4 * c, 1000),
        ("flush", 0, 0),
    ]
    assert result.bytes_skipped == c + 4 * K + c
    assert result.bytes_read == 3 * c + 1000  # the hole is not read


async def test_dirty_sink_gets_every_zero_run_zeroed() -> None:
    source = _layout()
    inner = MemoryVolume(b"\xff" * (source.size + 3000))
    sink = RecordingSink(inner)
    await copy(source, sink, SEQUENTIAL)
    c = LAYOUT_CHUNK
    assert sink.ops == [
        ("write", 0, c),
        ("zero", c, c),
        ("write", 2 * c, 8 * K),
        ("zero", 2 * c + 8 * K, 4 * K),
        ("write", 2 * c + 12 * K, c - 12 * K),
        ("zero", 3 * c, c),
        ("write", 4 * c, 1000),
        ("flush", 0, 0),
    ]
    assert inner.data[: source.size] == source.data
    assert inner.data[source.size :] == b"\xff" * 3000


async def test_unaligned_end_on_a_4k_sink_is_read_patched_and_written() -> None:
    source = _layout()
    inner = MemoryVolume(b"\xff" * (5 * LAYOUT_CHUNK), block_size=4096, known_zero=False)
    sink = RecordingSink(inner)
    await copy(source, sink, SEQUENTIAL)
    assert sink.ops[-2] == ("write", 4 * LAYOUT_CHUNK, 4096)
    assert inner.data[: source.size] == source.data
    assert inner.data[source.size :] == b"\xff" * (inner.size - source.size)


async def test_a_sink_that_cannot_zero_gets_zero_buffers() -> None:
    source = _layout()
    inner = MemoryVolume(b"\xff" * source.size, can_zero=False)
    sink = RecordingSink(inner)
    result = await copy(source, sink, SEQUENTIAL)
    assert ("write", LAYOUT_CHUNK, LAYOUT_CHUNK) in sink.ops
    assert inner.data == source.data
    assert result.bytes_zeroed == 2 * LAYOUT_CHUNK + 4 * K


def _source(size: int = 2 << 20, seed: int = 7) -> MemoryVolume:
    return MemoryVolume(random.Random(seed).randbytes(size), name="src")


FAST = CopyOptions(chunk_size=64 * K, depth=4)


@pytest.mark.parametrize(
    ("faults", "endpoint", "operation"),
    [
        (Faults(read_eio_at=300 * K), "src", "read"),
        (Faults(write_eio_at=700 * K), "dst", "write"),
        (Faults(short_read_at=1 << 20), "src", "read"),
        (Faults(flush_eio=True), "dst", "flush"),
    ],
)
async def test_an_io_error_fails_the_copy_naming_endpoint_and_offset(
    faults: Faults, endpoint: str, operation: str
) -> None:
    plain = _source()
    source = FaultyVolume(plain, faults) if endpoint == "src" else plain
    dst = MemoryVolume(bytes(plain.size), name="dst", known_zero=True)
    sink = FaultyVolume(dst, faults) if endpoint == "dst" else dst
    with pytest.raises(EndpointError) as info:
        await copy(source, sink, FAST)
    error = info.value
    assert (error.endpoint, error.operation) == (endpoint, operation)
    at = faults.read_eio_at or faults.write_eio_at or faults.short_read_at
    if at is not None:
        assert error.offset is not None
        assert error.length is not None
        assert error.offset <= at < error.offset + error.length
        assert f"{operation} failed on {endpoint} at offset {error.offset}" in str(error)


async def test_the_first_error_stops_the_other_workers() -> None:
    faults = Faults(read_eio_at=0, delay=0.01)
    source = FaultyVolume(_source(8 << 20), faults)
    sink = MemoryVolume(bytes(8 << 20), known_zero=True)
    with pytest.raises(EndpointError):
        await copy(source, sink, FAST)
    assert len(faults.reads_started) <= FAST.workers + 1


async def test_a_sink_too_small_is_refused_before_anything_is_written() -> None:
    source = _source()
    sink = RecordingSink(MemoryVolume(bytes(source.size - 1), name="small"))
    with pytest.raises(UsageError, match="small is too small"):
        await copy(source, sink, FAST)
    assert sink.ops == []


async def test_a_corrupted_write_fails_verification_naming_the_range() -> None:
    source = _source()
    sink = FaultyVolume(MemoryVolume(bytes(source.size), name="dst"), Faults(corrupt_write_at=1000))
    with pytest.raises(VerificationFailed, match=r"dst: 1 range\(s\) differ.*: 0\+65536"):
        await copy(source, sink, CopyOptions(chunk_size=64 * K, verify=True))
    result = await copy(source, MemoryVolume(bytes(source.size)), CopyOptions(verify=True))
    assert result.verified


async def test_cancellation_stops_promptly() -> None:
    faults = Faults(delay=0.02)
    source = FaultyVolume(_source(32 << 20), faults)
    sink = MemoryVolume(bytes(32 << 20), known_zero=True)
    started = trio.current_time()
    with trio.move_on_after(0.1) as scope:
        await copy(source, sink, FAST)
    assert scope.cancelled_caught
    assert trio.current_time() - started < 0.5
    assert len(faults.reads_started) < (32 << 20) // (64 * K) // 4  # stopped early


class InFlight(MemoryVolume):
    """Tracks reads and writes in flight; fails on overlapping writes."""

    def __init__(self, data: bytes | bytearray, **kwargs: object) -> None:
        super().__init__(data, **kwargs)  # type: ignore[arg-type]
        self.writing: set[tuple[int, int]] = set()
        self.reads = self.peak_reads = self.peak_writes = 0

    async def read_into(self, offset: int, buf: memoryview) -> int:
        self.reads += 1
        self.peak_reads = max(self.peak_reads, self.reads)
        await trio.sleep(0.001)
        try:
            return await super().read_into(offset, buf)
        finally:
            self.reads -= 1

    async def write(self, offset: int, data: memoryview) -> None:
        span = (offset, offset + len(data))
        assert all(span[1] <= lo or hi <= span[0] for lo, hi in self.writing), "overlap"
        self.writing.add(span)
        self.peak_writes = max(self.peak_writes, len(self.writing))
        await trio.sleep(0.001)
        await super().write(offset, data)
        self.writing.discard(span)


async def test_reads_and_writes_overlap_within_the_buffer_budget() -> None:
    data = _source(4 << 20).data
    source = InFlight(data)
    sink = InFlight(bytes(len(data)), known_zero=True)
    options = CopyOptions(chunk_size=64 * K, depth=16, max_inflight_bytes=6 * 64 * K)
    await copy(source, sink, options)
    assert options.workers == 6
    assert 1 < source.peak_reads <= 6
    assert 1 < sink.peak_writes <= 6
    assert sink.data == data


async def test_progress_is_reported_at_a_bounded_rate_and_ends_complete() -> None:
    seen: list[Progress] = []
    source = FaultyVolume(_source(4 << 20), Faults(delay=0.005))
    sink = MemoryVolume(bytes(4 << 20), known_zero=True)
    options = CopyOptions(chunk_size=64 * K, depth=2, progress_interval=0.05)
    started = trio.current_time()
    result: CopyResult = await copy(source, sink, options, seen.append)
    elapsed = trio.current_time() - started
    assert len(seen) <= elapsed / 0.05 + 2
    assert len(seen) >= 2
    last = seen[-1]
    assert (last.done, last.total, last.skipped) == (result.bytes_total, result.bytes_total, 0)
    assert last.eta == 0.0
    assert last.rate > 0
    assert [p.done for p in seen] == sorted(p.done for p in seen)


def test_the_rate_is_over_the_last_window_and_the_eta_follows_it() -> None:
    meter = Meter(total=1000, window=10.0)
    assert meter.reading(0.0, 0, 0) == Progress(0, 1000, 0, 0.0, None)  # no rate yet
    assert meter.reading(5.0, 100, 0) == Progress(100, 1000, 0, 20.0, 45.0)
    meter.reading(10.0, 200, 0)
    # 20 bytes/s for 10 s, then 100 bytes/s: the window forgets the slow start
    now = meter.reading(15.0, 700, 50)
    assert (now.rate, now.eta, now.skipped) == (60.0, 5.0, 50)
    later = meter.reading(21.0, 1000, 50)
    assert later.eta == 0.0
    assert later.rate == (1000 - 200) / 11.0


def test_a_progress_summary_round_trips() -> None:
    progress = Progress(10, 20, 5, 1234.6, 7.25)
    shown = progress.summary()
    assert shown == {"done": 10, "total": 20, "skipped": 5, "rate": 1235, "eta": 7.2}
    assert Progress.from_summary(shown) == Progress(10, 20, 5, 1235.0, 7.2)
    with pytest.raises(ValueError, match="not a byte count"):
        Progress.from_summary({"done": "10", "total": 20})


async def test_keyboard_interrupt_in_a_worker_comes_out_alone() -> None:
    class Interrupting(MemoryVolume):
        async def read_into(self, offset: int, buf: memoryview) -> int:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await copy(Interrupting(bytes(1 << 20)), MemoryVolume(bytes(1 << 20)), FAST)


class Exporters(MemoryVolume):
    """Records what owns the memory of each write."""

    def __init__(self, data: bytes, *, aligned: bool) -> None:
        super().__init__(data)
        self.needs_aligned_buffers = aligned
        self.owners: list[type] = []

    async def write(self, offset: int, data: memoryview) -> None:
        self.owners.append(type(data.obj))
        await super().write(offset, data)


@pytest.mark.parametrize("aligned", [False, True])
async def test_writes_come_straight_from_the_workers_aligned_buffers(aligned: bool) -> None:
    source = _source(4 * LAYOUT_CHUNK)
    sink = Exporters(bytes(source.size), aligned=aligned)
    await copy(source, sink, CopyOptions(chunk_size=LAYOUT_CHUNK, sparse_size=0))
    assert sink.data == source.data
    assert len(sink.owners) == 4
    assert set(sink.owners) == {mmap.mmap}  # no copy into a payload of its own


@pytest.mark.parametrize(("digests", "verify"), [(True, False), (False, False), (False, True)])
async def test_chunks_are_hashed_only_when_digests_or_verification_are_asked_for(
    digests: bool, verify: bool
) -> None:
    source = _source(4 * LAYOUT_CHUNK)
    sink = MemoryVolume(bytes(source.size))
    options = CopyOptions(chunk_size=LAYOUT_CHUNK, digests=digests, verify=verify)
    result = await copy(source, sink, options)
    assert sink.data == source.data
    assert result.verified == verify
    assert (result.verify_seconds > 0) == verify
    if digests or verify:
        assert result.digests is not None
        second = bytes(source.data[LAYOUT_CHUNK : 2 * LAYOUT_CHUNK])
        assert result.digests.get(1) == chunk_digest(second)
    else:
        assert result.digests is None
