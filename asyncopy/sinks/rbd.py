"""An RBD image as a sink, through librbd.

An image that does not exist is created at the source's size (object size, features and data
pool as asked; the cluster's defaults otherwise). It then reads as zeros, so holes are skipped
and a thin volume stays thin; if the copy fails it is removed, like ``rbd import`` does, unless
the caller keeps it. An existing image must be at least as large as the source and is not
trusted to read zeros: zero runs are written with write_zeroes (a discard does not guarantee
zeros for partial objects).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from asyncopy.ceph import CephOptions, RbdSpec, RbdVolume, ceph_errors, connect, open_image
from asyncopy.errors import UsageError

LOG = logging.getLogger(__name__)

FEATURES = {
    "layering": 1 << 0,
    "striping": 1 << 1,
    "exclusive-lock": 1 << 2,
    "object-map": 1 << 3,
    "fast-diff": 1 << 4,
    "deep-flatten": 1 << 5,
    "journaling": 1 << 6,
}


@dataclass(frozen=True)
class RbdCreate:
    """How a missing destination image is created, and what happens to it on failure."""

    object_size: int | None = None  # bytes, a power of two; None: the cluster's default
    features: tuple[str, ...] | None = None  # names from FEATURES; None: the cluster's default
    data_pool: str | None = None
    keep_on_failure: bool = False

    def order(self) -> int | None:
        if self.object_size is None:
            return None
        size = self.object_size
        if size < 4096 or size & (size - 1):
            raise UsageError(f"object size {size} must be a power of two of at least 4096")
        return size.bit_length() - 1

    def feature_bits(self) -> int | None:
        if self.features is None:
            return None
        unknown = [name for name in self.features if name not in FEATURES]
        if unknown:
            known = ", ".join(FEATURES)
            raise UsageError(f"unknown image feature(s) {', '.join(unknown)} (known: {known})")
        return sum(FEATURES[name] for name in set(self.features))


class RbdSink(RbdVolume):
    def __init__(self, name: str, image: Any, known_zero: bool) -> None:
        super().__init__(name, image)
        self.known_zero = known_zero

    async def write(self, offset: int, data: memoryview) -> None:
        payload = bytes(data)  # the binding takes bytes only
        await self.complete(
            "write", offset, len(data), lambda done: self.image.aio_write(payload, offset, done)
        )

    async def write_zeroes(self, offset: int, length: int) -> bool:
        await self.complete(
            "zero", offset, length, lambda done: self.image.aio_write_zeroes(offset, length, done)
        )
        return True

    async def flush(self) -> None:
        await self.complete("flush", None, None, self.image.aio_flush)


@asynccontextmanager
async def open_rbd_sink(
    spec: RbdSpec,
    *,
    size: int,
    options: CephOptions,
    create: RbdCreate | None = None,
    target_is_zero: bool = False,
) -> AsyncIterator[RbdSink]:
    """Open (or create, sized ``size``) an image for writing."""
    create = create or RbdCreate()
    if spec.snapshot:
        raise UsageError(f"{spec}: a snapshot cannot be written")
    order, features = create.order(), create.feature_bits()
    async with connect(spec, options) as ioctx:
        created = await _create(ioctx, spec, size, order, features, create.data_pool)
        try:
            async with open_image(ioctx, spec, read_only=False) as image:
                sink = RbdSink(str(spec), image, known_zero=created or target_is_zero)
                if sink.size < size:
                    raise UsageError(
                        f"destination {spec} is too small: {sink.size} bytes, "
                        f"source is {size} bytes"
                    )
                yield sink
        except BaseException:
            if created and not create.keep_on_failure:
                with trio.CancelScope(shield=True):
                    await _remove(ioctx, spec)
            raise


async def _create(
    ioctx: Any, spec: RbdSpec, size: int, order: int | None, features: int | None, pool: str | None
) -> bool:
    """Create the image; False if it already exists."""
    import rbd

    def create() -> bool:
        try:
            rbd.RBD().create(
                ioctx, spec.image, size, order=order, features=features, data_pool=pool
            )
        except rbd.ImageExists:
            return False
        return True

    with ceph_errors(str(spec), "create"):
        return await trio.to_thread.run_sync(create)


async def _remove(ioctx: Any, spec: RbdSpec) -> None:
    """Remove an image this copy created; the copy's own error is the one that matters."""
    import rbd

    try:
        await trio.to_thread.run_sync(rbd.RBD().remove, ioctx, spec.image)
    except rbd.Error as exc:
        LOG.warning("%s: could not remove the image after the failed copy: %s", spec, exc)
