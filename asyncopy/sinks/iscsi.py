"""An iSCSI LUN as a sink, through the user-space initiator (``asyncopy.access.iscsi``).

A LUN is a volume that exists: it must be at least as large as the source and is not known
to read zeros (unless the caller says so). Zero runs are written with WRITE SAME(16), with
the UNMAP bit when the LUN says unmapped blocks read as zeros (LBPRZ) and WRITE SAME may
unmap (LBPWS): a thin LUN stays thin. A LUN that refuses WRITE SAME gets zero buffers from
the engine. SYNCHRONIZE CACHE(16) makes the writes durable at flush. Reading (to verify, to
patch a partial last block) is the source's (``asyncopy.sources.iscsi.IscsiVolume``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncopy.access.iscsi import IscsiOptions, IscsiSpec, PumpFactory, ThreadPump, open_session
from asyncopy.errors import ScsiError
from asyncopy.sources.iscsi import IscsiVolume

ILLEGAL_REQUEST = 0x05


class IscsiSink(IscsiVolume):
    """A LUN opened for writing."""

    known_zero = False
    needs_aligned_buffers = False
    _write_same = True

    async def write(self, offset: int, data: memoryview) -> None:
        await self.session.write16(offset, data)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        if not self._write_same or offset % self.block_size or length % self.block_size:
            return False
        step = self.geometry.max_write_same
        for at in range(offset, offset + length, step):
            count = min(step, offset + length - at)
            try:
                await self.session.write_same16_zero(
                    at, count, unmap=self.geometry.unmap_by_write_same
                )
            except ScsiError as exc:
                if at > offset or exc.sense_key != ILLEGAL_REQUEST:
                    raise
                self._write_same = False  # not supported: the engine writes zero buffers
                return False
        return True

    async def flush(self) -> None:
        await self.session.synchronize_cache16()


@asynccontextmanager
async def open_iscsi_sink(
    spec: IscsiSpec,
    *,
    options: IscsiOptions,
    target_is_zero: bool = False,
    pump: PumpFactory = ThreadPump,
) -> AsyncIterator[IscsiSink]:
    """Log in to the LUN for writing; logged out on every path."""
    async with open_session(spec, options, pump=pump) as session:
        sink = IscsiSink(session)
        sink.known_zero = target_is_zero
        yield sink
