"""A volume attached through os-brick (``asyncopy.access.brick``), read as the block device
or the file on a share that the attachment gives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from asyncopy.access.brick import BrickSpec, ConnectorFactory, attach_volume, brick_spec
from asyncopy.sources.blockdev import BlockDeviceSource, open_block_source
from asyncopy.sources.file import FileSource, open_file_source


@asynccontextmanager
async def open_brick_source(
    spec: BrickSpec | Mapping[str, Any],
    *,
    root_helper: str = "sudo",
    connector_factory: ConnectorFactory | None = None,
) -> AsyncIterator[BlockDeviceSource | FileSource]:
    """Attach a volume with os-brick and open its device or file read-only (see ``attach``)."""
    spec = spec if isinstance(spec, BrickSpec) else brick_spec(spec)
    async with attach_volume(spec, root_helper, connector_factory) as (path, block):
        opener = open_block_source if block else open_file_source
        async with opener(path) as volume:
            volume.name = f"{spec}:{path}"
            yield volume
