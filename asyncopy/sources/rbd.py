"""An RBD image (or one of its snapshots) as a source, through librbd, opened read-only; and
the reading half every RBD endpoint shares.

Copy from a snapshot (``rbd:POOL/IMAGE@SNAP``) to copy a volume that is in use: the head may
change during the copy, a snapshot does not. The allocation map comes from diff_iterate, in
whole-object mode only when the fast-diff map is enabled and valid (then it costs no OSD
reads); otherwise diff_iterate lists the exact extents. Reads go straight into the engine's
buffers (``asyncopy.access.librbd``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from asyncopy.access.ceph import CephOptions, RbdSpec, connect, open_image
from asyncopy.access.librbd import EXCLUSIVE_LOCK, FAST_DIFF, FAST_DIFF_INVALID, HeaderWatch, Image
from asyncopy.core.endpoint import Extent, ExtentKind, Identity
from asyncopy.errors import EndpointError, UsageError, map_errors

METADATA_THREADS = 4


class RbdVolume:
    """An open RBD image: the reading half shared by the source and the sink."""

    block_size = 1  # librbd is byte-addressed

    def __init__(
        self, name: str, image: Image, *, read_only: bool, snapshot: str | None = None
    ) -> None:
        self.name = name
        self.snapshot = snapshot  # the head when None
        self.image = image
        self.image_read_only = read_only
        self.size = image.size
        self.io_size = image.object_size
        self.exclusive_lock = bool(image.features & EXCLUSIVE_LOCK)
        fast_diff = image.features & FAST_DIFF
        self.whole_object = bool(fast_diff) and not image.flags & FAST_DIFF_INVALID
        self._metadata = trio.CapacityLimiter(METADATA_THREADS)

    def reads_twice(self) -> bool:
        return True  # librados' receive buffer, then ours

    def identities(self) -> frozenset[Identity]:
        with map_errors(self.name, "identify"):
            return frozenset({("rbd", *self.image.identity(), self.snapshot)})

    async def has_snapshot(self, name: str) -> bool:
        with map_errors(self.name, f"find @{name}"):
            return await self.image.snapshot_exists(name)

    async def changes_since(self, snapshot: str) -> list[tuple[int, int, bool]]:
        """What was written (True) or discarded (False) in this image since ``snapshot``, as
        (offset, length, exists) runs: librbd's diff, whole objects when fast-diff is valid."""
        with map_errors(self.name, f"diff from @{snapshot}", 0, self.size):
            async with self._metadata:
                return await self.image.allocated(0, self.size, self.whole_object, since=snapshot)

    def version(self) -> str | None:
        """A snapshot's id (a snapshot re-made under the same name has another); None for
        the head, which any client may write."""
        if self.snapshot is None:
            return None
        with map_errors(self.name, "identify"):
            return f"snapshot {self.image.snapshot_id(self.snapshot)}"

    def version_tells_writes(self) -> bool:
        return self.snapshot is not None

    async def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        if length == 0:
            return 0
        with map_errors(self.name, "read", offset, length):
            got = await self.image.read(offset, buf[:length])
        if got < length:
            raise EndpointError(self.name, "read", f"short read: {got} bytes", offset, length)
        return got

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        with map_errors(self.name, "map", offset, length):
            async with self._metadata:
                found = await self.image.allocated(offset, length, self.whole_object)
        return fill_holes(offset, length, found)


class RbdSource(RbdVolume):
    """An image or snapshot, read-only. The head of an image is watched while it is read
    (``confirm_unchanged``); a snapshot cannot change."""

    watch: HeaderWatch | None = None
    others_allowed = 0

    async def confirm_unchanged(self) -> None:
        """A CopyFailed if another client may have written the head while it was read: it
        took the image's lock (every writer of an image with the exclusive-lock feature
        does, and says so to the watchers), the watch was lost (a notice may have been
        missed), or, on an image without that feature, another client has it open now.

        With the feature, a client that has the image open but took no lock has written
        nothing (it may have opened it only to be refused, as another asyncopy is)."""
        if self.watch is None:
            return
        hint = ": its bytes are of no single moment; copy from a snapshot (@SNAP)"
        if self.watch.lock_taken:
            raise EndpointError(self.name, "read", f"another client took its lock{hint}")
        if self.watch.errors:
            raise EndpointError(self.name, "read", f"its watch was lost{hint}")
        if self.exclusive_lock:
            return
        others = await other_clients(self)
        if others > self.others_allowed:
            raise EndpointError(self.name, "read", f"{others} other client(s) opened it{hint}")


@asynccontextmanager
async def open_rbd_source(spec: RbdSpec, options: CephOptions) -> AsyncIterator[RbdSource]:
    """Open an image read-only; the connection and the image are closed on every path.

    The head of an image in use is refused; otherwise it is watched while it is read, as
    its writers watch it: a writer that checks for watchers (another asyncopy, ``rbd rm``)
    sees it, and one that takes the image's lock meanwhile fails the copy.
    """
    async with (
        connect(spec, options) as ioctx,
        open_image(ioctx, spec, options, read_only=True) as image,
    ):
        source = RbdSource(str(spec), image, read_only=True, snapshot=spec.snapshot)
        if spec.snapshot is not None:
            yield source
            return
        source.others_allowed = options.callers_handles
        await refuse_if_in_use(source, "source", others_allowed=options.callers_handles)
        with map_errors(source.name, "watch"):
            source.watch = await image.watch_header()
        try:
            yield source
        finally:
            with trio.CancelScope(shield=True), map_errors(source.name, "unwatch"):
                await source.watch.stop()


async def other_clients(volume: RbdVolume) -> int:
    """How many other clients watch the image (each writer does; so does a watched source of
    another process)."""
    with map_errors(volume.name, "open"):
        watchers = await volume.image.watchers()
    own = 0 if volume.image_read_only else 1  # a writable handle watches its image
    return len(watchers) - own


async def refuse_if_in_use(volume: RbdVolume, role: str, others_allowed: int) -> None:
    """A UsageError if another client has the image open (a writer, or a reader that
    watches it).

    Writing to an image in use corrupts it; reading the head of one gives a copy of no
    single moment. A snapshot is the way to copy a volume in use.
    """
    others = await other_clients(volume)
    if others > others_allowed:
        hint = "; copy from a snapshot (@SNAP)" if role == "source" else ""
        raise UsageError(f"{role} {volume.name} is in use by {others} other client(s){hint}")


def fill_holes(offset: int, length: int, found: list[tuple[int, int, bool]]) -> list[Extent]:
    """diff_iterate's allocated runs, clipped to the range, with the gaps between as holes."""
    end = offset + length
    extents: list[Extent] = []
    pos = offset
    for start, count, exists in sorted(found):
        start, stop = max(start, pos), min(start + count, end)
        if stop <= start or not exists:
            continue
        if start > pos:
            extents.append(Extent(pos, start - pos, ExtentKind.HOLE))
        extents.append(Extent(start, stop - start, ExtentKind.DATA))
        pos = stop
    if pos < end:
        extents.append(Extent(pos, end - pos, ExtentKind.HOLE))
    return extents
