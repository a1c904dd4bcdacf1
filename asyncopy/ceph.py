"""What RBD sources and sinks share: the URI, the connection, and librbd's aio on trio.

The URI is qemu's, which operators already type::

    rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:conf=PATH][:id=USER][:keyring=PATH][:OPTION=VALUE...]

Other ``OPTION=VALUE`` pairs are librados configuration (``mon_host=...``), as in qemu; a
``:`` inside a value is written ``\\:``. Values never appear in messages.

I/O goes through librbd's aio calls: each request is submitted from the event loop and its
completion, which librbd calls on one of its own threads, wakes the waiting task through the
trio token. No thread is held per request. A request cannot be taken back from librbd, so a
cancelled task waits for its completion (bounded by the librados timeouts, always set).
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from asyncopy.endpoint import Extent, ExtentKind
from asyncopy.errors import EndpointError, UsageError

DEFAULT_TIMEOUT = 30.0
METADATA_THREADS = 4
SUBMIT_THREADS = 4
SMALL_PAYLOAD = 64 * 1024


@dataclass(frozen=True)
class CephOptions:
    """How to reach a cluster when the URI does not say, and how long to wait for it."""

    timeout: float = DEFAULT_TIMEOUT  # connect, monitor and OSD operations, in seconds
    conf: str | None = None  # ceph.conf when the URI names none; None: librados' default
    # Clients besides this one known to hold the image open: the caller's own handle, when a
    # caller hands over an image it opened (os-brick's RBDVolumeIOWrapper). Any more: refused.
    callers_handles: int = 0


@dataclass(frozen=True)
class RbdSpec:
    """A parsed ``rbd:`` URI."""

    pool: str
    image: str
    namespace: str = ""
    snapshot: str | None = None
    conf: str | None = None
    user: str | None = None
    keyring: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold a key=

    def __str__(self) -> str:
        """The URI without its options: what messages call the image."""
        path = "/".join(part for part in (self.pool, self.namespace, self.image) if part)
        return f"rbd:{path}" + (f"@{self.snapshot}" if self.snapshot else "")


_FIELD = re.compile(r"(?:\\.|[^:\\])+")
_NAME = re.compile(r"[^/@\s]+")
USAGE = "expected rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:option=value...]"
# librados options asyncopy always sets itself, whatever the URI or ceph.conf say
_TIMEOUTS = ("rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout")


def parse_rbd(text: str) -> RbdSpec:
    """Parse what follows ``rbd:``; bad input is a UsageError that never repeats a value."""
    fields = _split(text)
    path, at, snapshot = fields[0].partition("@")
    parts = path.split("/")
    if len(parts) not in (2, 3) or not all(_NAME.fullmatch(part) for part in parts):
        raise UsageError(f"rbd:{path}: {USAGE}")
    if at and not _NAME.fullmatch(snapshot):
        raise UsageError(f"rbd:{path}: bad snapshot name after @")
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for item in fields[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"rbd:{path}: option {key!r} needs the form key=value")
        if key in _TIMEOUTS:
            raise UsageError(f"rbd:{path}: set {key} with --ceph-timeout")
        if key in ("conf", "id", "keyring"):
            known[key] = value
        else:
            extra.append((key, value))
    return RbdSpec(
        pool=parts[0],
        namespace=parts[1] if len(parts) == 3 else "",
        image=parts[-1],
        snapshot=snapshot or None,
        conf=known.get("conf"),
        user=known.get("id"),
        keyring=known.get("keyring"),
        options=tuple(extra),
    )


def _split(text: str) -> list[str]:
    """Split on ``:`` not escaped by a backslash; unescape each field."""
    pos, fields = 0, []
    while pos <= len(text):
        match = _FIELD.match(text, pos)
        end = match.end() if match else pos
        fields.append(re.sub(r"\\(.)", r"\1", text[pos:end]))
        if end < len(text) and text[end] != ":":
            raise UsageError(f"rbd: URI: a lone backslash at position {end}; {USAGE}")
        pos = end + 1
    return fields


@contextmanager
def ceph_errors(
    endpoint: str, operation: str, offset: int | None = None, length: int | None = None
) -> Iterator[None]:
    """Turn rados/rbd exceptions raised inside the block into an ``EndpointError``."""
    import rados
    import rbd

    try:
        yield
    except (rados.Error, rbd.Error) as exc:
        raise EndpointError(endpoint, operation, _reason(exc), offset, length) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc)
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number:
        text = re.sub(r"^\[errno \d+\] ", "", text)
        return f"{text} ({os.strerror(abs(number))})"
    return text or type(exc).__name__


@asynccontextmanager
async def connect(spec: RbdSpec, options: CephOptions) -> AsyncIterator[Any]:
    """An open ``rados.Ioctx`` for the spec's pool (and namespace), with timeouts set."""
    import rados

    name = str(spec)
    cluster = _client(spec, options)
    try:
        with ceph_errors(name, "connect"):
            await trio.to_thread.run_sync(cluster.connect, options.timeout)
        try:
            with ceph_errors(name, "open"):
                ioctx = await trio.to_thread.run_sync(cluster.open_ioctx, spec.pool)
        except EndpointError as exc:
            if isinstance(exc.__cause__, rados.ObjectNotFound):
                raise UsageError(f"{name}: no pool {spec.pool!r}") from exc
            raise
        try:
            if spec.namespace:
                with ceph_errors(name, "open"):
                    ioctx.set_namespace(spec.namespace)
            yield ioctx
        finally:
            ioctx.close()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.shutdown)


def _client(spec: RbdSpec, options: CephOptions) -> Any:
    """A librados handle: the spec's options, then asyncopy's own, which always win.

    Timeouts turn a stopped or full cluster into an error. The librbd cache is off: writes
    reach the OSDs before they complete (an error names its offset), and a verification
    re-read comes from the OSDs, not from this client's memory. Writes are zero-copy: librbd
    sends from the caller's buffer, which the sink keeps alive and unchanged until the
    write completes (librbd delays the completion until it holds no reference to it).
    """
    import rados

    conffile = spec.conf or options.conf
    if conffile is not None and not os.path.isfile(conffile):
        raise UsageError(f"{spec}: no ceph configuration file {conffile}")
    seconds = str(max(1, round(options.timeout)))
    forced = {key: seconds for key in _TIMEOUTS} | {
        "rbd_cache": "false",
        "rbd_disable_zero_copy_writes": "false",
    }
    try:
        cluster = rados.Rados(rados_id=spec.user, conffile=conffile)
    except rados.Error as exc:
        raise UsageError(f"{spec}: bad ceph configuration: {_reason(exc)}") from exc
    settings = [*spec.options, *([("keyring", spec.keyring)] if spec.keyring else [])]
    for key, value in [*settings, *forced.items()]:
        try:
            cluster.conf_set(key, value)
        except rados.Error as exc:
            cluster.shutdown()
            raise UsageError(f"{spec}: bad ceph option {key!r}") from exc
    return cluster


@asynccontextmanager
async def open_image(ioctx: Any, spec: RbdSpec, *, read_only: bool) -> AsyncIterator[Any]:
    """An open ``rbd.Image`` (at the spec's snapshot, if any), closed on every path.

    If the block fails, a failure to close is added to its error as a note, not put in its
    place: the first error names the offset that matters.
    """
    import rbd

    name = str(spec)
    try:
        image = await trio.to_thread.run_sync(
            lambda: rbd.Image(ioctx, spec.image, snapshot=spec.snapshot, read_only=read_only)
        )
    except rbd.ImageNotFound as exc:
        raise UsageError(f"{name}: {await _missing(ioctx, spec)}") from exc
    except rbd.Error as exc:
        raise EndpointError(name, "open", _reason(exc)) from exc
    try:
        yield image
    except BaseException as failure:
        with trio.CancelScope(shield=True):
            try:
                with ceph_errors(name, "close"):
                    await trio.to_thread.run_sync(image.close)
            except EndpointError as close_error:
                failure.add_note(str(close_error))
        raise
    with trio.CancelScope(shield=True), ceph_errors(name, "close"):
        await trio.to_thread.run_sync(image.close)


async def _missing(ioctx: Any, spec: RbdSpec) -> str:
    """Which of the image or its snapshot does not exist."""
    import rbd

    if spec.snapshot is None:
        return "no such image"
    try:
        names = await trio.to_thread.run_sync(rbd.RBD().list, ioctx)
    except rbd.Error:
        names = []
    if spec.image in names:
        return f"no snapshot {spec.snapshot!r}"
    return "no such image"


class RbdVolume:
    """An open RBD image: the reading half shared by the source and the sink."""

    block_size = 1  # librbd is byte-addressed

    def __init__(self, name: str, image: Any, *, read_only: bool) -> None:
        import rbd

        self.name = name
        self.image = image
        self.image_read_only = read_only
        with ceph_errors(name, "open"):
            info = image.stat()
            self.image_features: int = image.features()
            flags = image.flags()
        self.size: int = info["size"]
        self.io_size: int = info["obj_size"]
        fast_diff = self.image_features & rbd.RBD_FEATURE_FAST_DIFF
        self.whole_object = bool(fast_diff) and not flags & rbd.RBD_FLAG_FAST_DIFF_INVALID
        self._metadata = trio.CapacityLimiter(METADATA_THREADS)
        self._submitters = trio.CapacityLimiter(SUBMIT_THREADS)

    async def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        if length == 0:
            return 0
        target = address_of(buf)

        def deliver(data: bytes, count: int) -> None:  # on the librbd thread
            ctypes.memmove(target, data, count)

        got = await self.complete(
            "read", offset, length, lambda done: self.image.aio_read(offset, length, done), deliver
        )
        if got < length:
            raise EndpointError(self.name, "read", f"short read: {got} bytes", offset, length)
        return got

    async def read_buffer(self, offset: int, length: int) -> bytes:
        """The bytes librbd read, as they are: no copy into a buffer of ours."""
        held: list[bytes] = []

        def keep(data: bytes, count: int) -> None:  # on the librbd thread
            held.append(data)

        got = await self.complete(
            "read", offset, length, lambda done: self.image.aio_read(offset, length, done), keep
        )
        if got < length:
            raise EndpointError(self.name, "read", f"short read: {got} bytes", offset, length)
        return held[0]

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        found: list[tuple[int, int, bool]] = []

        def collect(start: int, count: int, exists: bool) -> int:
            found.append((start, count, exists))
            return 0

        def walk() -> None:
            self.image.diff_iterate(offset, length, None, collect, True, self.whole_object)

        with ceph_errors(self.name, "map", offset, length):
            await trio.to_thread.run_sync(walk, limiter=self._metadata)
        return fill_holes(offset, length, found)

    async def complete(
        self,
        operation: str,
        offset: int | None,
        length: int | None,
        submit: Callable[[Callable[..., None]], object],
        deliver: Callable[[bytes, int], None] | None = None,
        *,
        in_thread: bool = False,
    ) -> int:
        """Submit one aio request and wait for its completion; a failure names the offset.

        ``deliver`` runs on librbd's thread with the bytes read. ``in_thread`` submits from a
        worker thread, for a submission that copies the payload.
        """
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        outcome: list[int | BaseException] = []

        def on_complete(completion: Any, data: bytes | None = None) -> None:
            try:  # on a librbd thread: nothing may escape from here
                value = completion.get_return_value()
                if value > 0 and deliver is not None and data is not None:
                    deliver(data, value)
                outcome.append(value)
            except BaseException as exc:
                outcome.append(exc)
            token.run_sync_soon(done.set)

        with ceph_errors(self.name, operation, offset, length):
            if in_thread:
                await trio.to_thread.run_sync(submit, on_complete, limiter=self._submitters)
            else:
                submit(on_complete)
        with trio.CancelScope(shield=True):  # the request cannot be taken back from librbd;
            await done.wait()  # the image must stay open, and its error be seen, until it ends
        value = outcome[0]
        if isinstance(value, BaseException):
            raise EndpointError(self.name, operation, repr(value), offset, length) from value
        if value < 0:
            raise EndpointError(self.name, operation, os.strerror(-value), offset, length)
        return value


def address_of(view: memoryview) -> int:
    """The address of a writable buffer, for copies that release the GIL (ctypes.memmove)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def payload(data: memoryview) -> bytes:
    """``bytes(data)``, with no copy when data is all of a bytes object already.

    The binding's aio_write takes bytes only. A fresh ``bytes(n)`` comes from calloc (no
    copy, not shared); filling it with ctypes.memmove releases the GIL, so the event loop
    and the other copies go on meanwhile.
    """
    whole = data.obj
    if isinstance(whole, bytes) and data.nbytes == len(whole):
        return whole
    if data.readonly or len(data) < SMALL_PAYLOAD:
        return bytes(data)
    out = bytes(len(data))
    ctypes.memmove(ctypes.c_char_p(out), address_of(data), len(data))
    return out


async def refuse_if_in_use(volume: RbdVolume, role: str, others_allowed: int) -> None:
    """A UsageError if another client has the image open for writing (it holds a watch).

    Writing to an image in use corrupts it; reading the head of one gives a copy of no
    single moment. A snapshot is the way to copy a volume in use.
    """
    with ceph_errors(volume.name, "open"):
        watchers = await trio.to_thread.run_sync(lambda: list(volume.image.watchers_list()))
    own = 0 if volume.image_read_only else 1  # a writable handle watches its image
    if len(watchers) - own > others_allowed:
        others = len(watchers) - own
        hint = "; copy from a snapshot (@SNAP)" if role == "source" else ""
        raise UsageError(f"{role} {volume.name} is in use by {others} other client(s){hint}")


def fill_holes(offset: int, length: int, found: list[tuple[int, int, bool]]) -> list[Extent]:
    """diff_iterate's allocated runs, clipped to the range, with the gaps between as holes."""
    end = offset + length
    extents: list[Extent] = []
    pos = offset
    for start, count, exists in sorted(found):
        start, stop = max(start, pos), min(start + count, end)
        if stop <= start or not exists:
            continue
        if start > pos:
            extents.append(Extent(pos, start - pos, ExtentKind.HOLE))
        extents.append(Extent(start, stop - start, ExtentKind.DATA))
        pos = stop
    if pos < end:
        extents.append(Extent(pos, end - pos, ExtentKind.HOLE))
    return extents
