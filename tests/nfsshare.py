"""A stand-in NFS share for os-brick's real RemoteFs connector, with no NFS client or server.

os-brick's ``RemoteFsClient.mount`` does nothing when /proc/mounts already lists the share's
mount point, ``<mount_point_base>/<md5 hex of the share string>``: a bind mount of a local
directory there stands in for the export, as the kernel's NFS client would have mounted it,
and the connector's ``connect_volume`` answers ``<mount point>/<volume name>`` as it does on
a real share. Everything Cinder's ``NfsDriver`` would have done on the share (create the
volume file, sparse, at the volume's size) is done in the export directory.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARE = "192.0.2.10:/srv/cinder"  # TEST-NET-1: never reached, only hashed


@dataclass(frozen=True, slots=True)
class NfsShare:
    """A bind-mounted directory where os-brick looks for a mounted NFS share."""

    share: str  # the export, as Cinder's provider_location names it
    export: Path  # the directory that stands in for the export
    mount_point_base: Path  # the driver's nfs_mount_point_base
    mount_point: Path  # mount_point_base / md5(share): where os-brick finds the share

    def info(self, name: str, **data: Any) -> dict[str, Any]:
        """What ``NfsDriver.initialize_connection`` returns for the volume file ``name``."""
        return {
            "driver_volume_type": "nfs",
            "data": {"export": self.share, "name": name, **data},
            "mount_point_base": str(self.mount_point_base),
        }

    def path(self, name: str) -> Path:
        """The volume file, as the driver sees it in the export."""
        return self.export / name

    def mounted_path(self, name: str) -> str:
        """The volume file where os-brick's connector answers it is."""
        return f"{self.mount_point}/{name}"


def mount_point(mount_point_base: Path, share: str) -> Path:
    """Where os-brick's RemoteFsClient mounts ``share`` (``get_mount_point``)."""
    return mount_point_base / hashlib.md5(share.encode(), usedforsecurity=False).hexdigest()


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts if line.strip())


@contextmanager
def nfs_share(root: Path, share: str = SHARE) -> Iterator[NfsShare]:
    """A share under ``root`` (bind-mounted where os-brick expects it); unmounted on the way
    out, however the block ends."""
    export, base = root / "export", root / "mnt"
    point = mount_point(base, share)
    export.mkdir(parents=True)
    point.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(export), str(point)], check=True, capture_output=True)
    try:
        yield NfsShare(share, export, base, point)
    finally:
        done = subprocess.run(["umount", str(point)], check=False, capture_output=True)
        if done.returncode != 0:  # something still open on it: detach it anyway, and say so
            subprocess.run(["umount", "--lazy", str(point)], check=False, capture_output=True)
            raise AssertionError(f"umount {point}: {done.stderr.decode().strip()}")
