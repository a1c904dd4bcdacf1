"""Incremental copies from RBD snapshots: only what changed between two snapshots.

``asyncopy copy rbd:POOL/IMAGE@SNAP2 DST --since SNAP1`` asks librbd which objects were
written or discarded between SNAP1 and SNAP2 (``rbd_diff_iterate2`` from SNAP1, as ``rbd
export-diff``) and copies those chunks whole from SNAP2 (a discarded range reads as zeros
there, so it is zeroed); every other chunk is neither read nor written. DST must hold SNAP1's
bytes, and is checked where that can be told:

- ``--since-manifest PATH`` naming the journal of SNAP1's copy onto DST: the journal must be
  complete and kept for this image's SNAP1 (same image, same snapshot id) and this DST;
- ``--since-manifest PATH`` naming a manifest of SNAP1: DST is read and compared with it;
- an RBD DST with a snapshot named SNAP1 (``--snapshot-destination`` takes SNAP2's name on it
  after a copy, as ``rbd import-diff`` does): DST must be unchanged since it;
- otherwise nothing can tell, and the copy says that it trusts the operator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asyncopy.core.endpoint import Sink, Volume
from asyncopy.core.journal import FORMAT, endpoint_of, open_existing
from asyncopy.core.verify import Manifest, check_manifest, read_regular
from asyncopy.errors import UsageError

if TYPE_CHECKING:
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


async def check_destination(source: Volume, sink: Sink, since: Since, workers: int) -> str | None:
    """Refuse a DST that does not hold SNAP1 when that can be told; a warning saying the
    operator is trusted when it cannot; None when it was checked."""
    image = rbd_source(source, since)
    if since.proof is not None:
        if _is_journal(since.proof):
            _check_journal(image, sink, since.snapshot, since.proof)
        else:
            await _check_manifest(sink, since, workers)
        return None
    from asyncopy.sinks.rbd import RbdSink

    if isinstance(sink, RbdSink) and await sink.has_snapshot(since.snapshot):
        if await sink.changes_since(since.snapshot):
            raise UsageError(
                f"{sink.name} was written since its snapshot {since.snapshot}: it does not "
                f"hold {since.snapshot}'s bytes any more"
            )
        taken_from = await sink.snapshot_taken_from(since.snapshot)
        if taken_from == snapshot_identity(image, since.snapshot):
            return None
        if taken_from is not None:
            raise UsageError(
                f"{sink.name}@{since.snapshot} holds another snapshot's bytes than "
                f"{image.name.partition('@')[0]}@{since.snapshot} (re-made since?)"
            )
    return (
        f"nothing tells whether {sink.name} holds the bytes of @{since.snapshot}: trusting "
        "that it does (--since-manifest checks it)"
    )


async def snapshot_destination(source: Volume, sink: Sink) -> None:
    """Take the source snapshot's name on an RBD destination, once the copy is done (and
    verified, if asked): the next ``--since`` that snapshot can check the destination."""
    from asyncopy.sinks.rbd import RbdSink
    from asyncopy.sources.rbd import RbdSource

    snapshot = source.snapshot if isinstance(source, RbdSource) else None
    if not isinstance(source, RbdSource) or not isinstance(sink, RbdSink) or snapshot is None:
        raise UsageError("--snapshot-destination needs an rbd:...@SNAP source and an rbd: DST")
    await sink.create_snapshot(snapshot, snapshot_identity(source, snapshot))


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


def _check_journal(image: RbdSource, sink: Sink, snapshot: str, path: Path) -> None:
    """The journal of a finished copy of this image's ``snapshot`` onto ``sink``."""
    journal = open_existing(path, writable=False)
    try:
        where, header = f"--since-manifest {path}", journal.header
        identity = json.dumps(["rbd", *image.image.identity(), snapshot], default=str)
        if identity not in header.source.identities:
            raise UsageError(f"{where}: kept for {header.source.name}, not @{snapshot}")
        if header.source.version != f"snapshot {image.image.snapshot_id(snapshot)}":
            raise UsageError(f"{where}: @{snapshot} was re-made since its copy")
        if not set(endpoint_of(sink).identities) & set(header.destination.identities):
            raise UsageError(f"{where}: kept for another destination ({header.destination.name})")
        if not all(journal.done):
            raise UsageError(f"{where}: that copy did not finish (--resume it first)")
    finally:
        journal.close()


async def _check_manifest(sink: Sink, since: Since, workers: int) -> None:
    assert since.proof is not None
    differing = await check_manifest(sink, Manifest.read(since.proof), workers)
    if differing:
        raise UsageError(
            f"{sink.name} does not hold the bytes of @{since.snapshot}: {len(differing)} "
            f"range(s) differ from --since-manifest {since.proof}"
        )
