"""An iSCSI LUN as a sink, through the user-space initiator.

A LUN is a volume that exists: it must be at least as large as the source and is not known
to read zeros (unless the caller says so). Zero runs are written with WRITE SAME(16), with
the UNMAP bit when the LUN says unmapped blocks read as zeros (LBPRZ) and WRITE SAME may
unmap (LBPWS): a thin LUN stays thin. A LUN that refuses WRITE SAME gets zero buffers from
the engine. SYNCHRONIZE CACHE(16) makes the writes durable at flush.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asyncopy.errors import UsageError
from asyncopy.iscsi import (
    IscsiOptions,
    IscsiSpec,
    IscsiVolume,
    ScsiError,
    open_session,
    read_geometry,
)

ILLEGAL_REQUEST = 0x05


class IscsiSink(IscsiVolume):
    """A LUN opened for writing."""

    known_zero = False
    needs_aligned_buffers = False
    _write_same = True

    async def write(self, offset: int, data: memoryview) -> None:
        for at, count in self.pieces(offset, len(data), self.geometry.max_transfer):
            await self._transfer("write", at, data[at - offset : at - offset + count])

    async def write_zeroes(self, offset: int, length: int) -> bool:
        if not self._write_same or offset % self.block_size or length % self.block_size:
            return False
        pieces = self.pieces(offset, length, self.geometry.max_write_same)
        for index, (at, count) in enumerate(pieces):
            try:
                await self._write_same_zero(at, count)
            except ScsiError as exc:
                if index > 0 or exc.sense_key != ILLEGAL_REQUEST:
                    raise
                self._write_same = False  # not supported: the engine writes zero buffers
                return False
        return True

    async def _write_same_zero(self, offset: int, length: int) -> None:
        s, lib, ffi = self.session, self.session.lib, self.session.ffi
        zero = ffi.new("unsigned char[]", self.block_size)
        lba, blocks = offset // self.block_size, length // self.block_size
        unmap = int(self.geometry.unmap_by_write_same)

        def queue(handle: Any) -> Any:
            return lib.iscsi_writesame16_task(
                s.ctx,
                self.lun,
                lba,
                zero,
                self.block_size,
                blocks,
                0,
                unmap,
                0,
                0,
                lib.asyncopy_iscsi_done,
                handle,
            )

        s.free(await s.run("zero", offset, length, queue))  # zero lives until here

    async def flush(self) -> None:
        s, lib = self.session, self.session.lib

        def queue(handle: Any) -> Any:
            return lib.iscsi_synchronizecache16_task(
                s.ctx, self.lun, 0, 0, 0, 0, lib.asyncopy_iscsi_done, handle
            )

        s.free(await s.run("flush", None, None, queue))


@asynccontextmanager
async def open_iscsi_sink(
    spec: IscsiSpec, *, size: int, options: IscsiOptions, target_is_zero: bool = False
) -> AsyncIterator[IscsiSink]:
    """Log in and check the LUN is large enough; logged out on every path."""
    async with open_session(spec, options) as session:
        sink = IscsiSink(session, await read_geometry(session))
        if sink.size < size:
            raise UsageError(
                f"destination {spec} is too small: {sink.size} bytes, source is {size} bytes"
            )
        sink.known_zero = target_is_zero
        yield sink
