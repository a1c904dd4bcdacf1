"""An RBD image (or one of its snapshots) as a source, through librbd, opened read-only.

Copy from a snapshot (``rbd:POOL/IMAGE@SNAP``) to copy a volume that is in use: the head may
change during the copy, a snapshot does not. The allocation map comes from diff_iterate, in
whole-object mode only when the fast-diff map is enabled and valid (then it costs no OSD
reads); otherwise diff_iterate lists the exact extents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncopy.ceph import (
    CephOptions,
    RbdSpec,
    RbdVolume,
    connect,
    open_image,
    refuse_if_in_use,
)


class RbdSource(RbdVolume):
    pass


@asynccontextmanager
async def open_rbd_source(spec: RbdSpec, options: CephOptions) -> AsyncIterator[RbdSource]:
    """Open an image read-only; the connection and the image are closed on every path."""
    async with connect(spec, options) as ioctx, open_image(ioctx, spec, read_only=True) as image:
        source = RbdSource(str(spec), image, read_only=True)
        if spec.snapshot is None:
            await refuse_if_in_use(source, "source", others_allowed=options.callers_handles)
        yield source
