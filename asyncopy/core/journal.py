"""A copy's journal: which chunks are on the destination, durably, with their digests.

``asyncopy copy --journal PATH`` keeps one; ``--resume PATH`` continues the copy it was kept
for, redoing only what it does not show as done. The file is text: a header line (JSON: the
grid, and what the source and destination were), then one line per piece of work that is
on the destination for sure::

    FIRST COUNT DIGEST     chunks FIRST .. FIRST+COUNT-1; DIGEST the chunk's xxh3-128 in
                           hex, ``z`` for chunks that read as zeros, ``d`` for a chunk
                           copied without hashing (a copy hashes only to verify or for a
                           manifest: a resumed copy that verifies then reads it again)

A line is appended only after the destination was flushed with that work on it, then the
journal is synced: a chunk in flight when the copy stopped is never in it. A crash may leave
a last line cut short: it is ignored, and cut off before the resumed copy appends.

What "the same source" means is in the header: every identity the source reports (inode
and device, cluster, pool and image ids, a LUN's VPD identifiers) and its version (a
snapshot's id, a file's size and times); a resumed copy refuses any other source, and a
source whose version cannot be told (the head of an RBD image) unless told to trust it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asyncopy.core.endpoint import Identified, Versioned, Volume
from asyncopy.core.verify import ALGORITHM, DIGEST_SIZE, DigestTable
from asyncopy.errors import CopyFailed, UsageError

FORMAT = "asyncopy-journal"
VERSION = 1
ZERO = "z"
UNHASHED = "d"
NO_DIGEST = bytes(DIGEST_SIZE)  # what a chunk copied without hashing has for a digest


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a journal says one end of the copy was."""

    name: str
    identities: tuple[str, ...]  # canonical JSON of each identity, sorted
    version: str | None  # None: cannot tell whether it changed

    def shown(self) -> dict[str, object]:
        return {"name": self.name, "identities": list(self.identities), "version": self.version}


@dataclass(frozen=True, slots=True)
class Header:
    size: int
    chunk_size: int
    source: Endpoint
    destination: Endpoint

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
            }
        )


@dataclass(frozen=True, slots=True)
class Record:
    """``count`` chunks from ``first`` on the destination; ``digest`` None: zeros."""

    first: int
    count: int
    digest: bytes | None

    def line(self) -> str:
        if self.digest is None:
            shown = ZERO
        else:
            shown = UNHASHED if self.digest == NO_DIGEST else self.digest.hex()
        return f"{self.first} {self.count} {shown}\n"


@dataclass
class Journal:
    """An open journal: its header, what it shows done, and the records not yet written."""

    path: Path
    header: Header
    fd: int
    done: bytearray  # one byte per chunk: 1 when the journal shows it done
    records: list[Record] = field(default_factory=list)  # what it shows, in order
    pending: list[Record] = field(default_factory=list)

    def fill(self, table: DigestTable) -> None:
        """Put the digests the journal holds into ``table`` (same grid)."""
        for record in self.records:  # a digest's record is one chunk; zeros run on
            if record.digest is None:
                table.set_zero(record.first * table.chunk_size, record.count * table.chunk_size)
            elif record.digest != NO_DIGEST:
                table.set(record.first, record.digest)

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
            self.done[record.first : record.first + record.count] = b"\x01" * record.count

    def close(self) -> None:
        os.close(self.fd)


def endpoint_of(volume: Volume) -> Endpoint:
    """What a journal records of an open volume."""
    identities = volume.identities() if isinstance(volume, Identified) else frozenset()
    version = volume.version() if isinstance(volume, Versioned) else None
    shown = sorted(json.dumps(list(identity), default=str) for identity in identities)
    return Endpoint(volume.name, tuple(shown), version)


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
    if not set(endpoint_of(sink).identities) & set(header.destination.identities):
        raise UsageError(f"{where}: kept for another destination ({header.destination.name})")


def reserve(path: Path) -> int:
    """Make the new, empty journal file (before anything is opened: a path that cannot take
    one is refused before anything is written); its descriptor, for ``create``."""
    try:
        return os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
    except FileExistsError as exc:
        raise UsageError(
            f"journal {path}: exists already (--resume {path} continues its copy)"
        ) from exc
    except OSError as exc:
        raise UsageError(f"journal {path}: cannot create: {exc.strerror}") from exc


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
    return Journal(path, header, fd, bytearray(count))


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
        header, records, whole = _read(fd, path)
        if writable and whole < os.fstat(fd).st_size:
            os.ftruncate(fd, whole)
    except BaseException:
        os.close(fd)
        raise
    count = -(-header.size // header.chunk_size)
    journal = Journal(path, header, fd, bytearray(count), records)
    for record in records:
        journal.done[record.first : record.first + record.count] = b"\x01" * record.count
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
        if not all(isinstance(v, int) and v > 0 for v in (size, chunk_size)):
            raise ValueError("size and chunk_size must be positive integers")
        return Header(size, chunk_size, _endpoint(doc["source"]), _endpoint(doc["destination"]))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "not an asyncopy journal"
        raise UsageError(f"journal {path}: {reason}") from exc


def _endpoint(doc: object) -> Endpoint:
    if not isinstance(doc, dict):
        raise TypeError("endpoint")
    identities = doc["identities"]
    version = doc["version"]
    if not isinstance(identities, list) or not all(isinstance(i, str) for i in identities):
        raise TypeError("identities")
    if version is not None and not isinstance(version, str):
        raise TypeError("version")
    return Endpoint(str(doc["name"]), tuple(identities), version)


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
    if shown == ZERO:
        return None
    return NO_DIGEST if shown == UNHASHED else bytes.fromhex(shown)


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
