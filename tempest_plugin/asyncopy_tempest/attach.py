"""A volume attached to this host the way a client does it (``cinder local-attach``).

This host's connector from os-brick, ``os-initialize_connection`` through the volume API,
os-brick's connector for the protocol the answer names, then ``disconnect_volume`` and
``os-terminate_connection`` on every path. What the connector returns becomes a
``Volume``: RBD is an os-brick ``RBDVolumeIOWrapper`` over librbd (no kernel rbd), whose
allocation comes from ``diff_iterate``; NFS is the volume's file on the share (os-brick
finds it mounted under ``mount_point_base``), whose allocation is its ``st_blocks``.

The process runs as root: commands need no root helper, and os-brick's privileged calls
(the connector properties read the iSCSI and NVMe host identities) run in the privsep
daemon started from this Python's ``privsep-helper``, without sudo.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from oslo_config import cfg

ROOT_HELPER = "env"  # runs the command as it is: this process is root already
MY_IP = "127.0.0.1"

Range = tuple[int, int]  # offset, length


class Volume(Protocol):
    """A volume's bytes, as this host reaches them."""

    size: int
    grain: int  # the unit the backend allocates in: an RBD object, a file system block

    def read(self, offset: int, length: int) -> bytes: ...  # what the volume holds there
    def write(self, offset: int, data: bytes) -> None: ...  # stores ``data`` at ``offset``
    def flush(self) -> None: ...  # makes the writes durable
    def allocated(self) -> int: ...  # the bytes the backend has allocated for it
    def allocated_ranges(self) -> list[Range]: ...  # where they are: (offset, length)


class RbdVolume:
    """An RBD image through os-brick's ``RBDVolumeIOWrapper`` (librbd)."""

    def __init__(self, wrapper: Any) -> None:
        self.image = wrapper.rbd_image
        self.size = int(self.image.size())
        self.grain = int(self.image.stat()["obj_size"])

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.image.read(offset, length))

    def write(self, offset: int, data: bytes) -> None:
        self.image.write(data, offset)

    def flush(self) -> None:
        self.image.flush()

    def allocated(self) -> int:
        return sum(length for _offset, length in self.allocated_ranges())

    def allocated_ranges(self) -> list[Range]:
        ranges: list[Range] = []

        def extent(offset: int, length: int, exists: bool) -> None:
            if exists:
                ranges.append((offset, length))

        self.image.diff_iterate(0, self.size, None, extent)
        return ranges


class FileVolume:
    """A volume file on a mounted share."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.grain = os.fstat(self.fd).st_blksize

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes) -> None:
        if os.pwrite(self.fd, data, offset) != len(data):
            raise OSError(f"short write of {len(data)} bytes at {offset}")

    def flush(self) -> None:
        os.fsync(self.fd)

    def allocated(self) -> int:
        return os.fstat(self.fd).st_blocks * 512

    def allocated_ranges(self) -> list[Range]:
        ranges: list[Range] = []
        offset = 0
        while offset < self.size:
            try:
                start = os.lseek(self.fd, offset, os.SEEK_DATA)
            except OSError as error:  # ENXIO: no data after offset
                if error.errno == errno.ENXIO:
                    break
                raise
            offset = os.lseek(self.fd, start, os.SEEK_HOLE)
            ranges.append((start, offset - start))
        return ranges

    def close(self) -> None:
        os.close(self.fd)


@contextmanager
def attached(volumes_client: Any, volume_id: str) -> Iterator[Volume]:
    """The volume attached to this host; detached and its connection terminated after."""
    from os_brick.initiator import connector as brick

    _privsep_without_sudo()
    properties = brick.get_connector_properties(ROOT_HELPER, MY_IP, False, False)
    info = initialize_connection(volumes_client, volume_id, properties)
    try:
        protocol = info["driver_volume_type"]
        initiator = brick.InitiatorConnector.factory(protocol, ROOT_HELPER, conn=info)
        device = initiator.connect_volume(info["data"])
        try:
            yield from _opened(protocol, device, info["data"])
        finally:
            initiator.disconnect_volume(info["data"], device)
    finally:
        volumes_client.terminate_connection(volume_id, properties)


def _opened(protocol: str, device: dict[str, Any], data: dict[str, Any]) -> Iterator[Volume]:
    """The ``Volume`` over what the connector returned; a file volume is closed after."""
    if protocol == "rbd":
        yield RbdVolume(device["path"])
        return
    if data.get("format", "raw") != "raw":
        raise ValueError(f"volume file {device['path']} is {data['format']}, not raw")
    volume = FileVolume(device["path"])
    try:
        yield volume
    finally:
        volume.close()


def initialize_connection(
    volumes_client: Any, volume_id: str, properties: dict[str, Any]
) -> dict[str, Any]:
    """``os-initialize_connection``: the connection info for this host's connector."""
    body = json.dumps({"os-initialize_connection": {"connector": properties}})
    resp, answer = volumes_client.post(f"volumes/{volume_id}/action", body)
    volumes_client.expected_success(200, resp.status)
    info: dict[str, Any] = json.loads(answer)["connection_info"]
    return info


def _privsep_without_sudo() -> None:
    """os-brick's privsep daemon from this Python's ``privsep-helper``, as root already."""
    from os_brick import privileged  # noqa: F401  (registers [privsep_osbrick])

    if not cfg.CONF.privsep_osbrick.helper_command:
        helper = Path(sys.executable).parent / "privsep-helper"
        cfg.CONF.set_override("helper_command", str(helper), group="privsep_osbrick")
