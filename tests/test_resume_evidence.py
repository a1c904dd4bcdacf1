"""What a resumed or incremental copy takes on trust, and what it checks.

A journal is a plan of what to skip, never evidence of what the destination holds: a
verified copy has compared the destination with the source itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from asyncopy.core.endpoint import Extent, endpoint_of
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.core.journal import Header, Record, create, new_tag, open_existing, reserve
from asyncopy.core.verify import zero_digest
from asyncopy.errors import VerificationFailed
from asyncopy.testing import MemoryVolume

CHUNK = 64 << 10
OPTIONS = CopyOptions(chunk_size=CHUNK, depth=2, max_inflight_bytes=2 * CHUNK, verify=True)


class CountingVolume:
    """A source that notes the offset of every read."""

    def __init__(self, inner: MemoryVolume, reads: list[int]) -> None:
        self.inner, self.reads = inner, reads
        self.name, self.size, self.block_size, self.io_size = "src", inner.size, 1, 4096

    async def read_into(self, offset: int, buf: memoryview) -> int:
        self.reads.append(offset)
        return await self.inner.read_into(offset, buf)

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        return await self.inner.extents(offset, length)


def journal_claiming(path: Path, source: MemoryVolume, sink: MemoryVolume, record: Record) -> Path:
    header = Header(source.size, CHUNK, endpoint_of(source), endpoint_of(sink), new_tag(), False)
    journal = create(path, header, reserve(path))
    journal.append([record])
    journal.close()
    return path


@pytest.mark.parametrize("claim", [None, "zero digest"])
async def test_a_journal_claim_is_never_taken_as_verified(
    tmp_path: Path, claim: str | None
) -> None:
    """The journal says chunk 1 is on the destination (as zeros, or with the digest of zeros);
    the destination never got it: the resumed verify fails instead of saying verified."""
    data = bytes(range(256)) * (4 * CHUNK // 256)
    source = MemoryVolume(data, name="src")
    sink = MemoryVolume(bytes(len(data)), name="dst")
    digest = None if claim is None else zero_digest(CHUNK)
    path = journal_claiming(tmp_path / "j", source, sink, Record(1, 1, digest))
    journal = open_existing(path)
    try:
        with pytest.raises(VerificationFailed) as failed:
            await copy(source, sink, OPTIONS, journal=journal)
    finally:
        journal.close()
    assert failed.value.ranges == [(CHUNK, CHUNK)]
    assert sink.data[CHUNK : 2 * CHUNK] == bytes(CHUNK)  # skipped, as the journal said


async def test_a_resumed_verify_reads_only_the_skipped_chunks_again(tmp_path: Path) -> None:
    """The chunks copied in this run were hashed as they were read; the source is read again
    for the skipped ones only, and a true journal verifies."""
    data = bytes(range(256)) * (4 * CHUNK // 256)
    source = MemoryVolume(data, name="src")
    sink = MemoryVolume(data[:CHUNK] + bytes(len(data) - CHUNK), name="dst")
    path = journal_claiming(tmp_path / "j", source, sink, Record(0, 1, None))
    journal = open_existing(path)
    reads: list[int] = []
    counting = CountingVolume(source, reads)
    try:
        result = await copy(counting, sink, OPTIONS, journal=journal)
    finally:
        journal.close()
    assert result.verified
    assert bytes(sink.data) == data
    assert sorted(reads).count(0) == 1  # chunk 0: read once, for the verify, never copied
