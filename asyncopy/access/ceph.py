"""How an RBD image is named and reached: the URI, the client settings, errors mapped once.

The URI is qemu's, which operators already type::

    rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:conf=PATH][:id=USER][:keyring=PATH][:OPTION=VALUE...]

Other ``OPTION=VALUE`` pairs are librados configuration, as in qemu, but only these
(``OPTIONS``): ``mon_host`` (the monitors), ``key`` (the secret itself), ``auth_supported``
and ``auth_client_required`` (the authentication methods, as Nova and Cinder's qemu URIs
carry them) and ``rbd_sparse_read_threshold_bytes``. Any other option is refused as bad
input before anything is opened: librados acts on paths (``admin_socket`` unlinks its path
to make a socket, ``log_file`` writes its own) and on its timeouts, which are
``--ceph-timeout``'s. The same holds for a spec made from a Cinder ``connection_info``
(monitors, user, key). A ``:`` inside a value is written ``\\:``. Values never appear in
messages.

The client is librados through ``asyncopy.access.librbd`` (one connection per cluster per process,
aio completions on an eventfd). asyncopy always sets the librados timeouts (``--ceph-timeout``),
turns the librbd cache off (writes reach the OSDs before they complete, so an error names its
offset, and a verifying re-read comes from the OSDs, not from this client's memory) and has
librbd send writes from the caller's buffer (zero-copy), which stays untouched until the write
completes. A request that has not completed after twice the timeout fails the copy, and a
connection not made within the timeout fails it too (librados may be reading a file that
never ends, or waiting on monitors that never answer). The ceph.conf and keyring a URI
names must be regular files (``asyncopy.access.conffile``).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from asyncopy.access.conffile import check_regular
from asyncopy.errors import EndpointError, RbdError, UsageError, map_errors

if TYPE_CHECKING:  # the binding loads librbd and librados: only copies that use RBD pay
    from asyncopy.access.librbd import Image, Pool, Settings

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CephOptions:
    """How to reach a cluster when the URI does not say, and how long to wait for it."""

    timeout: float = DEFAULT_TIMEOUT  # connect, monitor and OSD operations, in seconds
    conf: str | None = None  # ceph.conf when the URI names none; None: librados' default
    # Clients besides this one known to hold the image open: the caller's own handle, when a
    # caller hands over an image it opened (os-brick's RBDVolumeIOWrapper). Any more: refused.
    callers_handles: int = 0


FEATURES = {
    "layering": 1 << 0,
    "striping": 1 << 1,
    "exclusive-lock": 1 << 2,
    "object-map": 1 << 3,
    "fast-diff": 1 << 4,
    "deep-flatten": 1 << 5,
    "journaling": 1 << 6,
}


@dataclass(frozen=True)
class RbdCreate:
    """How a missing destination image is created, and what happens to it on failure."""

    object_size: int | None = None  # bytes, a power of two; None: as below
    features: tuple[str, ...] | None = None  # names from FEATURES; None: the cluster's default
    data_pool: str | None = None
    keep_on_failure: bool = False
    default_object_size: int | None = None  # an RBD source's; None: the cluster's default

    def given(self) -> list[str]:
        """The creation settings the caller chose (they make no sense for an existing image)."""
        chosen = {"object size": self.object_size, "features": self.features}
        return [name for name, value in (*chosen.items(), ("data pool", self.data_pool)) if value]

    def order(self) -> int | None:
        size = self.object_size or self.default_object_size
        if size is None:
            return None
        if size < 4096 or size & (size - 1):
            raise UsageError(f"object size {size} must be a power of two of at least 4096")
        return size.bit_length() - 1

    def feature_bits(self) -> int | None:
        if self.features is None:
            return None
        unknown = [name for name in self.features if name not in FEATURES]
        if unknown:
            known = ", ".join(FEATURES)
            raise UsageError(f"unknown image feature(s) {', '.join(unknown)} (known: {known})")
        return sum(FEATURES[name] for name in set(self.features))


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

    def __post_init__(self) -> None:
        for key, _ in self.options:
            if key in _TIMEOUTS:
                raise UsageError(f"{self}: set {key} with --ceph-timeout")
            if key not in OPTIONS:
                raise UsageError(
                    f"{self}: bad ceph option {key!r}: not accepted (accepted: "
                    f"conf, id, keyring, {', '.join(OPTIONS)})"
                )

    def __str__(self) -> str:
        """The URI without its options: what messages call the image."""
        path = "/".join(part for part in (self.pool, self.namespace, self.image) if part)
        return f"rbd:{path}" + (f"@{self.snapshot}" if self.snapshot else "")


_FIELD = re.compile(r"(?:\\.|[^:\\])+")
_NAME = re.compile(r"[^/@\s]+")
USAGE = "expected rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:option=value...]"
# librbd options asyncopy sets unless the URI does. Plain reads, not sparse ones: librbd
# assembles a sparse read's reply in a second buffer (peak RSS grows by a chunk per request
# in flight), for no less CPU; it saves only the wire bytes of holes inside objects.
DEFAULTS = {"rbd_sparse_read_threshold_bytes": str(1 << 40)}
# The librados options a URI or a connection_info may set, besides conf, id and keyring
OPTIONS = (
    "mon_host",
    "key",
    "auth_supported",
    "auth_client_required",
    "rbd_sparse_read_threshold_bytes",
)
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


def settings(spec: RbdSpec, options: CephOptions, direction: str = "read") -> Settings:
    """The client settings: the spec's options, then asyncopy's own, which always win; a
    ``direction`` ("read" or "write") of its own, so that a source and a destination on one
    cluster never share a connection."""
    from asyncopy.access.librbd import Settings

    conffile = spec.conf or options.conf
    if conffile is not None:
        if not os.path.lexists(conffile):
            raise UsageError(f"{spec}: no ceph configuration file {conffile}")
        check_regular(conffile, f"{spec}: ceph configuration file")
    for path in (spec.keyring or "").split(","):  # librados takes a list, first found
        if path and os.path.lexists(path):
            check_regular(path, f"{spec}: keyring")
    seconds = str(max(1, round(options.timeout)))
    forced = {key: seconds for key in _TIMEOUTS} | {
        "rbd_cache": "false",
        "rbd_disable_zero_copy_writes": "false",
    }
    keyring = [("keyring", spec.keyring)] if spec.keyring else []
    return Settings(
        conffile,
        spec.user,
        (*DEFAULTS.items(), *spec.options, *keyring, *forced.items()),
        direction,
    )


@asynccontextmanager
async def connect(
    spec: RbdSpec, options: CephOptions, direction: str = "read"
) -> AsyncIterator[Pool]:
    """The spec's pool (and namespace) on the process's connection to its cluster for
    ``direction`` ("read" or "write")."""
    from asyncopy.access.librbd import pool

    name = str(spec)
    client = settings(spec, options, direction)
    try:
        deadline = 2 * options.timeout
        async with pool(client, spec.pool, spec.namespace, deadline, options.timeout) as ioctx:
            yield ioctx
    except RbdError as exc:
        if exc.call == "rados_conf_read_file":
            raise UsageError(f"{name}: bad ceph configuration: {os.strerror(exc.errno)}") from exc
        if exc.call == "rados_conf_set":
            raise UsageError(f"{name}: bad ceph option {exc.detail!r}") from exc
        if exc.call == "rados_ioctx_create" and exc.errno == errno.ENOENT:
            raise UsageError(f"{name}: no pool {spec.pool!r}") from exc
        if exc.call in ("rados_create", "rados_connect", "rados_ioctx_create"):
            raise EndpointError(name, "connect", str(exc)) from exc
        raise


@asynccontextmanager
async def open_image(
    ioctx: Pool, spec: RbdSpec, options: CephOptions, *, read_only: bool
) -> AsyncIterator[Image]:
    """The image (at the spec's snapshot, if any), closed on every path.

    If the block fails, a failure to close is added to its error as a note, not put in its
    place: the first error names the offset that matters.
    """

    name = str(spec)
    try:
        image = await ioctx.open(
            spec.image, snapshot=spec.snapshot, read_only=read_only, deadline=2 * options.timeout
        )
    except RbdError as exc:
        if exc.errno == errno.ENOENT:
            raise UsageError(f"{name}: {await _missing(ioctx, spec)}") from exc
        raise EndpointError(name, "open", str(exc)) from exc
    try:
        yield image
    except BaseException as failure:
        with trio.CancelScope(shield=True):
            try:
                with map_errors(name, "close"):
                    await image.close()
            except EndpointError as close_error:
                failure.add_note(str(close_error))
        raise
    with trio.CancelScope(shield=True), map_errors(name, "close"):
        await image.close()


async def _missing(ioctx: Pool, spec: RbdSpec) -> str:
    """Which of the image or its snapshot does not exist."""
    if spec.snapshot is not None and await ioctx.exists(spec.image):
        return f"no snapshot {spec.snapshot!r}"
    return "no such image"


def rbd_spec_of(data: Mapping[str, Any]) -> RbdSpec:
    """The image an ``rbd`` connection_info names, reached through its monitors.

    A keyring in the dict (its contents) is never written anywhere: its key goes to
    librados as the ``key`` option, in memory.
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
    return RbdSpec(
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
