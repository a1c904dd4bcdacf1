"""Endpoints from Cinder ``connection_info`` dicts: the blueprint's open_volume/close_volume.

``open_volume(connection_info, read_only=..., conf=...)`` opens what a volume driver's
``initialize_connection`` describes: ``rbd`` straight through librbd from the dict (monitors,
user, keyring; never os-brick's serial file wrapper), ``iscsi`` through os-brick or asyncopy's
user-space initiator (``[asyncopy] iscsi_transport``), and any other protocol through its
os-brick connector and the block-device endpoint. Closing detaches, on every path.

This module runs trio; cinder-volume (eventlet) calls ``asyncopy.cinder``, which runs
``python -m asyncopy.cinder.child`` as a child: a request as the first line of stdin, then
``{"rate": N}`` lines that change the copy's limit (bytes per second, 0 for none) as other
copies under the same Cinder throttle start and end; JSON lines on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import trio
from oslo_config import cfg

from asyncopy.access.brick import open_brick_sink, open_brick_source
from asyncopy.access.ceph import CephOptions, RbdSpec
from asyncopy.access.iscsi import IscsiOptions, IscsiSpec
from asyncopy.api import run_interruptibly
from asyncopy.cinder import config
from asyncopy.core.endpoint import Extent, Sink, Volume
from asyncopy.core.engine import CopyResult, Progress, copy
from asyncopy.core.pipeline import run_all
from asyncopy.core.rate import RateLimit
from asyncopy.errors import CopyFailed, Terminated, UsageError
from asyncopy.process import exit_process, io_priority, set_io_priority, tune_for_copy
from asyncopy.sinks.iscsi import open_iscsi_sink
from asyncopy.sinks.rbd import open_rbd_sink
from asyncopy.sources.iscsi import open_iscsi_source
from asyncopy.sources.rbd import open_rbd_source
from asyncopy.specs import EndpointOptions, open_sink, open_source

MiB = 1 << 20
T = TypeVar("T")


@asynccontextmanager
async def open_volume(
    connection_info: Mapping[str, Any],
    *,
    read_only: bool,
    conf: cfg.ConfigOpts | None = None,
) -> AsyncIterator[Volume]:
    """Open a Cinder volume from its ``connection_info``; closed (detached) on every path.

    A writable volume is a ``Sink`` that must exist already (Cinder created it); it is not
    trusted to read zeros.

    Args:
        connection_info: what the volume driver's ``initialize_connection`` returned.
        read_only: open for reading only (a source).
        conf: a ConfigOpts with the ``[asyncopy]`` options registered; defaults if None.

    Raises:
        UsageError: the connection_info is not usable; nothing was attached.
        CopyFailed: attaching or opening failed.
    """
    conf = conf or config.load([])
    if read_only:
        async with open_source_volume(connection_info, conf) as volume:
            yield volume
    else:
        async with open_sink_volume(connection_info, conf) as sink:
            yield sink


@asynccontextmanager
async def open_source_volume(
    connection_info: Mapping[str, Any], conf: cfg.ConfigOpts
) -> AsyncIterator[Volume]:
    kind, data = _parse(connection_info)
    group = config.group(conf)
    if kind == "rbd":
        with rbd_spec(data) as spec:
            async with open_rbd_source(spec, CephOptions(timeout=group.ceph_timeout)) as image:
                yield image
    elif kind == "iscsi" and group.iscsi_transport == "userspace":
        iscsi = IscsiOptions(timeout=group.iscsi_timeout)
        async with open_iscsi_source(iscsi_spec(data), iscsi) as lun:
            yield lun
    else:
        async with open_brick_source(connection_info, root_helper=group.root_helper) as device:
            yield device


@asynccontextmanager
async def open_sink_volume(
    connection_info: Mapping[str, Any], conf: cfg.ConfigOpts, *, target_is_zero: bool = False
) -> AsyncIterator[Sink]:
    kind, data = _parse(connection_info)
    group = config.group(conf)
    if kind == "rbd":
        with rbd_spec(data) as spec:
            async with open_rbd_sink(
                spec,
                size=0,
                options=CephOptions(timeout=group.ceph_timeout),
                target_is_zero=target_is_zero,
                must_exist=True,
            ) as image:
                yield image
    elif kind == "iscsi" and group.iscsi_transport == "userspace":
        iscsi = IscsiOptions(timeout=group.iscsi_timeout)
        async with open_iscsi_sink(
            iscsi_spec(data), size=0, options=iscsi, target_is_zero=target_is_zero
        ) as lun:
            yield lun
    else:
        async with open_brick_sink(
            connection_info, size=0, target_is_zero=target_is_zero, root_helper=group.root_helper
        ) as device:
            yield device


def _parse(connection_info: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = connection_info.get("driver_volume_type")
    data = connection_info.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise UsageError("connection_info needs 'driver_volume_type' (a string) and 'data'")
    return kind.lower(), data


@contextmanager
def rbd_spec(data: Mapping[str, Any]) -> Iterator[RbdSpec]:
    """The image an ``rbd`` connection_info names, reached through its monitors.

    A keyring in the dict (its contents) is never written anywhere: its key goes to
    librados as the ``key`` option, in memory, for as long as the spec is in use.
    """
    name = data.get("name")
    if not isinstance(name, str) or name.count("/") not in (1, 2):
        raise UsageError("rbd connection_info: 'name' must be POOL/IMAGE")
    pool, *namespace, image = name.split("/")
    hosts, ports = data.get("hosts") or [], data.get("ports") or []
    monitors = ",".join(_monitor(host, port) for host, port in zip(hosts, ports, strict=False))
    options = [("mon_host", monitors)] if monitors else []
    user = data.get("auth_username") if data.get("auth_enabled", True) else None
    keyring = data.get("keyring")
    if keyring:
        options.append(("key", key_of(str(keyring), user)))
    yield RbdSpec(
        pool=pool,
        namespace=namespace[0] if namespace else "",
        image=image,
        user=user,
        options=tuple(options),
    )


def _monitor(host: str, port: object) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}"


def key_of(keyring: str, user: str | None) -> str:
    """The key of ``client.USER`` (``client.admin`` when None) in a keyring's text, or its
    only key; never shown in an error."""
    wanted, section = f"client.{user or 'admin'}", ""
    found: dict[str, str] = {}
    for line in keyring.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        name, sep, value = line.partition("=")
        if sep and name.strip() == "key" and value.strip():
            found.setdefault(section, value.strip())
    if wanted in found:
        return found[wanted]
    if len(found) == 1:
        return next(iter(found.values()))
    raise UsageError(f"rbd connection_info: the keyring holds no key for {wanted}")


def iscsi_spec(data: Mapping[str, Any]) -> IscsiSpec:
    """The LUN an ``iscsi`` connection_info names (its first portal), with its CHAP secret."""
    try:
        portal = data.get("target_portal") or data["target_portals"][0]
        target = data.get("target_iqn") or data["target_iqns"][0]
        lun = int(data.get("target_lun", (data.get("target_luns") or [0])[0]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UsageError(
            "iscsi connection_info: needs target_portal, target_iqn, target_lun"
        ) from exc
    host, _, port = str(portal).rpartition(":")
    chap = str(data.get("auth_method", "")).upper() == "CHAP"
    return IscsiSpec(
        host=host or str(portal),
        port=int(port) if port.isdigit() else 3260,
        target=str(target),
        lun=lun,
        user=data.get("auth_username") if chap else None,
        password=data.get("auth_password") if chap else None,
    )


class Window:
    """The first ``size`` bytes of a volume: what Cinder's size says to copy."""

    def __init__(self, inner: Volume, size: int) -> None:
        if inner.size < size:
            raise UsageError(f"source {inner.name} is {inner.size} bytes, smaller than {size}")
        self.inner = inner
        self.name = inner.name
        self.size = size
        self.block_size = inner.block_size
        self.io_size = inner.io_size

    async def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        return await self.inner.read_into(offset, buf[:length]) if length else 0

    async def extents(self, offset: int, length: int) -> list[Extent]:
        end = min(offset + length, self.size)
        found = await self.inner.extents(offset, end - offset)
        return [
            Extent(e.offset, min(e.end, end) - e.offset, e.kind) for e in found if e.offset < end
        ]


@asynccontextmanager
async def open_described_source(
    description: Mapping[str, Any], conf: cfg.ConfigOpts
) -> AsyncIterator[Volume]:
    """A source from ``{"connection_info": {...}}`` or ``{"uri": ..., "callers_handles": n}``."""
    if "connection_info" in description:
        async with open_source_volume(description["connection_info"], conf) as volume:
            yield volume
    else:
        async with open_source(str(description["uri"]), _uri_options(description, conf)) as v:
            yield v


@asynccontextmanager
async def open_described_sink(
    description: Mapping[str, Any], conf: cfg.ConfigOpts, size: int, target_is_zero: bool
) -> AsyncIterator[Sink]:
    """A sink for ``size`` bytes, described as for ``open_described_source``."""
    if "connection_info" in description:
        info = description["connection_info"]
        async with open_sink_volume(info, conf, target_is_zero=target_is_zero) as sink:
            yield sink
    else:
        options = _uri_options(description, conf)
        spec = str(description["uri"])
        async with open_sink(spec, size=size, target_is_zero=target_is_zero, options=options) as s:
            yield s


def _uri_options(description: Mapping[str, Any], conf: cfg.ConfigOpts) -> EndpointOptions:
    options = config.endpoint_options(conf)
    handles = int(description.get("callers_handles", 0))
    return replace(options, ceph=replace(options.ceph, callers_handles=handles))


async def migrate(
    src: Mapping[str, Any],
    dst: Mapping[str, Any],
    size: int,
    *,
    conf: cfg.ConfigOpts,
    target_is_zero: bool = False,
    progress: Callable[[Progress], None] | None = None,
    verify: bool | None = None,
    rate: RateLimit | None = None,
) -> CopyResult:
    """Copy the first ``size`` bytes of one endpoint onto another, in this event loop.

    ``verify`` None takes ``[asyncopy] verify``; ``rate`` limits the bytes read.
    """
    options = replace(config.copy_options(conf), digests=False)  # hashed if verifying
    if verify is not None:
        options = replace(options, verify=verify)
    async with (
        open_described_source(src, conf) as source,
        open_described_sink(dst, conf, size, target_is_zero) as sink,
    ):
        return await copy(Window(source, size), sink, options, progress, rate)


# -- the child process of asyncopy.cinder.copy_volume_data ------------------------------------


def child_main() -> int:
    """``python -m asyncopy.cinder.child``: one copy, asked on stdin, answered in JSON lines."""
    try:
        request, control = _read_request()
        conf = config.load(list(request["config_files"]), dict(request.get("defaults") or {}))
        ionice = request.get("ionice") or config.group(conf).ionice
        if ionice:  # before any thread starts: they inherit it
            _set_io_priority(str(ionice))
        tune_for_copy()
        verify = request.get("verify")

        def report(done: Progress) -> None:
            line = {"done": done.done, "total": done.total, "skipped": done.skipped}
            print(json.dumps({"progress": line}), flush=True)

        async def job() -> CopyResult:
            rate = RateLimit(_rate(request.get("rate", 0)))
            copying = migrate(
                request["src"],
                request["dst"],
                int(request["size"]),
                conf=conf,
                target_is_zero=bool(request["target_is_zero"]),
                progress=report,
                verify=None if verify is None else bool(verify),
                rate=rate,
            )
            return await following_rate(control, rate, copying)

        result = run_interruptibly(job)
    except (UsageError, CopyFailed) as exc:
        print(" ".join([str(exc), *getattr(exc, "__notes__", [])]), file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except (KeyError, ValueError, TypeError) as exc:
        print(f"bad request: {exc!r}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the copy was cancelled and cleaned up", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated: the copy was cancelled and cleaned up", file=sys.stderr)
        return 143
    print(json.dumps({"result": result.summary()}), flush=True)
    return 0


def _read_request(fd: int = 0) -> tuple[dict[str, Any], bytes]:
    """The request (stdin's first line), and what was read past it, read unbuffered so that
    the control lines after it are left to ``follow_rate``."""
    data = b""
    while b"\n" not in data:
        piece = os.read(fd, 1 << 16)
        if not piece:
            break
        data += piece
    line, _, rest = data.partition(b"\n")
    request = json.loads(line)
    if not isinstance(request, dict):
        raise TypeError("the request must be a JSON object")
    return request, rest


def _set_io_priority(ionice: str) -> None:
    try:
        set_io_priority(io_priority(ionice))
    except OSError as exc:
        raise UsageError(f"cannot set the I/O priority {ionice!r}: {exc.strerror}") from exc


def _rate(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"a rate must be a number of bytes per second, not {value!r}")
    return value


async def following_rate(already: bytes, rate: RateLimit, work: Awaitable[T]) -> T:
    """Await ``work`` while the rate lines on stdin change ``rate``; its error raised alone."""
    following = trio.CancelScope()
    done: list[T] = []

    async def copying() -> None:
        try:
            done.append(await work)
        finally:
            following.cancel()

    async def follow() -> None:
        with following:
            await follow_rate(already, rate)

    await run_all([copying, follow])
    return done[0]


async def follow_rate(already: bytes, rate: RateLimit, fd: int = 0) -> None:
    """Apply each ``{"rate": N}`` line of ``fd`` (after ``already``).

    The caller keeps ``fd`` open until the copy has answered; its end means the caller is
    gone (killed, or its service stopping), and the copy stops rather than write on alone.
    """
    pending = already
    async with trio.lowlevel.FdStream(os.dup(fd)) as stream:
        while True:
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    rate.set_rate(_rate(json.loads(line)["rate"]))
            piece = await stream.receive_some()
            if not piece:
                raise CopyFailed("the caller closed the copy's control channel: copy abandoned")
            pending += piece


if __name__ == "__main__":
    exit_process(child_main())
