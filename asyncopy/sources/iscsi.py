"""An iSCSI LUN as a source, through the user-space initiator: only READ(16) and GET LBA
STATUS are ever sent to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncopy.iscsi import IscsiOptions, IscsiSpec, IscsiVolume, open_session, read_geometry


class IscsiSource(IscsiVolume):
    """A LUN opened for reading."""


@asynccontextmanager
async def open_iscsi_source(spec: IscsiSpec, options: IscsiOptions) -> AsyncIterator[IscsiSource]:
    """Log in, read the LUN's geometry; logged out on every path."""
    async with open_session(spec, options) as session:
        yield IscsiSource(session, await read_geometry(session))
