"""Cinder volumes opened from their ``connection_info``: the blueprint's open_volume/close_volume.

``open_volume(connection_info, read_only=..., conf=...)`` opens what a volume driver's
``initialize_connection`` describes, through the one dispatch of ``asyncopy.specs``
(``from_connection_info``): ``rbd`` straight through librbd, ``iscsi`` through os-brick or
asyncopy's user-space initiator (``[asyncopy] iscsi_transport``), any other protocol through
its os-brick connector. Closing detaches, on every path. ``migrate`` is the copy Cinder's
``copy_volume_data`` asks for, run in this event loop (trio): cinder-volume itself reaches it
through the child process of ``asyncopy.cinder.child``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from oslo_config import cfg

from asyncopy.access.ceph import CephOptions
from asyncopy.access.iscsi import IscsiOptions
from asyncopy.cinder import config
from asyncopy.core.endpoint import Extent, Sink, Volume
from asyncopy.core.engine import CopyResult, copy
from asyncopy.core.progress import Progress
from asyncopy.core.rate import RateLimit
from asyncopy.errors import UsageError
from asyncopy.specs import EndpointOptions, Spec, from_connection_info, from_uri, open_sink
from asyncopy.specs import open_source as open_spec_source


@asynccontextmanager
async def open_volume(
    connection_info: Mapping[str, Any],
    *,
    read_only: bool,
    conf: cfg.ConfigOpts | None = None,
) -> AsyncIterator[Volume]:
    """Open a Cinder volume from its ``connection_info``; closed (detached) on every path.

    A writable volume is a ``Sink`` that must exist already (Cinder created it); it is trusted
    to read zeros only when it says so itself (an RBD image with nothing allocated).

    Args:
        connection_info: what the volume driver's ``initialize_connection`` returned.
        read_only: open for reading only (a source).
        conf: a ConfigOpts with the ``[asyncopy]`` options registered; defaults if None.

    Raises:
        UsageError: the connection_info is not usable; nothing was attached.
        CopyFailed: attaching or opening failed.
    """
    conf = conf or config.load([])
    if read_only:
        async with open_described_source({"connection_info": connection_info}, conf) as volume:
            yield volume
    else:
        described = {"connection_info": connection_info}
        async with open_described_sink(described, conf, 0, target_is_zero=False) as sink:
            yield sink


def describe(description: Mapping[str, Any], conf: cfg.ConfigOpts) -> tuple[Spec, EndpointOptions]:
    """The spec and options of ``{"connection_info": {...}}`` or ``{"uri": ...,
    "callers_handles": n}`` (an image the caller holds open itself, counted as not in use)."""
    group = config.group(conf)
    if "connection_info" in description:
        spec = from_connection_info(
            description["connection_info"], iscsi_transport=group.iscsi_transport
        )
        # A connection_info names its cluster itself: no ceph.conf from [asyncopy].
        options = EndpointOptions(
            ceph=CephOptions(timeout=group.ceph_timeout),
            iscsi=IscsiOptions(timeout=group.iscsi_timeout),
            root_helper=group.root_helper,
        )
        return spec, options
    options = config.endpoint_options(conf)
    handles = int(description.get("callers_handles", 0))
    return from_uri(str(description["uri"])), replace(
        options, ceph=replace(options.ceph, callers_handles=handles)
    )


@asynccontextmanager
async def open_described_source(
    description: Mapping[str, Any], conf: cfg.ConfigOpts
) -> AsyncIterator[Volume]:
    """A source from a description (see ``describe``)."""
    spec, options = describe(description, conf)
    async with open_spec_source(spec, options) as volume:
        yield volume


@asynccontextmanager
async def open_described_sink(
    description: Mapping[str, Any], conf: cfg.ConfigOpts, size: int, target_is_zero: bool
) -> AsyncIterator[Sink]:
    """A sink for ``size`` bytes; a volume described by its connection_info must exist."""
    spec, options = describe(description, conf)
    must_exist = "connection_info" in description
    async with open_sink(
        spec, size=size, target_is_zero=target_is_zero, options=options, must_exist=must_exist
    ) as sink:
        yield sink


class Window:
    """The first ``size`` bytes of a volume: what Cinder's size says to copy."""

    def __init__(self, inner: Volume, size: int) -> None:
        if inner.size < size:
            raise UsageError(f"source {inner.name} is {inner.size} bytes, smaller than {size}")
        self.inner = inner
        self.name = inner.name
        self.size = size
        self.block_size = inner.block_size
        self.io_size = inner.io_size

    async def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        return await self.inner.read_into(offset, buf[:length]) if length else 0

    async def extents(self, offset: int, length: int) -> list[Extent]:
        end = min(offset + length, self.size)
        found = await self.inner.extents(offset, end - offset)
        return [
            Extent(e.offset, min(e.end, end) - e.offset, e.kind) for e in found if e.offset < end
        ]


async def migrate(
    src: Mapping[str, Any],
    dst: Mapping[str, Any],
    size: int,
    *,
    conf: cfg.ConfigOpts,
    target_is_zero: bool = False,
    progress: Callable[[Progress], None] | None = None,
    verify: bool | None = None,
    rate: RateLimit | None = None,
) -> CopyResult:
    """Copy the first ``size`` bytes of one endpoint onto another, in this event loop.

    ``verify`` None takes ``[asyncopy] verify``; ``rate`` limits the bytes read.
    """
    options = config.copy_options(conf)  # chunks hashed only when verifying
    if verify is not None:
        options = replace(options, verify=verify)
    async with (
        open_described_source(src, conf) as source,
        open_described_sink(dst, conf, size, target_is_zero) as sink,
    ):
        return await copy(Window(source, size), sink, options, progress, rate)
