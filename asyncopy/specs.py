"""From a description to an open endpoint, one way for every caller.

What an operator types (a path or ``file:PATH``, ``rbd:POOL/IMAGE``, ``iscsi://HOST/IQN/LUN``,
``brick:CONNECTION_INFO.json``) and what Cinder hands over (a ``connection_info`` dict) both
become a spec, checked when it is made: ``PathSpec``, ``RbdSpec``, ``IscsiSpec`` or
``BrickSpec`` (attached through os-brick). ``open_source`` and ``open_sink`` open a spec.

Each kind's endpoint module is imported when a spec of that kind is opened: the librbd and
libiscsi bindings and os-brick load only for the copies that use them.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from asyncopy.access.brick import BrickSpec, brick_spec, load_connection_info
from asyncopy.access.ceph import CephOptions, RbdCreate, RbdSpec, parse_rbd, rbd_spec_of
from asyncopy.access.iscsi import IscsiOptions, IscsiSpec, iscsi_spec_of, parse_iscsi
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
class PathSpec:
    """A local file or block device (which of the two is found when it is opened)."""

    path: str

    def __str__(self) -> str:
        return self.path


Spec = PathSpec | RbdSpec | IscsiSpec | BrickSpec


@dataclass(frozen=True)
class EndpointOptions:
    """What opening an endpoint may need beyond its spec."""

    ceph: CephOptions = field(default_factory=CephOptions)
    create: RbdCreate = field(default_factory=RbdCreate)  # for a missing destination image
    iscsi: IscsiOptions = field(default_factory=IscsiOptions)
    root_helper: str = "sudo"  # for os-brick (brick:CONNECTION_INFO.json)


def parse(text: str) -> tuple[str, str]:
    """(scheme, rest) of an endpoint URI; a plain path is ``file``."""
    if not text:
        raise UsageError("empty endpoint")
    match = _SCHEME.match(text)
    if match is None or os.path.exists(text):
        return "file", text
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise UsageError(f"{text}: unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    if not match.group(2):
        raise UsageError(f"{text}: nothing after {scheme}:")
    return scheme, match.group(2)


def from_uri(text: str) -> Spec:
    """The spec a URI names, parsed completely: bad input fails here, before any I/O."""
    scheme, rest = parse(text)
    if scheme == "rbd":
        return parse_rbd(rest)
    if scheme == "iscsi":
        return parse_iscsi(rest)
    if scheme == "brick":
        return load_connection_info(rest)
    return PathSpec(rest)


def from_connection_info(info: Mapping[str, Any], *, iscsi_transport: str = "brick") -> Spec:
    """The spec a Cinder ``connection_info`` describes.

    ``rbd`` is reached straight through librbd from the dict (monitors, user, keyring; never
    os-brick's serial file wrapper), ``iscsi`` through asyncopy's user-space initiator when
    ``iscsi_transport`` is ``userspace``, everything else (``iscsi`` by default) through its
    os-brick connector.
    """
    spec = brick_spec(info)
    if spec.kind == "rbd":
        return rbd_spec_of(spec.data)
    if spec.kind == "iscsi" and iscsi_transport == "userspace":
        return iscsi_spec_of(spec.data)
    return spec


def check(text: str) -> None:
    """Parse a URI completely (bad input fails here, before anything is opened)."""
    from_uri(text)


def secret_in(text: str) -> str | None:
    """A warning if the URI carries a secret, which anyone can read on a command line (``ps``,
    ``/proc/PID/cmdline``), and the way to give it that is not; None if it carries none."""
    spec = from_uri(text)
    if isinstance(spec, RbdSpec) and any(key == "key" for key, _ in spec.options):
        return (
            f"{spec}: a key on the command line can be read by every user of this host; "
            "name a keyring file instead (:keyring=PATH, or keyring in ceph.conf)"
        )
    if isinstance(spec, IscsiSpec) and spec.password is not None:
        return (
            f"{spec}: a CHAP password on the command line can be read by every user of "
            "this host; set LIBISCSI_CHAP_PASSWORD (and LIBISCSI_CHAP_USERNAME) instead"
        )
    return None


@asynccontextmanager
async def open_source(
    spec: Spec | str, options: EndpointOptions | None = None
) -> AsyncIterator[Volume]:
    """Open the endpoint ``spec`` (a Spec, or a URI) names, read-only."""
    options = options or EndpointOptions()
    spec = from_uri(spec) if isinstance(spec, str) else spec
    if isinstance(spec, RbdSpec):
        from asyncopy.sources.rbd import open_rbd_source

        async with open_rbd_source(spec, options.ceph) as image:
            yield image
    elif isinstance(spec, IscsiSpec):
        from asyncopy.sources.iscsi import open_iscsi_source

        async with open_iscsi_source(spec, options.iscsi) as lun:
            yield lun
    elif isinstance(spec, BrickSpec):
        from asyncopy.sources.brick import open_brick_source

        async with open_brick_source(spec, root_helper=options.root_helper) as device:
            yield device
    else:
        kind = kind_of(spec.path)
        if kind is None:
            raise UsageError(f"source {spec.path}: no such file or device")
        opener = open_block_source if kind == "block" else open_file_source
        async with opener(spec.path) as volume:
            yield volume


@asynccontextmanager
async def open_sink(
    spec: Spec | str,
    *,
    size: int,
    target_is_zero: bool = False,
    options: EndpointOptions | None = None,
    must_exist: bool = False,
    keep_on_failure: bool = False,
) -> AsyncIterator[Sink]:
    """Open the endpoint ``spec`` names for writing ``size`` bytes; unless ``must_exist``,
    create a missing file or image, removed again if the copy fails unless
    ``keep_on_failure`` (or, for an image, ``options.create.keep_on_failure``)."""
    options = options or EndpointOptions()
    spec = from_uri(spec) if isinstance(spec, str) else spec
    if options.create.given() and not isinstance(spec, RbdSpec):
        chosen = ", ".join(options.create.given())
        raise UsageError(f"{spec}: {chosen} apply to an rbd: destination only")
    if isinstance(spec, RbdSpec):
        from asyncopy.sinks.rbd import open_rbd_sink

        async with open_rbd_sink(
            spec,
            size=size,
            options=options.ceph,
            create=replace(options.create, keep_on_failure=True)
            if keep_on_failure
            else options.create,
            target_is_zero=target_is_zero,
            must_exist=must_exist,
        ) as image:
            yield image
    elif isinstance(spec, IscsiSpec):
        from asyncopy.sinks.iscsi import open_iscsi_sink

        async with open_iscsi_sink(
            spec, options=options.iscsi, target_is_zero=target_is_zero
        ) as lun:
            yield lun
    elif isinstance(spec, BrickSpec):
        from asyncopy.sinks.brick import open_brick_sink

        async with open_brick_sink(
            spec, target_is_zero=target_is_zero, root_helper=options.root_helper
        ) as device:
            yield device
    else:
        async with _open_path_sink(
            spec.path, size, target_is_zero, must_exist, keep_on_failure
        ) as sink:
            yield sink


@asynccontextmanager
async def _open_path_sink(
    path: str, size: int, target_is_zero: bool, must_exist: bool, keep_on_failure: bool
) -> AsyncIterator[Sink]:
    kind = kind_of(path)
    if kind == "block":
        async with open_block_sink(path, target_is_zero=target_is_zero) as sink:
            yield sink
        return
    if kind is None and must_exist:
        raise UsageError(f"destination {path}: no such file or device")
    create_size = None if kind == "file" else size
    async with open_file_sink(
        path,
        create_size=create_size,
        target_is_zero=target_is_zero,
        keep_on_failure=keep_on_failure,
    ) as file_sink:
        yield file_sink
