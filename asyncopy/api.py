"""The library surface: copy and verify endpoints named by URI, with or without trio."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import trio

from asyncopy.engine import CopyOptions, CopyResult, ProgressCallback, copy
from asyncopy.errors import CopyFailed, UsageError
from asyncopy.uri import open_sink, open_source
from asyncopy.verify import Manifest, check_manifest, compare


async def copy_uri(
    src: str,
    dst: str,
    options: CopyOptions | None = None,
    *,
    target_is_zero: bool = False,
    manifest: Path | None = None,
    progress: ProgressCallback | None = None,
) -> CopyResult:
    """Open ``src`` read-only and ``dst`` for writing, copy, and write the manifest if asked.

    Raises:
        UsageError: bad input; nothing was written.
        CopyFailed: the copy, its flush, close or verification failed.
    """
    if manifest is not None:
        _check_writable_dir(manifest)
    async with (
        open_source(src) as source,
        open_sink(dst, size=source.size, target_is_zero=target_is_zero) as sink,
    ):
        result = await copy(source, sink, options, progress)
    if manifest is not None:
        try:
            Manifest(result.digests).write(manifest)
        except OSError as exc:
            raise CopyFailed(f"manifest {manifest}: cannot write: {exc.strerror}") from exc
    return result


def copy_sync(
    src: str,
    dst: str,
    options: CopyOptions | None = None,
    *,
    target_is_zero: bool = False,
    manifest: Path | None = None,
    progress: ProgressCallback | None = None,
) -> CopyResult:
    """``copy_uri`` for callers without trio: runs its own event loop in this thread."""
    job = partial(
        copy_uri,
        src,
        dst,
        options,
        target_is_zero=target_is_zero,
        manifest=manifest,
        progress=progress,
    )
    return trio.run(job)


async def verify_uris(a: str, b: str, chunk_size: int, workers: int) -> list[tuple[int, int]]:
    """The byte ranges where two endpoints differ (empty: identical)."""
    async with open_source(a) as left, open_source(b) as right:
        return await compare(left, right, chunk_size, workers)


async def verify_manifest(path: Path, spec: str, workers: int) -> list[tuple[int, int]]:
    """The byte ranges where an endpoint differs from a manifest (empty: identical)."""
    manifest = Manifest.read(path)
    async with open_source(spec) as volume:
        return await check_manifest(volume, manifest, workers)


def _check_writable_dir(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"manifest {path}: directory {parent} is missing or not writable")
