"""A volume attached through os-brick (``asyncopy.access.brick``), written as the block
device or the file on a share that the attachment gives: never created or truncated (Cinder
created it at the volume's size)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from asyncopy.access.brick import BrickSpec, ConnectorFactory, attach_volume, brick_spec
from asyncopy.sinks.blockdev import BlockDeviceSink, open_block_sink
from asyncopy.sinks.file import FileSink, open_file_sink


@asynccontextmanager
async def open_brick_sink(
    spec: BrickSpec | Mapping[str, Any],
    *,
    target_is_zero: bool = False,
    root_helper: str = "sudo",
    connector_factory: ConnectorFactory | None = None,
) -> AsyncIterator[BlockDeviceSink | FileSink]:
    """Attach a volume with os-brick and open its device or file for writing.

    A file is written in place (never created or truncated); neither is trusted to read zeros
    unless ``target_is_zero`` (see ``attach``).
    """
    spec = spec if isinstance(spec, BrickSpec) else brick_spec(spec)
    async with attach_volume(spec, root_helper, connector_factory) as (path, block):
        opening: AbstractAsyncContextManager[BlockDeviceSink | FileSink]
        if block:
            opening = open_block_sink(path, target_is_zero=target_is_zero)
        else:
            opening = open_file_sink(path, target_is_zero=target_is_zero)
        async with opening as sink:
            sink.name = f"{spec}:{path}"
            yield sink
