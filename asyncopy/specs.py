"""From what an operator types to an open endpoint: a path or ``file:PATH``,
``rbd:POOL/IMAGE``, ``iscsi://HOST/IQN/LUN``, or ``brick:CONNECTION_INFO.json`` (attached
through os-brick).

Each kind's endpoint module is imported when a spec of that kind is opened: the librbd and
libiscsi bindings and os-brick load only for the copies that use them.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from asyncopy.access.ceph import CephOptions, RbdCreate, parse_rbd
from asyncopy.access.iscsi import IscsiOptions, parse_iscsi
from asyncopy.access.posix import kind_of
from asyncopy.core.endpoint import Sink, Volume
from asyncopy.errors import UsageError
from asyncopy.sinks.blockdev import open_block_sink
from asyncopy.sinks.file import open_file_sink
from asyncopy.sources.blockdev import open_block_source
from asyncopy.sources.file import open_file_source

SCHEMES = ("file", "rbd", "iscsi", "brick")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class EndpointOptions:
    """What opening an endpoint may need beyond its URI."""

    ceph: CephOptions = field(default_factory=CephOptions)
    create: RbdCreate = field(default_factory=RbdCreate)  # for a missing destination image
    iscsi: IscsiOptions = field(default_factory=IscsiOptions)
    root_helper: str = "sudo"  # for os-brick (brick:CONNECTION_INFO.json)


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
        raise UsageError(f"{spec}: nothing after {scheme}:")
    return scheme, match.group(2)


def check(spec: str) -> None:
    """Parse a spec completely (bad input fails here, before anything is opened)."""
    scheme, rest = parse(spec)
    if scheme == "rbd":
        parse_rbd(rest)
    if scheme == "iscsi":
        parse_iscsi(rest)
    if scheme == "brick":
        from asyncopy.access.brick import load_connection_info

        load_connection_info(rest)


def secret_in(spec: str) -> str | None:
    """A warning if ``spec`` carries a secret, which anyone can read on a command line (``ps``,
    ``/proc/PID/cmdline``), and the way to give it that is not; None if it carries none."""
    scheme, rest = parse(spec)
    if scheme == "rbd":
        rbd = parse_rbd(rest)
        if any(key == "key" for key, _ in rbd.options):
            return (
                f"{rbd}: a key on the command line can be read by every user of this host; "
                "name a keyring file instead (:keyring=PATH, or keyring in ceph.conf)"
            )
    if scheme == "iscsi":
        iscsi = parse_iscsi(rest)
        if iscsi.password is not None:
            return (
                f"{iscsi}: a CHAP password on the command line can be read by every user of "
                "this host; set LIBISCSI_CHAP_PASSWORD (and LIBISCSI_CHAP_USERNAME) instead"
            )
    return None


@asynccontextmanager
async def open_source(spec: str, options: EndpointOptions | None = None) -> AsyncIterator[Volume]:
    """Open the endpoint named by ``spec`` read-only."""
    options = options or EndpointOptions()
    scheme, rest = parse(spec)
    if scheme == "rbd":
        from asyncopy.sources.rbd import open_rbd_source

        async with open_rbd_source(parse_rbd(rest), options.ceph) as image:
            yield image
        return
    if scheme == "iscsi":
        from asyncopy.sources.iscsi import open_iscsi_source

        async with open_iscsi_source(parse_iscsi(rest), options.iscsi) as lun:
            yield lun
        return
    if scheme == "brick":
        from asyncopy.access.brick import load_connection_info, open_brick_source

        info = load_connection_info(rest)
        async with open_brick_source(info, root_helper=options.root_helper) as device:
            yield device
        return
    kind = kind_of(rest)
    if kind is None:
        raise UsageError(f"source {rest}: no such file or device")
    opener = open_block_source if kind == "block" else open_file_source
    async with opener(rest) as volume:
        yield volume


@asynccontextmanager
async def open_sink(
    spec: str,
    *,
    size: int,
    target_is_zero: bool = False,
    options: EndpointOptions | None = None,
) -> AsyncIterator[Sink]:
    """Open the endpoint named by ``spec`` for writing ``size`` bytes; create what is missing."""
    options = options or EndpointOptions()
    scheme, rest = parse(spec)
    if scheme == "rbd":
        from asyncopy.sinks.rbd import open_rbd_sink

        async with open_rbd_sink(
            parse_rbd(rest),
            size=size,
            options=options.ceph,
            create=options.create,
            target_is_zero=target_is_zero,
        ) as image:
            yield image
        return
    if scheme == "iscsi" and not options.create.given():
        from asyncopy.sinks.iscsi import open_iscsi_sink

        async with open_iscsi_sink(
            parse_iscsi(rest), size=size, options=options.iscsi, target_is_zero=target_is_zero
        ) as lun:
            yield lun
        return
    if scheme == "brick" and not options.create.given():
        from asyncopy.access.brick import load_connection_info, open_brick_sink

        info = load_connection_info(rest)
        async with open_brick_sink(
            info, size=size, target_is_zero=target_is_zero, root_helper=options.root_helper
        ) as device:
            yield device
        return
    if options.create.given():
        chosen = ", ".join(options.create.given())
        raise UsageError(f"{spec}: {chosen} apply to an rbd: destination only")
    kind = kind_of(rest)
    if kind == "block":
        async with open_block_sink(rest, size=size, target_is_zero=target_is_zero) as sink:
            yield sink
    else:
        async with open_file_sink(
            rest, size=size, exists=kind == "file", target_is_zero=target_is_zero
        ) as file_sink:
            yield file_sink
