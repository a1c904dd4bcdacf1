"""An RBD image as a sink, through librbd.

An image that does not exist is created at the source's size (object size, features and data
pool as asked; the cluster's defaults otherwise). It then reads as zeros, so holes are skipped
and a thin volume stays thin; if the copy fails it is removed, like ``rbd import`` does, unless
the caller keeps it. An existing image must be at least as large as the source and is not
trusted to read zeros: zero runs are written with write_zeroes (a discard does not guarantee
zeros for partial objects).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from asyncopy.access.ceph import CephOptions, RbdCreate, RbdSpec, connect, open_image
from asyncopy.access.librbd import Image, Pool
from asyncopy.core.endpoint import ExtentKind
from asyncopy.errors import RbdError, UsageError, map_errors
from asyncopy.sources.rbd import RbdVolume, refuse_if_in_use

SNAPSHOT_KEY = "asyncopy.snapshot."  # metadata: which source snapshot a snapshot holds


class RbdSink(RbdVolume):
    needs_aligned_buffers = False

    def __init__(self, name: str, image: Image, known_zero: bool) -> None:
        super().__init__(name, image, read_only=False)
        self.known_zero = known_zero

    async def create_snapshot(self, name: str, taken_from: str) -> None:
        """Take snapshot ``name``, and note in the image's metadata which snapshot's bytes
        it holds (``taken_from``), for the next ``--since`` to check."""
        with map_errors(self.name, f"snapshot @{name}"):
            await self.image.create_snapshot(name)
            await self.image.set_metadata(SNAPSHOT_KEY + name, taken_from)

    async def snapshot_taken_from(self, name: str) -> str | None:
        with map_errors(self.name, f"snapshot @{name}"):
            return await self.image.metadata(SNAPSHOT_KEY + name)

    async def tag(self, key: str) -> str | None:
        with map_errors(self.name, "read metadata"):
            return await self.image.metadata(key)

    async def set_tag(self, key: str, value: str) -> bool:
        with map_errors(self.name, "set metadata"):
            await self.image.set_metadata(key, value)
        return True

    async def write(self, offset: int, data: memoryview) -> None:
        with map_errors(self.name, "write", offset, len(data)):
            await self.image.write(offset, data)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        with map_errors(self.name, "zero", offset, length):
            await self.image.write_zeroes(offset, length)
        return True

    async def flush(self) -> None:
        with map_errors(self.name, "flush"):
            await self.image.flush()


@asynccontextmanager
async def open_rbd_sink(
    spec: RbdSpec,
    *,
    size: int,
    options: CephOptions,
    create: RbdCreate | None = None,
    target_is_zero: bool = False,
    must_exist: bool = False,
) -> AsyncIterator[RbdSink]:
    """Open (or, unless ``must_exist``, create sized ``size``) an image for writing.

    An existing image is known to read zeros when it has nothing allocated (by its valid
    fast-diff map, its parent's included): a volume Cinder just created stays thin.
    """
    create = create or RbdCreate()
    if spec.snapshot:
        raise UsageError(f"{spec}: a snapshot cannot be written")
    order, features = create.order(), create.feature_bits()
    async with connect(spec, options, "write") as ioctx:
        created = False
        if not must_exist:
            created = await _create(ioctx, spec, size, order, features, create.data_pool)
        if not created and create.given():
            raise UsageError(
                f"destination {spec} exists: {', '.join(create.given())} apply to a new image"
            )
        try:
            async with open_image(ioctx, spec, options, read_only=False) as image:
                sink = RbdSink(str(spec), image, known_zero=created or target_is_zero)
                await refuse_if_in_use(sink, "destination", others_allowed=options.callers_handles)
                await hold_lock(sink)
                sink.known_zero = sink.known_zero or await unallocated(sink)
                yield sink
        except BaseException as failure:
            if created and not create.keep_on_failure:
                with trio.CancelScope(shield=True):
                    left = await _remove(ioctx, spec)
                if left:
                    failure.add_note(left)
            raise


async def unallocated(sink: RbdSink) -> bool:
    """True when a valid fast-diff map says no object of the image (or its parent) exists."""
    if not sink.whole_object:
        return False  # without the map, finding out costs a stat per object
    extents = await sink.extents(0, sink.size)
    return all(extent.kind is ExtentKind.HOLE for extent in extents)


async def hold_lock(sink: RbdSink) -> None:
    """Take the image's exclusive lock for the whole copy, in exclusive mode.

    Without it librbd takes the lock at the first write and hands it to any client that asks;
    and when taking it times out (a full cluster), writes queued behind it were seen never to
    complete. Held from the start, no other client can write meanwhile, and every write
    reaches the OSDs and fails within the librados timeout.
    """
    if sink.exclusive_lock:
        with map_errors(sink.name, "lock"):
            await sink.image.lock_exclusive()


async def _create(
    ioctx: Pool, spec: RbdSpec, size: int, order: int | None, features: int | None, pool: str | None
) -> bool:
    """Create the image; False if it already exists."""
    with map_errors(str(spec), "create"):
        return await ioctx.create(spec.image, size, order=order, features=features, data_pool=pool)


async def _remove(ioctx: Pool, spec: RbdSpec) -> str | None:
    """Remove an image this copy created; what went wrong, if it could not."""
    try:
        await ioctx.remove(spec.image)
    except RbdError as exc:
        return f"the partial image {spec} was left behind: {exc}"
    return None
