"""From what an operator types (a path, ``file:PATH``) to an open endpoint."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncopy.endpoint import Sink, Volume
from asyncopy.errors import UsageError
from asyncopy.posix import kind_of
from asyncopy.sinks.blockdev import open_block_sink
from asyncopy.sinks.file import open_file_sink
from asyncopy.sources.blockdev import open_block_source
from asyncopy.sources.file import open_file_source

SCHEMES = ("file",)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(.*)$", re.DOTALL)


def parse(spec: str) -> tuple[str, str]:
    """(scheme, rest) of an endpoint spec; a plain path is ``file``."""
    if not spec:
        raise UsageError("empty endpoint")
    match = _SCHEME.match(spec)
    if match is None or os.path.exists(spec):
        return "file", spec
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise UsageError(f"{spec}: unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    if not match.group(2):
        raise UsageError(f"{spec}: no path after {scheme}:")
    return scheme, match.group(2)


@asynccontextmanager
async def open_source(spec: str) -> AsyncIterator[Volume]:
    """Open the endpoint named by ``spec`` read-only."""
    _, path = parse(spec)
    kind = kind_of(path)
    if kind is None:
        raise UsageError(f"source {path}: no such file or device")
    opener = open_block_source if kind == "block" else open_file_source
    async with opener(path) as volume:
        yield volume


@asynccontextmanager
async def open_sink(spec: str, *, size: int, target_is_zero: bool = False) -> AsyncIterator[Sink]:
    """Open the endpoint named by ``spec`` for writing ``size`` bytes; create a missing file."""
    _, path = parse(spec)
    kind = kind_of(path)
    if kind == "block":
        async with open_block_sink(path, size=size, target_is_zero=target_is_zero) as sink:
            yield sink
    else:
        async with open_file_sink(
            path, size=size, exists=kind == "file", target_is_zero=target_is_zero
        ) as file_sink:
            yield file_sink
