"""A copy's journal: which chunks are on the destination, durably, with their digests.

``asyncopy copy --journal PATH`` keeps one; ``--resume PATH`` continues the copy it was kept
for, redoing only what it does not show as done. The file is text: a header line (JSON: the
grid, and what the source and destination were), then one line per piece of work that is
on the destination for sure::

    FIRST COUNT DIGEST     chunks FIRST .. FIRST+COUNT-1; DIGEST the chunk's xxh3-128 in
                           hex (COUNT 1), or ``z`` for chunks that read as zeros

A line is appended only after the destination was flushed with that work on it, then the
journal is synced: a chunk in flight when the copy stopped is never in it. A crash may leave
a last line cut short: it is ignored, and cut off before the resumed copy appends.

What "the same source" means is in the header: every identity the source reports (inode
and device, cluster, pool and image ids, a LUN's VPD identifiers) and its version (a
snapshot's id, a file's size and times); a resumed copy refuses any other source, and a
source whose version cannot be told (the head of an RBD image) unless told to trust it.

What "the same destination, unchanged" means: the destination has one of the identities in
the header; where its kind can carry a label (a file's extended attribute, an image's
metadata: ``Tagged``), it carries the random tag the journal was started with (a file
deleted and made again, even on the same inode, does not); and it still holds what the
journal shows done: those chunks are read back and compared with the digests the journal
took from the source (``check_destination``). A chunk that differs was written since, by
something else: it is copied again. The journal is a plan of what to skip, never evidence
of what the source holds: a resumed copy that verifies reads the source again for the
chunks it skipped.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asyncopy.core.endpoint import Endpoint, Tagged, Versioned, Volume, endpoint_of
from asyncopy.core.limits import grid_fault
from asyncopy.core.plan import ChunkSet
from asyncopy.core.rate import RateLimit
from asyncopy.core.verify import ALGORITHM, DIGEST_SIZE, digest_volume, zero_digest
from asyncopy.errors import CopyFailed, UsageError

FORMAT = "asyncopy-journal"
VERSION = 2
ZERO = "z"
TAG_KEY = "asyncopy.journal"  # the label a journaled copy puts on its destination
_TAG = re.compile("[0-9a-f]{32}")


def new_tag() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class Header:
    size: int
    chunk_size: int
    source: Endpoint
    destination: Endpoint
    tag: str  # random, one per journal
    tagged: bool  # whether the destination carries ``tag`` (``Tagged``)

    def dumps(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "algorithm": ALGORITHM,
                "size": self.size,
                "chunk_size": self.chunk_size,
                "source": self.source.shown(),
                "destination": self.destination.shown(),
                "tag": self.tag,
                "tagged": self.tagged,
            }
        )


@dataclass(frozen=True, slots=True)
class Record:
    """``count`` chunks from ``first`` on the destination; ``digest`` None: zeros."""

    first: int
    count: int
    digest: bytes | None

    def line(self) -> str:
        shown = ZERO if self.digest is None else self.digest.hex()
        return f"{self.first} {self.count} {shown}\n"


@dataclass
class Journal:
    """An open journal: its header, what it shows done, and the records not yet written."""

    path: Path
    header: Header
    fd: int
    done: ChunkSet  # the chunks the journal shows done
    records: list[Record] = field(default_factory=list)  # what it shows, in order
    pending: list[Record] = field(default_factory=list)

    def record(self, first: int, count: int, digest: bytes | None) -> None:
        """Note work that is on the destination, to be written after its next flush."""
        self.pending.append(Record(first, count, digest))

    def take(self) -> list[Record]:
        taken, self.pending = self.pending, []
        return taken

    def append(self, records: Iterable[Record]) -> None:
        """Write ``records`` (their work flushed on the destination) and sync the journal."""
        text = "".join(record.line() for record in records)
        if not text:
            return
        try:
            _write_all(self.fd, text.encode())
            os.fdatasync(self.fd)
        except OSError as exc:
            raise CopyFailed(f"journal {self.path}: cannot write: {exc.strerror}") from exc
        for record in records:
            self.done.add(record.first, record.first + record.count)

    def close(self) -> None:
        os.close(self.fd)


def check_resumable(
    journal: Journal, source: Volume, sink: Volume, *, trust_source: bool = False
) -> None:
    """Refuse to resume onto ``sink`` from ``source`` unless they are the two the journal
    was kept for, and the source cannot have changed since (or the caller says so).

    Raises:
        UsageError: one line naming the journal and what does not match.
    """
    where, header = f"journal {journal.path}", journal.header
    if source.size != header.size:
        raise UsageError(
            f"{where}: kept for a source of {header.size} bytes; {source.name} has {source.size}"
        )
    now = endpoint_of(source)
    if not set(now.identities) & set(header.source.identities):
        raise UsageError(f"{where}: kept for another source ({header.source.name})")
    if now.version != header.source.version:
        raise UsageError(
            f"{where}: {source.name} changed since (then: {header.source.version}; "
            f"now: {now.version})"
        )
    tells = isinstance(source, Versioned) and source.version_tells_writes()
    if not tells and not trust_source:
        raise UsageError(
            f"{where}: {source.name} may have been written since (an image's head, a device "
            "or a LUN cannot tell): copy from a snapshot, or say it did not change "
            "(--trust-source)"
        )
    if not header.destination.is_of(sink):
        raise UsageError(f"{where}: kept for another destination ({header.destination.name})")


async def label(sink: Volume, tag: str) -> bool:
    """Put a new journal's tag on its destination, where its kind can carry one."""
    return isinstance(sink, Tagged) and await sink.set_tag(TAG_KEY, tag)


async def check_destination(
    journal: Journal, sink: Volume, workers: int, rate: RateLimit | None = None
) -> list[int]:
    """Refuse a destination that is not the one the journal was kept for; of the chunks the
    journal shows done, the ones ``sink`` no longer holds (they are no longer shown done).

    Raises:
        UsageError: ``sink`` lacks the journal's tag (made again since).
    """
    header = journal.header
    if header.tagged:
        found = await sink.tag(TAG_KEY) if isinstance(sink, Tagged) else None
        if found != header.tag:
            raise UsageError(
                f"journal {journal.path}: {sink.name} is not the destination it was kept for "
                f"(it carries {'no' if found is None else 'another'} journal tag: made again "
                "since?); copy without --resume, or say it is (--trust-destination)"
            )
    differing = await differing_chunks(journal, sink, workers, rate)
    for index in differing:
        journal.done.discard(index)
    return differing


async def differing_chunks(
    journal: Journal, volume: Volume, workers: int, rate: RateLimit | None = None
) -> list[int]:
    """The chunks the journal shows done whose bytes on ``volume`` differ from its record
    (the last record of a chunk counts)."""
    size, chunk_size = journal.header.size, journal.header.chunk_size
    ranges = [
        (first * chunk_size, min(end * chunk_size, size) - first * chunk_size)
        for first, end in journal.done.runs()
    ]
    table = await digest_volume(volume, size, chunk_size, workers, rate, ranges=ranges)
    differing: list[int] = []
    for first, end, digest in _last_claims(journal.records, journal.done.count):
        if digest is None:  # zeros: only the chunks not read as zeros can differ
            runs = table.not_zero(first, end)
            indices = (index for lo, hi in runs for index in range(lo, hi))
            differing += (i for i in indices if table.get(i) != zero_digest(table.chunk_length(i)))
        elif table.get(first) != digest:
            differing.append(first)
    return sorted(differing)


def _last_claims(records: list[Record], count: int) -> list[tuple[int, int, bytes | None]]:
    """What the records show of each chunk, the last record of a chunk counting, as runs
    (first, end, digest: None for zeros)."""
    claims: list[tuple[int, int, bytes | None]] = []
    seen = ChunkSet(count)
    for record in reversed(records):
        end = record.first + record.count
        claims += ((lo, hi, record.digest) for lo, hi in seen.gaps(record.first, end))
        seen.add(record.first, end)
    return claims


def reserve(path: Path) -> int:
    """Make the new, empty journal file (before anything is opened: a path that cannot take
    one is refused before anything is written); its descriptor, for ``create``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except FileExistsError as exc:
        raise UsageError(
            f"journal {path}: exists already (--resume {path} continues its copy)"
        ) from exc
    except OSError as exc:
        raise UsageError(f"journal {path}: cannot create: {exc.strerror}") from exc
    _lock(fd, path, fcntl.LOCK_EX)
    return fd


def _lock(fd: int, path: Path, kind: int) -> None:
    """Hold a journal for this copy: ``LOCK_EX`` to append to it, ``LOCK_SH`` to read it
    (held by the open file description, so by every duplicate of ``fd``, until it closes).

    Raises:
        UsageError: another copy holds it (``fd`` is closed).
    """
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UsageError(f"journal {path}: in use by another copy") from exc
        raise UsageError(f"journal {path}: cannot lock: {exc.strerror}") from exc


def create(path: Path, header: Header, fd: int) -> Journal:
    """Start the journal ``reserve`` made at ``path`` (``fd``, which it then owns); synced
    before it is returned."""
    try:
        _write_all(fd, (header.dumps() + "\n").encode())
        os.fsync(fd)
        _sync_directory(path)
    except OSError as exc:
        os.close(fd)
        raise UsageError(f"journal {path}: cannot write: {exc.strerror}") from exc
    count = -(-header.size // header.chunk_size)
    return Journal(path, header, fd, ChunkSet(count))


def open_existing(path: Path, *, writable: bool = True) -> Journal:
    """Open a journal to resume its copy (a last line cut short by a crash is cut off), or
    only to read it (``writable`` False: nothing is changed).

    Raises:
        UsageError: no such journal, or not one (one line naming the file and what is wrong).
    """
    mode = os.O_RDWR | os.O_APPEND if writable else os.O_RDONLY
    try:
        fd = os.open(path, mode | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"journal {path}: cannot open: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"journal {path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    _lock(fd, path, fcntl.LOCK_EX if writable else fcntl.LOCK_SH)
    try:
        header, records, whole = _read(fd, path)
        if writable and whole < os.fstat(fd).st_size:
            os.ftruncate(fd, whole)
    except BaseException:
        os.close(fd)
        raise
    count = -(-header.size // header.chunk_size)
    journal = Journal(path, header, fd, ChunkSet(count), records)
    for record in records:
        journal.done.add(record.first, record.first + record.count)
    return journal


def _read(fd: int, path: Path) -> tuple[Header, list[Record], int]:
    """The header, the records, and the length of the whole lines."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    whole = data.rfind(b"\n") + 1
    lines = data[:whole].split(b"\n")[:-1]
    if not lines:
        raise UsageError(f"journal {path}: empty, or not an asyncopy journal")
    header = _header(lines[0], path)
    count = -(-header.size // header.chunk_size)
    return header, list(_records(lines[1:], count, path)), whole


def _header(line: bytes, path: Path) -> Header:
    try:
        doc = json.loads(line)
        if doc.get("format") != FORMAT:
            raise ValueError("not an asyncopy journal")
        if doc.get("version") != VERSION or doc.get("algorithm") != ALGORITHM:
            raise ValueError(f"version {doc.get('version')} / {doc.get('algorithm')} unknown")
        size, chunk_size = doc["size"], doc["chunk_size"]
        if not all(type(v) is int for v in (size, chunk_size)):
            raise ValueError("size and chunk_size must be integers")
        fault = grid_fault(size, chunk_size)  # before a table of chunks is made
        if fault is not None:
            raise ValueError(fault)
        tag, tagged = doc["tag"], doc["tagged"]
        if not isinstance(tag, str) or not _TAG.fullmatch(tag) or not isinstance(tagged, bool):
            raise ValueError("bad tag")
        source, destination = Endpoint.parse(doc["source"]), Endpoint.parse(doc["destination"])
        return Header(size, chunk_size, source, destination, tag, tagged)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "not an asyncopy journal"
        raise UsageError(f"journal {path}: {reason}") from exc


def _records(lines: list[bytes], count: int, path: Path) -> Iterator[Record]:
    for number, line in enumerate(lines, start=2):
        try:
            first_text, count_text, shown = line.decode("ascii").split(" ")
            first, length = int(first_text), int(count_text)
            digest = _digest(shown)
            if first < 0 or length <= 0 or first + length > count:
                raise ValueError
            if digest is not None and (len(digest) != DIGEST_SIZE or length != 1):
                raise ValueError
        except ValueError as exc:  # UnicodeDecodeError is one
            raise UsageError(f"journal {path}: line {number} is not a record") from exc
        yield Record(first, length, digest)


def _digest(shown: str) -> bytes | None:
    return None if shown == ZERO else bytes.fromhex(shown)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(path: Path) -> None:
    directory = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
