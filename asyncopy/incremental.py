"""Incremental copies from RBD snapshots: only what changed between two snapshots.

``asyncopy copy rbd:POOL/IMAGE@SNAP2 DST --since SNAP1`` asks librbd which objects were
written or discarded between SNAP1 and SNAP2 (``rbd_diff_iterate2`` from SNAP1, as ``rbd
export-diff``) and copies those chunks whole from SNAP2 (a discarded range reads as zeros
there, so it is zeroed); every other chunk is neither read nor written. DST must hold SNAP1's
bytes, and is checked where that can be told:

- ``--since-manifest PATH`` naming the journal of SNAP1's copy onto DST: the journal must be
  complete and kept for this image's SNAP1 (same image, same snapshot id) and this DST, DST
  must carry the journal's tag where it can carry one, and still hold every chunk the
  journal shows (read back and compared with its digests);
- ``--since-manifest PATH`` naming a manifest of SNAP1's copy: the manifest must say it was
  taken from this image's SNAP1, and DST is read and compared with it;
- an RBD DST with a snapshot named SNAP1 (``--snapshot-destination`` takes SNAP2's name on it
  after a copy, as ``rbd import-diff`` does): DST must be unchanged since it;
- otherwise nothing can tell, and the copy is refused unless the operator says DST holds
  SNAP1 (``trust``: then a proof's reading of DST is skipped too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asyncopy.core.endpoint import Endpoint, Sink, Volume
from asyncopy.core.journal import FORMAT, check_destination, open_existing
from asyncopy.core.verify import Manifest, check_manifest, read_regular
from asyncopy.errors import UsageError

if TYPE_CHECKING:
    from asyncopy.sinks.rbd import RbdSink
    from asyncopy.sources.rbd import RbdSource


@dataclass(frozen=True, slots=True)
class Since:
    """An incremental copy: DST holds SNAP1 (``snapshot``); ``proof`` a manifest or journal
    of SNAP1's copy onto it."""

    snapshot: str
    proof: Path | None = None


def unchanged_chunks(changes: list[tuple[int, int, bool]], size: int, chunk_size: int) -> bytearray:
    """One byte per chunk of [0, size): 1 where no change touches the chunk."""
    count = -(-size // chunk_size)
    unchanged = bytearray(b"\x01" * count)
    for offset, length, _ in changes:
        if length > 0:
            first, last = offset // chunk_size, min((offset + length - 1) // chunk_size, count - 1)
            unchanged[first : last + 1] = bytes(last + 1 - first)
    return unchanged


def rbd_source(source: Volume, since: Since) -> RbdSource:
    from asyncopy.sources.rbd import RbdSource

    if not isinstance(source, RbdSource):
        raise UsageError(f"--since {since.snapshot}: the source must be an rbd: image")
    return source


async def plan(source: Volume, since: Since, chunk_size: int) -> bytearray:
    """The chunks unchanged between ``since.snapshot`` and the source."""
    image = rbd_source(source, since)
    if since.snapshot == image.snapshot:
        raise UsageError(f"--since {since.snapshot}: the source is that snapshot itself")
    changes = await image.changes_since(since.snapshot)
    return unchanged_chunks(changes, image.size, chunk_size)


async def check_base(
    source: Volume, sink: Sink, since: Since, workers: int, *, trust: bool = False
) -> None:
    """Refuse a DST that does not hold SNAP1 when that can be told, and when it cannot,
    unless ``trust``."""
    image = rbd_source(source, since)
    if since.proof is not None:
        if _is_journal(since.proof):
            await _check_journal(image, sink, since.snapshot, since.proof, workers, trust)
        else:
            await _check_manifest(image, sink, since, workers, trust)
        return
    from asyncopy.sinks.rbd import RbdSink

    if isinstance(sink, RbdSink) and await sink.has_snapshot(since.snapshot):
        if await sink.changes_since(since.snapshot):
            raise UsageError(
                f"{sink.name} was written since its snapshot {since.snapshot}: it does not "
                f"hold {since.snapshot}'s bytes any more"
            )
        taken_from = await sink.snapshot_taken_from(since.snapshot)
        if taken_from == snapshot_identity(image, since.snapshot):
            return
        if taken_from is not None:
            raise UsageError(
                f"{sink.name}@{since.snapshot} holds another snapshot's bytes than "
                f"{image.name.partition('@')[0]}@{since.snapshot} (re-made since?)"
            )
    if not trust:
        raise UsageError(
            f"nothing tells whether {sink.name} holds the bytes of @{since.snapshot}: give the "
            "manifest or journal of its copy (--since-manifest), or say that it does "
            "(--trust-destination)"
        )


async def check_snapshot_destination(source: Volume, sink: Sink) -> None:
    """Refuse, before anything is written, a destination that cannot take the source
    snapshot's name: not an image, or one that has a snapshot of that name already."""
    _, target, snapshot = _snapshot_ends(source, sink)
    if await target.has_snapshot(snapshot):
        raise UsageError(
            f"{target.name} has a snapshot @{snapshot} already: --snapshot-destination "
            "cannot take that name"
        )


async def snapshot_destination(source: Volume, sink: Sink) -> None:
    """Take the source snapshot's name on an RBD destination, once the copy is done (and
    verified, if asked): the next ``--since`` that snapshot can check the destination."""
    image, target, snapshot = _snapshot_ends(source, sink)
    await target.create_snapshot(snapshot, snapshot_identity(image, snapshot))


def _snapshot_ends(source: Volume, sink: Sink) -> tuple[RbdSource, RbdSink, str]:
    from asyncopy.sinks.rbd import RbdSink
    from asyncopy.sources.rbd import RbdSource

    snapshot = source.snapshot if isinstance(source, RbdSource) else None
    if not isinstance(source, RbdSource) or not isinstance(sink, RbdSink) or snapshot is None:
        raise UsageError("--snapshot-destination needs an rbd:...@SNAP source and an rbd: DST")
    return source, sink, snapshot


def snapshot_identity(image: RbdSource, snapshot: str) -> str:
    """Which snapshot of which image, whatever it is called: cluster, pool, namespace,
    image id and the snapshot's id (a snapshot re-made under the same name has another)."""
    return json.dumps([*image.image.identity(), image.image.snapshot_id(snapshot)], default=str)


def _is_journal(path: Path) -> bool:
    """Whether ``path`` is a journal (else it is read as a manifest, with its own checks)."""
    try:
        first = read_regular(path, "--since-manifest").partition("\n")[0]
        return bool(json.loads(first).get("format") == FORMAT)
    except (ValueError, AttributeError, UsageError):
        return False


async def _check_journal(
    image: RbdSource, sink: Sink, snapshot: str, path: Path, workers: int, trust: bool
) -> None:
    """The journal of a finished copy of this image's ``snapshot`` onto ``sink``, which
    still holds what it copied (unless ``trust``)."""
    journal = open_existing(path, writable=False)
    try:
        where, header = f"--since-manifest {path}", journal.header
        _check_taken_from(where, header.source, image, snapshot)
        if not header.destination.is_of(sink):
            raise UsageError(f"{where}: kept for another destination ({header.destination.name})")
        if journal.done.covered < journal.done.count:
            raise UsageError(f"{where}: that copy did not finish (--resume it first)")
        if trust:
            return
        differing = await check_destination(journal, sink, workers)
        if differing:
            raise UsageError(
                f"{sink.name} was written since the copy {where} records: {len(differing)} "
                f"chunk(s) differ, first at offset {differing[0] * header.chunk_size}"
            )
    finally:
        journal.close()


def _check_taken_from(where: str, recorded: Endpoint, image: RbdSource, snapshot: str) -> None:
    """A journal's or a manifest's source is this image's ``snapshot``, as it is now."""
    identity = json.dumps(["rbd", *image.image.identity(), snapshot], default=str)
    if identity not in recorded.identities:
        raise UsageError(f"{where}: taken from {recorded.name}, not @{snapshot}")
    if recorded.version != f"snapshot {image.image.snapshot_id(snapshot)}":
        raise UsageError(f"{where}: @{snapshot} was re-made since its copy")


async def _check_manifest(
    image: RbdSource, sink: Sink, since: Since, workers: int, trust: bool
) -> None:
    assert since.proof is not None
    where = f"--since-manifest {since.proof}"
    manifest = Manifest.read(since.proof)
    if manifest.source is not None:
        _check_taken_from(where, manifest.source, image, since.snapshot)
    elif not trust:
        raise UsageError(
            f"{where}: does not say which volume it was taken from (an older asyncopy's?): "
            f"say that it is @{since.snapshot}'s and that DST holds it (--trust-destination)"
        )
    if trust:
        return
    differing = await check_manifest(sink, manifest, workers)
    if differing:
        raise UsageError(
            f"{sink.name} does not hold the bytes of @{since.snapshot}: {len(differing)} "
            f"range(s) differ from {where}"
        )
