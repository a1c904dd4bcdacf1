"""Volumes attached through os-brick from a Cinder ``connection_info``.

Cinder describes how to reach a volume with ``{"driver_volume_type": "iscsi", "data": {...}}``
(``initialize_connection``). os-brick turns that into a local path and back: a block device
(iSCSI, FC, local...), or a regular file on a mounted share for the RemoteFs protocols (nfs,
glusterfs, quobyte, vzstorage, scality), whose ``connection_info`` carries
``mount_point_base`` beside ``data``. asyncopy then reads or writes the path with its
block-device or file endpoints (``sources/brick.py``, ``sinks/brick.py``). So this module only
attaches and detaches:

- ``attach`` asks ``InitiatorConnector.factory(driver_volume_type, root_helper,
  conn=connection_info)`` for a connector (as Cinder's ``brick_get_connector`` does: the
  RemoteFs connectors read ``mount_point_base`` there), calls ``connect_volume(data)``, checks
  that the answer's ``path`` is a block device or a regular file, yields it, and always calls
  ``disconnect_volume(data, device_info)``: plainly after a clean exit, a failure to
  disconnect then failing the copy; with ``force=True, ignore_errors=True`` after an error or
  a cancellation, a failure to disconnect then becoming a note on the first error, which is
  the one that matters.
- A file is opened in place, never created or truncated (Cinder created it at the volume's
  size), and, like a device, is not trusted to read zeros unless the caller says so. Its
  bytes are the volume's only in ``raw`` format: a ``data["format"]`` other than ``raw``
  (``qcow2``, vzstorage's ``ploop``) is refused before anything is attached.
- os-brick blocks for seconds (logins, SCSI scans, multipath waits), so every call runs in a
  worker thread, never abandoned: a connect that ends after a cancellation still yields its
  device_info, and the disconnect that follows runs to its end in a shielded scope.
- A connect that fails is not disconnected: os-brick's connectors clean up after their own
  failed connect (``ISCSIConnector.connect_volume`` does ``_cleanup_connection(force=True)``),
  and Cinder and Nova rely on that too.
- ``data`` may hold secrets (CHAP ``auth_password``, a Ceph ``keyring``): messages name an
  endpoint as ``brick:<driver_volume_type>:<device>``, print key names but never values, and
  any secret value os-brick quotes back (a command line, say) is masked.
- os-brick is imported on first use, in a worker thread, so ``import asyncopy`` never needs it.
  Tests pass their own ``connector_factory`` (a real connector that records its calls).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import stat
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from asyncopy.core.verify import read_regular
from asyncopy.errors import EndpointError, UsageError

# auth_password, discovery_auth_password, keyring, dhchap_secret, serverPassword, auth_key...;
# not secret_type ("ceph") or secret_uuid, which name a secret without holding it.
_SECRET_KEY = re.compile(
    r"passw|passphrase|keyring|token|credential|secret$|(^|_)key$", re.IGNORECASE
)
MASK = "***"
# A vzstorage share: [MDS1[,MDS2],...:/]CLUSTER[:PASSWORD]; an NFS host:/path does not match.
_VZSTORAGE_SHARE = re.compile(r"(?:\S+:/)?[a-zA-Z0-9_-]+:([^\s/]\S*)")
# os-brick's RemoteFsConnector protocols: a file on a share mounted under mount_point_base.
REMOTEFS_TYPES = frozenset({"nfs", "glusterfs", "quobyte", "vzstorage", "scality"})


class Connector(Protocol):
    """The two methods of an os-brick ``InitiatorConnector`` that attaching needs."""

    def connect_volume(self, connection_properties: dict[str, Any]) -> Any:
        """Attach; return device_info, whose ``path`` is the local device."""

    def disconnect_volume(
        self,
        connection_properties: dict[str, Any],
        device_info: Any,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        """Detach what connect_volume attached."""


class ConnectorFactory(Protocol):
    """Makes a connector, as os-brick's ``InitiatorConnector.factory`` and Cinder call it."""

    def __call__(self, protocol: str, root_helper: str, *, conn: dict[str, Any]) -> Connector:
        """The connector for ``protocol``; ``conn`` is the whole connection_info."""


@dataclass(frozen=True)
class BrickSpec:
    """A checked ``connection_info`` (see ``brick_spec``), attached through os-brick."""

    kind: str  # driver_volume_type
    data: dict[str, Any] = field(repr=False)
    connection_info: dict[str, Any] = field(repr=False)

    def __str__(self) -> str:
        return f"brick:{self.kind}"


def brick_spec(info: object, where: str = "connection info") -> BrickSpec:
    """A ``connection_info`` checked: a UsageError naming what is wrong (keys, never values).

    It holds ``driver_volume_type`` (a string) and ``data`` (an object), a raw volume (no
    other ``data["format"]``), and ``mount_point_base`` for the RemoteFs protocols.
    """
    if not isinstance(info, Mapping):
        raise UsageError(f"{where}: must be a JSON object, not {_json_type(info)}")
    missing = [key for key in ("driver_volume_type", "data") if key not in info]
    if missing:
        raise UsageError(f"{where}: missing {' and '.join(repr(key) for key in missing)}")
    kind, data = info["driver_volume_type"], info["data"]
    if not isinstance(kind, str) or not kind.strip():
        raise UsageError(f"{where}: 'driver_volume_type' must be a non-empty string")
    if not isinstance(data, dict):
        raise UsageError(f"{where}: 'data' must be an object, not {_json_type(data)}")
    _check_usable(info, kind, data, where)
    return BrickSpec(kind, data, dict(info))


def load_connection_info(path: str) -> BrickSpec:
    """Read a ``connection_info`` JSON file, checked as ``brick_spec`` checks one.

    The file holds ``{"driver_volume_type": ..., "data": {...}}`` (what Cinder's
    ``initialize_connection`` returns), or the API's ``{"connection_info": {...}}`` around it.

    Raises:
        UsageError: the file cannot be read, is not JSON or not a usable connection_info;
            the message names the file and keys, never values.
    """
    where = f"connection info {path}"
    text = read_regular(path, "connection info")  # a FIFO would block the open for good
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:  # its message quotes no input
        raise UsageError(f"{where}: not JSON: {exc.msg} at line {exc.lineno}") from exc
    if isinstance(info, dict) and set(info) == {"connection_info"}:
        info = info["connection_info"]
    return brick_spec(info, where)


@asynccontextmanager
async def attach(
    spec: BrickSpec | Mapping[str, Any],
    *,
    root_helper: str = "sudo",
    connector_factory: ConnectorFactory | None = None,
) -> AsyncIterator[str]:
    """Attach a volume with os-brick and yield its path; detach it on every path.

    Args:
        spec: ``{"driver_volume_type": ..., "data": {...}}`` from Cinder (with
            ``mount_point_base`` beside ``data`` for the RemoteFs protocols), or that
            connection_info already checked (``brick_spec``).
        root_helper: how os-brick runs commands as root (``sudo``, or cinder's rootwrap).
        connector_factory: makes the connector from (driver_volume_type, root_helper,
            conn=connection_info); os-brick's ``InitiatorConnector.factory`` when None.

    Raises:
        UsageError: bad connection_info (a volume format other than raw included), os-brick
            missing or unable to handle the type.
        EndpointError: the connect failed or gave neither a block device nor a regular file
            (operation "connect"), or the disconnect after a clean exit failed ("disconnect").
    """
    async with attach_volume(spec, root_helper, connector_factory) as (path, _):
        yield path


@asynccontextmanager
async def attach_volume(
    spec: BrickSpec | Mapping[str, Any],
    root_helper: str,
    connector_factory: ConnectorFactory | None,
) -> AsyncIterator[tuple[str, bool]]:
    """``attach``, yielding (path, whether it is a block device rather than a file): what
    the brick source and sink open."""
    spec = spec if isinstance(spec, BrickSpec) else brick_spec(spec)
    kind, data, name = spec.kind, spec.data, str(spec)
    make = functools.partial(
        connector_factory or _os_brick_connector, kind, root_helper, conn=spec.connection_info
    )
    try:
        connector = await trio.to_thread.run_sync(make)
        device_info = await trio.to_thread.run_sync(connector.connect_volume, data)
    except UsageError:
        raise
    except Exception as exc:
        if _lock_path_missing(exc):
            raise UsageError(
                f"{name}: os-brick needs a lock directory shared with cinder-volume: set "
                "OSLO_LOCK_PATH to cinder.conf's [oslo_concurrency] lock_path"
            ) from exc
        raise EndpointError(name, "connect", _masked_reason(exc, data)) from exc

    def disconnect(force: bool) -> None:
        connector.disconnect_volume(data, device_info, force=force, ignore_errors=force)

    try:
        path, name, block = await _volume_path(name, device_info)
        yield path, block
    except BaseException as failure:
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(disconnect, True)
            except Exception as exc:
                failure.add_note(str(EndpointError(name, "disconnect", _masked_reason(exc, data))))
        raise
    with trio.CancelScope(shield=True):
        try:
            await trio.to_thread.run_sync(disconnect, False)
        except Exception as exc:
            raise EndpointError(name, "disconnect", _masked_reason(exc, data)) from exc


def _check_usable(info: Mapping[str, Any], kind: str, data: Mapping[str, Any], where: str) -> None:
    """Refuse what would attach but cannot be copied byte for byte, or cannot attach at all."""
    volume_format = data.get("format")  # none given: raw, as Cinder's drivers mean it
    if volume_format not in (None, "raw"):
        shown = repr(volume_format) if isinstance(volume_format, str) else _json_type(volume_format)
        raise UsageError(
            f"{where}: the {kind} volume is in {shown} format, not raw: asyncopy copies raw "
            "volumes only (an image file's bytes are not the volume's)"
        )
    base = info.get("mount_point_base")
    if kind.lower() in REMOTEFS_TYPES and (not isinstance(base, str) or not base):
        raise UsageError(
            f"{where}: a {kind} volume needs 'mount_point_base' beside 'data' (the path "
            "the driver's initialize_connection gives, under which the share is mounted)"
        )


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "unknown")


async def _volume_path(name: str, device_info: Any) -> tuple[str, str, bool]:
    """The path in connect_volume's answer, the endpoint's name with it, and whether it is a
    block device (else a regular file)."""
    path = device_info.get("path") if isinstance(device_info, Mapping) else None
    if not path:
        raise EndpointError(name, "connect", "os-brick's answer has no device path")
    if not isinstance(path, str):
        raise EndpointError(
            name, "connect", f"os-brick's answer has a {type(path).__name__}, not a device path"
        )
    name = f"{name}:{path}"
    try:
        mode = (await trio.to_thread.run_sync(os.stat, path)).st_mode
    except OSError as exc:
        raise EndpointError(name, "connect", f"cannot stat the path: {exc.strerror}") from exc
    if not stat.S_ISBLK(mode) and not stat.S_ISREG(mode):
        raise EndpointError(
            name, "connect", "os-brick's path is neither a block device nor a regular file"
        )
    return path, name, stat.S_ISBLK(mode)


def _secrets(value: object, secret: bool = False) -> set[str]:
    """The string values under secret-looking keys, at any depth."""
    if isinstance(value, Mapping):
        found: set[str] = set()
        for key, item in value.items():
            found |= _secrets(item, secret or bool(_SECRET_KEY.search(str(key))))
        return found
    if isinstance(value, list | tuple):
        return set[str]().union(*(_secrets(item, secret) for item in value))
    return {value} if secret and isinstance(value, str) and value else set()


def _share_password(data: Mapping[str, Any]) -> set[str]:
    """The password a vzstorage share string ends in, ``[MDS1[,MDS2],...:/]CLUSTER[:PASSWORD]``
    (os-brick's own pattern, which quotes the whole share back when it refuses one)."""
    export = data.get("export")
    found = _VZSTORAGE_SHARE.fullmatch(export) if isinstance(export, str) else None
    return {found.group(1)} if found and found.group(1) else set()


def _masked_reason(exc: BaseException, data: Mapping[str, Any]) -> str:
    """One line saying why, with every secret of ``data`` masked (as is, or as repr shows it)."""
    reason = str(exc)
    secrets = _secrets(data) | _share_password(data)
    forms = {form for secret in secrets for form in (secret, repr(secret)[1:-1])}
    for form in sorted(forms, key=len, reverse=True):
        reason = reason.replace(form, MASK)
    return " ".join(reason.split()) or type(exc).__name__


def _lock_path_missing(exc: BaseException) -> bool:
    """os-brick's external locks need a directory, and none was configured."""
    try:
        from oslo_config import cfg
    except ImportError:
        return False
    return isinstance(exc, cfg.RequiredOptError) and exc.opt_name == "lock_path"


def _os_brick_connector(protocol: str, root_helper: str, *, conn: dict[str, Any]) -> Connector:
    """os-brick's connector for a driver_volume_type (runs in a worker thread)."""
    if importlib.util.find_spec("os_brick") is None:
        raise UsageError("os-brick is not installed (pip install os-brick)")
    # oslo.privsep imports eventlet, which warns on import; asyncopy uses neither's event loop.
    warnings.filterwarnings(
        "ignore", message=r"\s*Eventlet is deprecated", module=r"oslo_privsep\.daemon"
    )
    import os_brick
    from os_brick import exception
    from os_brick.initiator.connector import InitiatorConnector
    from oslo_config import cfg

    os_brick.setup(cfg.CONF)  # its lock_path defaults to [oslo_concurrency] lock_path
    try:
        connector: Connector = InitiatorConnector.factory(protocol, root_helper, conn=conn)
    except exception.InvalidConnectorProtocol as exc:
        raise UsageError(
            f"brick:{protocol}: os-brick has no connector for driver_volume_type {protocol!r}"
        ) from exc
    return connector
