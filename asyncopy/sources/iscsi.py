"""An iSCSI LUN as a source, through the user-space initiator (``asyncopy.access.iscsi``).

Only READ(16) and GET LBA STATUS are ever sent to a source. ``IscsiVolume`` is also the
reading half of the sink (``asyncopy.sinks.iscsi``): a sink is read back to verify and to
patch a last, partial block.

The allocation map comes from GET LBA STATUS when the LUN is thin (LBPME); a run the target
reports unmapped is a hole only if unmapped blocks read as zeros (LBPRZ), else it is data.
Without LBPME there is no map: everything is data.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from asyncopy.access.iscsi import (
    IscsiOptions,
    IscsiSpec,
    PumpFactory,
    Session,
    ThreadPump,
    open_session,
)
from asyncopy.core.endpoint import Extent, ExtentKind, Identity, all_data


class IscsiVolume:
    """One LUN through a logged-in session: what sources and sinks share."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.geometry = session.geometry
        self.name = session.name
        self.size = self.geometry.size
        self.block_size = self.geometry.block_size
        self.io_size = self.geometry.optimal_transfer

    def identities(self) -> frozenset[Identity]:
        """The LUN on its target, the portal's host by address (any spelling of it)."""
        spec = self.session.spec
        try:
            address = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)[0][4][0]
        except OSError:
            address = spec.host.lower()
        return frozenset({("iscsi", address, spec.port, spec.target, spec.lun)})

    def version(self) -> str | None:
        """What a LUN says of itself: its size and what its VPD pages identify it by (unit
        serial number, the logical unit's NAA and other designators). Not unique enough
        across targets to tell two LUNs apart (a target may number them alike), but a LUN
        re-created or swapped behind the same address shows it."""
        return " ".join([f"size {self.size}", *self.geometry.identifiers])

    def version_tells_writes(self) -> bool:
        return False

    async def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        await self.session.read16(offset, buf[:length])
        return length

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        if not self.geometry.lbpme:
            return all_data(offset, length)
        found: list[Extent] = []
        end = offset + length
        position = offset - offset % self.block_size
        while position < end:
            runs = await self.session.get_lba_status(position)
            if not runs:
                break
            for start, count, mapped in runs:
                stop = min(start + count, end)
                first = max(start, offset)
                if stop > first:
                    kind = ExtentKind.DATA if mapped or not self.geometry.lbprz else ExtentKind.HOLE
                    found.append(Extent(first, stop - first, kind))
            position = max(position + self.block_size, runs[-1][0] + runs[-1][1])
        covered = found[-1].end if found else offset
        return [*found, *all_data(covered, end - covered)]


class IscsiSource(IscsiVolume):
    """A LUN opened for reading."""


@asynccontextmanager
async def open_iscsi_source(
    spec: IscsiSpec, options: IscsiOptions, *, pump: PumpFactory = ThreadPump
) -> AsyncIterator[IscsiSource]:
    """Log in, read the LUN's geometry; logged out on every path."""
    async with open_session(spec, options, pump=pump) as session:
        yield IscsiSource(session)
