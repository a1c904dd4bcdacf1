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

import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from asyncopy.endpoint import Extent, ExtentKind
from asyncopy.errors import EndpointError, UsageError

DEFAULT_TIMEOUT = 30.0
METADATA_THREADS = 4


@dataclass(frozen=True)
class CephOptions:
    """How to reach a cluster when the URI does not say, and how long to wait for it."""

    timeout: float = DEFAULT_TIMEOUT  # connect, monitor and OSD operations, in seconds
    conf: str | None = None  # ceph.conf when the URI names none; None: librados' default


@dataclass(frozen=True)
class RbdSpec:
    """A parsed ``rbd:`` URI."""

    pool: str
    image: str
    namespace: str = ""
    snapshot: str | None = None
    conf: str | None = None
    user: str | None = None
    keyring: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        """The URI without its options: what messages call the image."""
        path = "/".join(part for part in (self.pool, self.namespace, self.image) if part)
        return f"rbd:{path}" + (f"@{self.snapshot}" if self.snapshot else "")


_FIELD = re.compile(r"(?:\\.|[^:\\])+")
_NAME = re.compile(r"^[^/@\s]+$")


def parse_rbd(text: str) -> RbdSpec:
    """Parse what follows ``rbd:``; bad input is a UsageError naming what is wrong."""
    fields = _split(text)
    if not fields or not fields[0]:
        raise UsageError(f"rbd:{text}: expected rbd:POOL/IMAGE[@SNAP][:option=value...]")
    path, _, snapshot = fields[0].partition("@")
    parts = path.split("/")
    if len(parts) not in (2, 3) or not all(_NAME.match(part) for part in parts):
        raise UsageError(f"rbd:{path}: expected POOL/IMAGE or POOL/NAMESPACE/IMAGE")
    if "@" in fields[0] and not snapshot:
        raise UsageError(f"rbd:{fields[0]}: empty snapshot name after @")
    known: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for item in fields[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"rbd:{path}: option {key!r} needs the form key=value")
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
            raise UsageError(f"rbd:{text}: bad character at position {end}")
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
            ioctx = await trio.to_thread.run_sync(cluster.open_ioctx, spec.pool)
        except rados.ObjectNotFound as exc:
            raise UsageError(f"{name}: no pool {spec.pool!r}") from exc
        try:
            if spec.namespace:
                ioctx.set_namespace(spec.namespace)
            yield ioctx
        finally:
            ioctx.close()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.shutdown)


def _client(spec: RbdSpec, options: CephOptions) -> Any:
    import rados

    seconds = str(max(1, round(options.timeout)))
    conf = {
        "rados_osd_op_timeout": seconds,
        "rados_mon_op_timeout": seconds,
        "client_mount_timeout": seconds,
    }
    conf.update(spec.options)
    if spec.keyring:
        conf["keyring"] = spec.keyring
    conffile = spec.conf or options.conf
    if conffile is not None and not os.path.isfile(conffile):
        raise UsageError(f"{spec}: no ceph configuration file {conffile}")
    try:
        return rados.Rados(rados_id=spec.user, conffile=conffile, conf=conf)
    except rados.Error as exc:
        raise UsageError(f"{spec}: bad ceph configuration: {_reason(exc)}") from exc


@asynccontextmanager
async def open_image(ioctx: Any, spec: RbdSpec, *, read_only: bool) -> AsyncIterator[Any]:
    """An open ``rbd.Image`` (at the spec's snapshot, if any), closed on every path."""
    import rbd

    name = str(spec)
    try:
        image = await trio.to_thread.run_sync(
            lambda: rbd.Image(ioctx, spec.image, snapshot=spec.snapshot, read_only=read_only)
        )
    except rbd.ImageNotFound as exc:
        what = f"no snapshot {spec.snapshot!r}" if spec.snapshot else "no such image"
        raise UsageError(f"{name}: {what}") from exc
    except rbd.Error as exc:
        raise EndpointError(name, "open", _reason(exc)) from exc
    try:
        yield image
    finally:
        with trio.CancelScope(shield=True), ceph_errors(name, "close"):
            await trio.to_thread.run_sync(image.close)


class RbdVolume:
    """An open RBD image: the reading half shared by the source and the sink."""

    block_size = 1  # librbd is byte-addressed

    def __init__(self, name: str, image: Any) -> None:
        import rbd

        self.name = name
        self.image = image
        info = image.stat()
        self.size: int = info["size"]
        self.io_size: int = info["obj_size"]
        fast_diff = image.features() & rbd.RBD_FEATURE_FAST_DIFF
        self.whole_object = bool(fast_diff) and not image.flags() & rbd.RBD_FLAG_FAST_DIFF_INVALID
        self._metadata = trio.CapacityLimiter(METADATA_THREADS)

    async def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        if length == 0:
            return 0
        got, data = await self.complete(
            "read", offset, length, lambda done: self.image.aio_read(offset, length, done)
        )
        assert data is not None
        buf[:got] = data
        if got < length:
            raise EndpointError(self.name, "read", f"short read: {got} bytes", offset, length)
        return got

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
    ) -> tuple[int, bytes | None]:
        """Submit one aio request and wait for its completion; a failure names the offset."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        result: list[tuple[int, bytes | None]] = []

        def on_complete(completion: Any, data: bytes | None = None) -> None:
            result.append((completion.get_return_value(), data))  # on a librbd thread
            token.run_sync_soon(done.set)

        with ceph_errors(self.name, operation, offset, length):
            submit(on_complete)
        with trio.CancelScope(shield=True):  # librbd owns the buffer until it completes
            await done.wait()
        value, data = result[0]
        if value < 0:
            reason = os.strerror(-value)
            raise EndpointError(self.name, operation, reason, offset, length)
        return value, data


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
