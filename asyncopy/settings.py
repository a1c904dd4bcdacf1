"""The ``[asyncopy]`` settings as plain values, without oslo.config.

``asyncopy.cinder.config`` declares them as oslo.config options and reads them from files; this
module holds what needs no files: the defaults (read from the engine's and the endpoints'
own), how they are shown, and how a group of values (plus overriding flags) becomes the
engine's and the endpoints' options. The command line imports oslo.config only when it is
given a ``--config-file``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from asyncopy.access.ceph import CephOptions
from asyncopy.access.iscsi import IscsiOptions
from asyncopy.core.engine import CopyOptions
from asyncopy.specs import EndpointOptions

GROUP = "asyncopy"
MAX_TIMEOUT = 3600  # seconds, for Ceph and iSCSI alike
# librados takes its timeouts in whole seconds: less than one second would still wait a
# second there, while the waits on librbd (twice the timeout) would give up at once
MIN_CEPH_TIMEOUT = 1
SIZES = ("chunk_size", "max_inflight", "sparse_size")  # bytes, shown as 4M, 64K, ...

_T = TypeVar("_T")
_UNITS = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


@dataclass(frozen=True, slots=True)
class Settings:
    """The ``[asyncopy]`` group's values, converted and checked; sizes in bytes."""

    chunk_size: int
    depth: int | None  # None: the in-flight window tunes itself
    max_inflight: int
    sparse_size: int
    verify: bool
    iscsi_transport: str
    ceph_conf: str | None
    ceph_timeout: float
    iscsi_timeout: int
    ionice: str | None
    root_helper: str


_COPY = CopyOptions()
_ENDPOINT = EndpointOptions()
DEFAULTS = Settings(
    chunk_size=_COPY.chunk_size,
    depth=_COPY.depth,
    max_inflight=_COPY.max_inflight_bytes,
    sparse_size=_COPY.sparse_size,
    verify=_COPY.verify,
    iscsi_transport="brick",
    ceph_conf=_ENDPOINT.ceph.conf,
    ceph_timeout=_ENDPOINT.ceph.timeout,
    iscsi_timeout=_ENDPOINT.iscsi.timeout,
    ionice=None,
    root_helper=_ENDPOINT.root_helper,
)


def size_text(size: int) -> str:
    """``size`` bytes in the largest unit that holds it exactly: 4M, 64K, 3000."""
    for suffix, unit in _UNITS:
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def shown_default(name: str) -> str:
    """A default as the sample configuration file shows it (``4M``, ``16``, ``false``)."""
    value = getattr(DEFAULTS, name)
    if name in SIZES:
        return size_text(value)
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def copy_options(
    values: Settings,
    *,
    chunk_size: int | None = None,
    depth: int | None = None,
    max_inflight_bytes: int | None = None,
    sparse_size: int | None = None,
    verify: bool | None = None,
) -> CopyOptions:
    """The engine's options from the settings; keyword arguments that are not None win.

    Raises:
        UsageError: values that do not fit together (checked once merged).
    """
    return CopyOptions(
        chunk_size=given_or(chunk_size, values.chunk_size),
        depth=given_or(depth, values.depth),
        max_inflight_bytes=given_or(max_inflight_bytes, values.max_inflight),
        sparse_size=given_or(sparse_size, values.sparse_size),
        verify=given_or(verify, values.verify),
    )


def endpoint_options(
    values: Settings,
    ceph_conf: str | None = None,
    *,
    ceph_timeout: float | None = None,
    iscsi_timeout: int | None = None,
    root_helper: str | None = None,
) -> EndpointOptions:
    """What opening a URI may need, from the settings; arguments that are not None win."""
    return EndpointOptions(
        ceph=CephOptions(
            timeout=given_or(ceph_timeout, values.ceph_timeout),
            conf=given_or(ceph_conf, values.ceph_conf),
        ),
        iscsi=IscsiOptions(timeout=given_or(iscsi_timeout, values.iscsi_timeout)),
        root_helper=given_or(root_helper, values.root_helper),
    )


def given_or(given: _T | None, configured: _T) -> _T:
    """A flag's value when it was given, else the configured one."""
    return configured if given is None else given
