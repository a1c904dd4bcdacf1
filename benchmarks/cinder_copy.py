"""Cinder's own ``copy_volume`` (``cinder.volume.volume_utils``), run as cinder-volume runs it.

``python -m benchmarks.cinder_copy SRC DST``: SRC and DST are ``rbd:POOL/IMAGE:conf=PATH``
(opened as os-brick ``RBDVolumeIOWrapper`` objects, as Cinder's RBD driver hands them to
``copy_volume``) or paths of files and block devices. DST must exist (Cinder copies onto a
volume it created before). Eventlet monkey-patches first, as in cinder-volume; with two paths
Cinder shells out to ``dd`` through ``execute`` (oslo.concurrency's, run as root).

Prints ``{"seconds": ...}``: the copy as cinder-volume does it, from opening the volumes to
closing them, with a path destination fsynced; not the interpreter's start or Cinder's import,
which a running cinder-volume has paid long before.
"""

from __future__ import annotations

from cinder import monkey_patch

monkey_patch.patch()

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from typing import Any  # noqa: E402

warnings.simplefilter("ignore")

from cinder.volume import volume_utils  # noqa: E402
from os_brick.initiator import linuxrbd  # noqa: E402
from oslo_concurrency import processutils  # noqa: E402

MiB = 1 << 20
RBD_SPEC = re.compile(r"^rbd:([^/:]+)/([^:@]+):conf=(.+)$")


def open_end(spec: str, cleanup: ExitStack, *, read_only: bool) -> tuple[Any, int]:
    """An os-brick RBD wrapper or the path itself, and the volume's size in bytes."""
    match = RBD_SPEC.match(spec)
    if match is None:
        fd = os.open(spec, os.O_RDONLY)
        try:
            return spec, os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
    pool, name, conf = match.groups()
    client = linuxrbd.RBDClient("admin", pool, conffile=conf)
    cleanup.callback(client.disconnect)
    volume = linuxrbd.RBDVolume(client, name, read_only=read_only)
    metadata = linuxrbd.RBDImageMetadata(volume.image, pool, "admin", conf)
    wrapper = linuxrbd.RBDVolumeIOWrapper(metadata)
    cleanup.callback(wrapper.close)
    return wrapper, int(volume.image.size())


def fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    src_spec, dst_spec = sys.argv[1], sys.argv[2]
    started = time.monotonic()
    with ExitStack() as cleanup:
        src, size = open_end(src_spec, cleanup, read_only=True)
        dst, _ = open_end(dst_spec, cleanup, read_only=False)
        volume_utils.copy_volume(src, dst, size // MiB, "4M", execute=processutils.execute)
    if isinstance(dst, str):
        fsync(dst)
    print(json.dumps({"seconds": time.monotonic() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
