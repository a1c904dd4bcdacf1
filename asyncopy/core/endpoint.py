"""The endpoint Protocol: the blueprint's open_volume/close_volume, made async.

An endpoint is opened by an async context manager (``async with open_...() as volume``) and
closed when the block ends, on success, error and cancellation alike. While open, it offers
just what the engine needs. Blocking libraries stay inside the endpoint (threads or
completion callbacks); no method blocks the event loop.

Fallbacks for a missing capability live in the engine: an endpoint without an allocation map
returns ``all_data``; a sink that cannot zero a range returns False from ``write_zeroes`` and
the engine writes zero buffers instead.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class ExtentKind(enum.Enum):
    DATA = "data"
    ZERO = "zero"  # allocated, reads as zeros
    HOLE = "hole"  # not allocated, reads as zeros


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of bytes of one kind in an allocation map."""

    offset: int
    length: int
    kind: ExtentKind

    @property
    def end(self) -> int:
        return self.offset + self.length


def all_data(offset: int, length: int) -> list[Extent]:
    """The allocation map of an endpoint that knows none: everything is data."""
    return [Extent(offset, length, ExtentKind.DATA)] if length > 0 else []


Identity = tuple[object, ...]  # hashable; two volumes sharing one hold the same bytes


@runtime_checkable
class Identified(Protocol):
    """A volume that can tell what it is, whatever it was called: a file's inode, a device
    number, a cluster's image. Copying a volume onto itself, or a manifest over either end,
    is refused by comparing these."""

    def identities(self) -> frozenset[Identity]:
        """Every identity of the bytes this volume reads and writes."""


@runtime_checkable
class Versioned(Protocol):
    """A volume that can tell which version of its bytes it holds, so that a copy resumed
    later can refuse a source that changed in between."""

    def version(self) -> str | None:
        """What changes when its bytes may have (a snapshot's id, a file's size and times),
        or at least what it is (a device's size, a LUN's VPD identifiers); None when nothing
        can be told (the head of an RBD image)."""

    def version_tells_writes(self) -> bool:
        """Whether any write to its bytes changes ``version`` (a snapshot, a file), not
        only what it is (a device, a LUN, an image's head)."""


@runtime_checkable
class ReadsTwice(Protocol):
    """A volume whose library reads into buffers of its own, then copies into the caller's
    (librbd: librados receives every reply into its own buffers): a read in flight holds its
    bytes twice, and the copy's memory budget counts them twice."""

    def reads_twice(self) -> bool:
        """True: count each read in flight twice against ``max_inflight``."""


@runtime_checkable
class Watched(Protocol):
    """A source that can tell whether another client may have written it while it was read
    (the head of an RBD image): the copy then fails rather than present bytes of no single
    moment as one."""

    async def confirm_unchanged(self) -> None:
        """Raise CopyFailed if the volume may have been written since it was opened."""


@runtime_checkable
class Tagged(Protocol):
    """A destination that can carry a label beside its bytes (a file's extended attribute, an
    image's metadata): a journaled copy labels its destination, and a resumed one tells by
    the label that it writes the same volume, not one made in its place since (a new file
    that got the old one's inode)."""

    async def tag(self, key: str) -> str | None:
        """The label under ``key``; None when there is none."""

    async def set_tag(self, key: str, value: str) -> bool:
        """Label the volume; False when it cannot carry a label (nothing was done)."""


class Volume(Protocol):
    """An open endpoint that can be read: every source, and every sink too."""

    @property
    def name(self) -> str:
        """What error messages call this endpoint (a path or URI, never a secret)."""

    @property
    def size(self) -> int:
        """Size in bytes."""

    @property
    def block_size(self) -> int:
        """Logical block size: offsets and lengths of I/O are multiples of it."""

    @property
    def io_size(self) -> int:
        """Preferred I/O size in bytes."""

    async def read_into(self, offset: int, buf: memoryview) -> int:
        """Read len(buf) bytes at offset into buf; return the count (less only past the end)."""

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        """The allocation map of [offset, offset+length), sorted; gaps count as data."""


Source = Volume


class Sink(Volume, Protocol):
    """An open endpoint that can be written."""

    @property
    def known_zero(self) -> bool:
        """True when every byte not written reads as zero (a new file or image)."""

    @property
    def needs_aligned_buffers(self) -> bool:
        """True when writes need page-aligned buffers (O_DIRECT), False for any buffer."""

    async def write(self, offset: int, data: memoryview) -> None:
        """Write all of data at offset."""

    async def write_zeroes(self, offset: int, length: int) -> bool:
        """Make the range read as zeros; False if the sink cannot (nothing was done)."""

    async def flush(self) -> None:
        """Make every write durable; an error here fails the copy."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a journal or a manifest records of one end of a copy."""

    name: str
    identities: tuple[str, ...]  # canonical JSON of each identity, sorted
    version: str | None  # None: cannot tell whether it changed

    def shown(self) -> dict[str, object]:
        return {"name": self.name, "identities": list(self.identities), "version": self.version}

    @classmethod
    def parse(cls, doc: object) -> Endpoint:
        """From ``shown``'s JSON.

        Raises:
            TypeError: not of that shape.
        """
        if not isinstance(doc, dict):
            raise TypeError("endpoint")
        identities, version = doc.get("identities"), doc.get("version")
        if not isinstance(identities, list) or not all(isinstance(i, str) for i in identities):
            raise TypeError("identities")
        if version is not None and not isinstance(version, str):
            raise TypeError("version")
        return cls(str(doc.get("name")), tuple(identities), version)

    def is_of(self, volume: Volume) -> bool:
        """Whether ``volume`` is the one recorded (any identity in common)."""
        return bool(set(endpoint_of(volume).identities) & set(self.identities))


def endpoint_of(volume: Volume) -> Endpoint:
    """What a journal or a manifest records of an open volume."""
    identities = volume.identities() if isinstance(volume, Identified) else frozenset()
    version = volume.version() if isinstance(volume, Versioned) else None
    shown = sorted(json.dumps(list(identity), default=str) for identity in identities)
    return Endpoint(volume.name, tuple(shown), version)
