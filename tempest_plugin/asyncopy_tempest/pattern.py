"""The data a migration test writes, and how a volume's bytes are compared with it.

A volume gets a few extents of seeded random bytes at odd offsets: a small one inside its
first MiB, one inside its last, the rest spread over the space between; everything else
reads zeros. The model of that volume (zeros plus the extents) is kept as one SHA-256
digest per MiB of the whole volume, holes included, so a volume of any size is compared in
one pass without holding either image. In the first MiB whose digest differs, the model's
own bytes, rebuilt from the seeds, name the first byte that differs.

Pure functions: no I/O but the ``read`` callable a caller passes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

MiB = 1 << 20
BLOCK = MiB  # the span of one digest
PIECE = 4 * MiB  # bytes generated, written or read at once
EDGE_LENGTH = 3 * 1024 + 7  # the extents inside the first and the last MiB
MIDDLE_EXTENTS = 6

Read = Callable[[int, int], bytes]


@dataclass(frozen=True, slots=True)
class Extent:
    """``length`` bytes of the random stream seeded with ``seed``, at ``offset``."""

    offset: int
    length: int
    seed: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class Model:
    """What a volume of ``size`` bytes holding ``extents`` reads, as per-block digests."""

    size: int
    extents: tuple[Extent, ...]
    digests: tuple[bytes, ...]

    @property
    def data_bytes(self) -> int:
        return sum(extent.length for extent in self.extents)


def build_model(size: int, data_bytes: int, seed: int) -> Model:
    """The model of a ``size``-byte volume holding ``data_bytes`` of data laid out by ``seed``."""
    extents = layout(size, data_bytes, seed)
    return Model(size, extents, model_digests(size, extents))


def layout(size: int, data_bytes: int, seed: int) -> tuple[Extent, ...]:
    """Non-overlapping extents holding ``data_bytes`` in all, at odd offsets.

    Raises:
        ValueError: the data does not fit the layout (each middle extent needs less than
            its share of the volume between the first and the last MiB).
    """
    rng = random.Random(seed)
    first = Extent(_odd_below(rng, MiB - EDGE_LENGTH), EDGE_LENGTH, rng.getrandbits(64))
    last_offset = size - MiB + _odd_below(rng, MiB - EDGE_LENGTH)
    last = Extent(last_offset, EDGE_LENGTH, rng.getrandbits(64))
    middle = _middle_extents(rng, MiB, size - MiB, data_bytes - 2 * EDGE_LENGTH)
    return (first, *middle, last)


def _middle_extents(rng: random.Random, start: int, stop: int, data: int) -> list[Extent]:
    """``MIDDLE_EXTENTS`` extents of about equal length, one in each slot of ``[start, stop)``."""
    slot = (stop - start) // MIDDLE_EXTENTS
    lengths = _split(rng, data, MIDDLE_EXTENTS)
    if data < MIDDLE_EXTENTS or max(lengths) >= slot - 1:
        raise ValueError(f"{data} bytes of data do not fit {MIDDLE_EXTENTS} slots of {slot}")
    return [
        Extent((start + index * slot + rng.randrange(slot - length - 1)) | 1, length, seed)
        for index, (length, seed) in enumerate(zip(lengths, _seeds(rng, len(lengths)), strict=True))
    ]


def _seeds(rng: random.Random, count: int) -> list[int]:
    return [rng.getrandbits(64) for _ in range(count)]


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` lengths that differ by up to a quarter of their mean."""
    base = total // parts
    lengths = [base] * parts
    lengths[-1] += total - base * parts
    for index in range(0, parts - 1, 2):
        shift = rng.randrange(base // 4 + 1)
        lengths[index] += shift
        lengths[index + 1] -= shift
    return lengths


def _odd_below(rng: random.Random, bound: int) -> int:
    """An odd number in ``[1, bound)``."""
    return rng.randrange(1, max(bound, 2), 2)


def pieces(extents: Sequence[Extent]) -> Iterator[tuple[int, bytes]]:
    """Every extent's bytes as ``(offset, bytes)`` pieces of at most ``PIECE`` bytes."""
    for extent in extents:
        rng = random.Random(extent.seed)
        for start in range(0, extent.length, PIECE):
            yield extent.offset + start, rng.randbytes(min(PIECE, extent.length - start))


def model_digests(size: int, extents: Sequence[Extent]) -> tuple[bytes, ...]:
    """One digest per ``BLOCK`` of the volume the extents describe."""
    blocks: dict[int, bytearray] = {}
    for offset, data in pieces(extents):
        for index, inner, part in _by_block(offset, data):
            block = blocks.setdefault(index, bytearray(_block_length(size, index)))
            block[inner : inner + len(part)] = part
    return tuple(
        _digest(blocks[index]) if index in blocks else zero_digest(_block_length(size, index))
        for index in range(-(-size // BLOCK))
    )


def _by_block(offset: int, data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """``data`` at ``offset`` cut at block boundaries: (block index, offset in it, bytes)."""
    view = memoryview(data)
    while view:
        index, inner = divmod(offset, BLOCK)
        part = view[: BLOCK - inner]
        yield index, inner, part
        offset += len(part)
        view = view[len(part) :]


def _block_length(size: int, index: int) -> int:
    return min(BLOCK, size - index * BLOCK)


def _digest(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


_ZERO_DIGESTS: dict[int, bytes] = {}


def zero_digest(length: int) -> bytes:
    """The digest of ``length`` zero bytes."""
    if length not in _ZERO_DIGESTS:
        _ZERO_DIGESTS[length] = _digest(bytes(length))
    return _ZERO_DIGESTS[length]


def first_difference(model: Model, read: Read) -> int | None:
    """The offset of the first byte where what ``read`` returns differs from the model.

    ``read(offset, length)`` returns the volume's bytes; the whole volume is read, in
    ``PIECE``-byte requests, unless a difference is found earlier.
    """
    for start in range(0, model.size, PIECE):
        data = read(start, min(PIECE, model.size - start))
        if len(data) != min(PIECE, model.size - start):
            return start + len(data)  # a short read: the volume ends there
        for index, _inner, part in _by_block(start, data):
            if _digest(part) != model.digests[index]:
                return index * BLOCK + first_differing_byte(expected_block(model, index), part)
    return None


def expected_block(model: Model, index: int) -> bytes:
    """The model's bytes of block ``index``, rebuilt from the extents' seeds."""
    start = index * BLOCK
    block = bytearray(_block_length(model.size, index))
    for extent in model.extents:
        if extent.end <= start or extent.offset >= start + len(block):
            continue
        for offset, data in pieces((extent,)):
            for piece_index, inner, part in _by_block(offset, data):
                if piece_index == index:
                    block[inner : inner + len(part)] = part
    return bytes(block)


def first_differing_byte(expected: bytes | memoryview, actual: bytes | memoryview) -> int:
    """The index of the first byte that differs (the shorter length if one is a prefix)."""
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            return index
    return min(len(expected), len(actual))


def grained(ranges: Sequence[tuple[int, int]], grain: int) -> int:
    """The bytes of the ``grain``-sized units that ``(offset, length)`` ranges touch."""
    touched = {
        index
        for offset, length in ranges
        if length > 0
        for index in range(offset // grain, (offset + length - 1) // grain + 1)
    }
    return len(touched) * grain
