"""Per-chunk digests, the manifest, and comparing volumes.

Digests are xxh3-128 over a fixed grid of ``chunk_size`` chunks from offset 0; the last chunk
may be short. A chunk that reads as zeros (hole, zero extent or zero bytes) has the digest of
that many zero bytes, so digests do not depend on how a volume is allocated.

Manifest format (JSON, version 1)::

    {"format": "asyncopy-manifest", "version": 1, "algorithm": "xxh3-128",
     "size": <bytes>, "chunk_size": <bytes>, "digests": ["<32 hex digits>", ...],
     "source": {"name": ..., "identities": [...], "version": ...}}

``digests[i]`` covers bytes [i*chunk_size, min((i+1)*chunk_size, size)). ``source`` (what
the volume was: ``endpoint.Endpoint``) is written by ``copy --manifest``; a manifest without
it still verifies, but cannot prove which volume it is of (``--since-manifest``).
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import trio
import xxhash

from asyncopy.core.endpoint import Endpoint, Volume
from asyncopy.core.limits import (
    MAX_CHUNK_SIZE,
    MAX_SIZE,
    buffer_size,
    check_memory,
    manifest_fault,
)
from asyncopy.core.pipeline import (
    aligned_buffer,
    fan_out,
    plan_volume,
    read_chunk,
    run_all,
)
from asyncopy.core.plan import (
    ChunkSet,
    DataChunk,
    Work,
    ZeroRun,
    fill_zero,
    merge_indices,
    zero_bytes,
)
from asyncopy.core.rate import RateLimit
from asyncopy.errors import CopyFailed, UsageError

ALGORITHM = "xxh3-128"
DIGEST_SIZE = 16
MANIFEST_FORMAT = "asyncopy-manifest"
MANIFEST_VERSION = 1


def chunk_digest(data: memoryview | bytes) -> bytes:
    """The digest of one chunk's bytes."""
    digest: bytes = xxhash.xxh3_128_digest(data)
    return digest


@lru_cache(maxsize=16)
def zero_digest(length: int) -> bytes:
    """The digest of ``length`` zero bytes."""
    return chunk_digest(zero_bytes(length)[:length])


PAGE_CHUNKS = 64  # digests kept together: an isolated chunk of data costs one page


class DigestTable:
    """One digest per chunk of [0, size); every chunk must be set before it is compared.

    Its size follows the data, not the volume: digests set one by one live in pages of
    ``PAGE_CHUNKS`` chunks, made when one of their chunks is set; zero runs are kept as runs
    of chunk indices (``ChunkSet``), their digest computed when asked. A table of a petabyte
    hole is one run; walking it (``missing``, ``differing``) steps over runs, not chunks.
    """

    def __init__(self, size: int, chunk_size: int) -> None:
        self.size = size
        self.chunk_size = chunk_size
        self.count = -(-size // chunk_size)
        self._pages: dict[int, bytearray] = {}  # digests, then one flag byte per chunk
        self._zeros = ChunkSet(self.count)

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def set(self, index: int, digest: bytes) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"chunk {index} is outside the table")
        page, slot = divmod(index, PAGE_CHUNKS)
        held = self._pages.get(page)
        if held is None:
            held = self._pages[page] = bytearray(PAGE_CHUNKS * (DIGEST_SIZE + 1))
        held[slot * DIGEST_SIZE : (slot + 1) * DIGEST_SIZE] = digest
        held[PAGE_CHUNKS * DIGEST_SIZE + slot] = 1

    def set_zero(self, offset: int, length: int) -> None:
        """Record zero digests for the chunks of [offset, offset+length) (offset on the grid)."""
        self._zeros.add(offset // self.chunk_size, -(-(offset + length) // self.chunk_size))

    def get(self, index: int) -> bytes:
        page, slot = divmod(index, PAGE_CHUNKS)
        held = self._pages.get(page)
        if held is not None and held[PAGE_CHUNKS * DIGEST_SIZE + slot]:
            return bytes(held[slot * DIGEST_SIZE : (slot + 1) * DIGEST_SIZE])
        if index in self._zeros:
            return zero_digest(self.chunk_length(index))
        raise ValueError(f"digest of chunk {index} was never set")

    def complete(self) -> bool:
        return next(self.missing(), None) is None

    def missing(self) -> Iterator[tuple[int, int]]:
        """The runs [first, end) of chunks whose digest was never set, in order."""
        pages = sorted(self._pages)
        for first, end in self._zeros.gaps(0, self.count):
            yield from self._unset(first, end, pages)

    def _unset(self, first: int, end: int, pages: list[int]) -> Iterator[tuple[int, int]]:
        """The runs of [first, end) not set one by one (``pages``: the page numbers, sorted)."""
        cursor = first
        at = bisect.bisect_left(pages, first // PAGE_CHUNKS)
        while at < len(pages) and pages[at] * PAGE_CHUNKS < end:
            base = pages[at] * PAGE_CHUNKS
            flags = self._pages[pages[at]][PAGE_CHUNKS * DIGEST_SIZE :]
            for index in range(max(base, first), min(base + PAGE_CHUNKS, end)):
                if flags[index - base]:
                    if cursor < index:
                        yield cursor, index
                    cursor = index + 1
            at += 1
        if cursor < end:
            yield cursor, end

    def differing(self, other: DigestTable) -> list[tuple[int, int]]:
        """The byte ranges (offset, length) whose digests differ from ``other``'s."""
        if (self.size, self.chunk_size) != (other.size, other.chunk_size):
            raise ValueError("digest tables of different grids cannot be compared")
        both_zero = self._zeros.intersection(other._zeros)
        indices = (
            index
            for first, end in both_zero.gaps(0, self.count)
            for index in range(first, end)
            if self.get(index) != other.get(index)
        )
        return merge_indices(indices, self.chunk_size, self.size)

    def not_zero(self, first: int, end: int) -> Iterator[tuple[int, int]]:
        """The runs of chunks [first, end) not known to be zeros (set one by one, or unset)."""
        return self._zeros.gaps(first, end)

    def take(self, other: DigestTable) -> None:
        """Set every digest ``other`` (the same grid) has set."""
        for first, end in other._zeros.runs():
            self._zeros.add(first, end)
        for page, held in other._pages.items():
            flags = held[PAGE_CHUNKS * DIGEST_SIZE :]
            for slot, flag in enumerate(flags):
                if flag:
                    self.set(
                        page * PAGE_CHUNKS + slot,
                        bytes(held[slot * DIGEST_SIZE : (slot + 1) * DIGEST_SIZE]),
                    )

    def hexdigests(self) -> Iterator[str]:
        return (self.get(i).hex() for i in range(self.count))


@dataclass(frozen=True, slots=True)
class Manifest:
    """The digests of a volume, as written by ``copy --manifest``, and what it was."""

    digests: DigestTable
    source: Endpoint | None = None

    def dumps(self) -> str:
        doc: dict[str, object] = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "algorithm": ALGORITHM,
            "size": self.digests.size,
            "chunk_size": self.digests.chunk_size,
            "digests": list(self.digests.hexdigests()),
        }
        if self.source is not None:
            doc["source"] = self.source.shown()
        return json.dumps(doc, indent=1)

    @classmethod
    def loads(cls, text: str, where: str) -> Manifest:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"manifest {where}: not JSON: {_json_error(exc)}") from exc
        table = _table_from(doc, Path(where))
        try:
            source = Endpoint.parse(doc["source"]) if "source" in doc else None
        except TypeError as exc:
            raise UsageError(f"manifest {where}: bad source") from exc
        return cls(table, source)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read a manifest: a regular file (never blocks on a FIFO or a device)."""
        return cls.loads(read_regular(path, "manifest"), str(path))


@contextmanager
def manifest_file(path: Path) -> Iterator[Callable[[Manifest], None]]:
    """Where a copy's manifest will go: a temporary file beside ``path``, made now (a path
    that cannot take a manifest is refused before the copy starts), and a ``commit`` that
    writes the manifest there and renames it over ``path`` (a reader sees the old manifest
    or the whole new one). Not committed, the temporary file is removed.

    Raises:
        UsageError: ``path`` is something other than a regular file, or its directory
            cannot take a file.
        CopyFailed: from ``commit``, when the manifest cannot be written.
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UsageError(f"manifest {path}: not a regular file")
    except FileNotFoundError:
        pass  # made by the copy
    except OSError as exc:
        raise UsageError(f"manifest {path}: {exc.strerror}") from exc
    directory = path.parent if str(path.parent) else Path(".")
    temporary = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise UsageError(f"manifest {path}: cannot write in {directory}: {exc.strerror}") from exc

    def commit(manifest: Manifest) -> None:
        try:
            with os.fdopen(os.dup(fd), "w") as out:
                out.write(manifest.dumps() + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            raise CopyFailed(f"manifest {path}: cannot write: {exc.strerror}") from exc

    try:
        yield commit
    finally:
        os.close(fd)
        temporary.unlink(missing_ok=True)


def open_regular(path: str | os.PathLike[str], what: str) -> int:
    """A read-only descriptor on ``path``, a regular file. Opened without blocking (a FIFO
    would wait for a writer) and checked before a byte is read.

    Raises:
        UsageError: not a regular file, or cannot be opened; names ``what`` and the path.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # as reading it would say
            raise UsageError(f"{what} {path}: cannot read: {os.strerror(errno.EISDIR)}")
        if not stat.S_ISREG(mode):
            raise UsageError(f"{what} {path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | os.PathLike[str], what: str) -> str:
    """The text of a regular file; anything else (a FIFO, a device, a directory) is refused
    before a byte is read."""
    fd = open_regular(path, what)
    try:
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read()
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path}: not text") from exc


def _json_error(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _table_from(doc: object, path: Path) -> DigestTable:
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise UsageError(f"manifest {path}: not an asyncopy manifest")
    if doc.get("version") != MANIFEST_VERSION or doc.get("algorithm") != ALGORITHM:
        raise UsageError(
            f"manifest {path}: version {doc.get('version')} / {doc.get('algorithm')} "
            f"unsupported (want {MANIFEST_VERSION} / {ALGORITHM})"
        )
    size = _whole(doc.get("size"), 0, MAX_SIZE)
    chunk_size = _whole(doc.get("chunk_size"), 1, MAX_CHUNK_SIZE)
    digests = doc.get("digests")
    if size is None or chunk_size is None:
        raise UsageError(f"manifest {path}: bad size or chunk_size")
    count = -(-size // chunk_size)
    if not isinstance(digests, list) or len(digests) != count:  # before allocating the table
        raise UsageError(f"manifest {path}: expected {count} digests")
    fault = manifest_fault(size, chunk_size)
    if fault is not None:
        raise UsageError(f"manifest {path}: {fault}")
    table = DigestTable(size, chunk_size)
    try:
        for index, text in enumerate(digests):
            digest = bytes.fromhex(text)
            if len(digest) != DIGEST_SIZE:
                raise ValueError(text)
            table.set(index, digest)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"manifest {path}: bad digest {str(exc)[:80]}") from exc
    return table


def _whole(value: object, low: int, high: int) -> int | None:
    """``value`` if it is a whole number in [low, high], else None."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


def check_grid(volume: Volume, chunk_size: int) -> None:
    """Refuse a chunk size that would cut a volume off its block grid."""
    if not 0 < chunk_size <= MAX_CHUNK_SIZE or chunk_size % volume.block_size:
        raise UsageError(
            f"chunk size {chunk_size} must be a multiple of the block size {volume.block_size} "
            f"of {volume.name} and at most {MAX_CHUNK_SIZE}"
        )


async def digest_volume(
    volume: Volume,
    length: int,
    chunk_size: int,
    workers: int,
    rate: RateLimit | None = None,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> DigestTable:
    """Digest [0, length) of ``volume``, reading only what its allocation map says is data;
    with ``ranges`` (offset, length on the chunk grid), only those: the other chunks' digests
    are left unset.

    The bytes read are spent through ``rate`` (a copy's limit covers its re-read too).

    Bytes past the volume's end count as zeros, so two volumes of different sizes compare
    equal when the larger one's extra bytes read as zeros (as ``qemu-img compare`` does).
    """
    check_grid(volume, chunk_size)
    table = DigestTable(length, chunk_size)
    block = volume.block_size
    read_end = min(-(-min(length, volume.size) // block) * block, volume.size)

    async def produce(send: trio.MemorySendChannel[Work]) -> None:
        for start, count in [(0, read_end)] if ranges is None else ranges:
            end = min(-(-(start + count) // block) * block, read_end)
            await plan_volume(volume, end, chunk_size, block, send.send, begin=start)
        if ranges is not None:
            return
        tail = -(-read_end // chunk_size) * chunk_size
        if tail < length:
            await send.send(ZeroRun(tail, length - tail))

    def make_worker() -> Callable[[Work], Awaitable[None]]:
        buf = aligned_buffer(buffer_size(chunk_size, length, block))

        async def work(item: Work) -> None:
            if isinstance(item, ZeroRun):
                table.set_zero(item.offset, item.length)
                return
            index = item.offset // chunk_size
            want = table.chunk_length(index)
            if want == item.length:  # nothing to pad
                await read_chunk(volume, item, buf[:want])
            else:
                await _read_padded(volume, item, buf, want)
            span = buf[:want]
            if rate is not None:
                await rate.spend(len(span))
            table.set(index, chunk_digest(span))  # on the loop: cheaper than a thread hop

        return work

    await fan_out(produce, [make_worker() for _ in range(workers)])
    return table


async def _read_padded(volume: Volume, chunk: DataChunk, buf: memoryview, want: int) -> None:
    """Read a chunk into buf and zero-fill it up to ``want`` bytes."""
    await read_chunk(volume, chunk, buf[: chunk.length])
    if want > chunk.length:
        fill_zero(buf[chunk.length : want])


async def compare(a: Volume, b: Volume, chunk_size: int, workers: int) -> list[tuple[int, int]]:
    """The byte ranges where two volumes differ (a shorter one reads as zero-extended).

    Both are read at once, with half of ``workers`` each: the chunks in flight stay within
    the same budget as a copy's."""
    length = max(a.size, b.size)
    tables: dict[str, DigestTable] = {}
    each = max(1, workers // 2)

    async def digest(key: str, volume: Volume) -> None:
        tables[key] = await digest_volume(volume, length, chunk_size, each)

    await run_all([partial(digest, "a", a), partial(digest, "b", b)])
    return tables["a"].differing(tables["b"])


async def check_manifest(volume: Volume, manifest: Manifest, workers: int) -> list[tuple[int, int]]:
    """The byte ranges where ``volume`` differs from the manifest (its first SIZE bytes)."""
    expected = manifest.digests
    check_memory(expected.chunk_size, workers)
    if volume.size < expected.size:
        return [(volume.size, expected.size - volume.size)]
    actual = await digest_volume(volume, expected.size, expected.chunk_size, workers)
    return expected.differing(actual)
