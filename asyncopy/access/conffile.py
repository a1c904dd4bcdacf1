"""Configuration files: a ceph.conf, a keyring, a ``--config-file``, a ``brick:`` file.

Only a regular file is one. Opening a FIFO for reading blocks until a writer comes (forever,
and in librados' case in a thread nothing can cancel), and a device or a directory holds no
configuration, so each such path is opened with ``O_NONBLOCK`` (which returns at once, even
for a FIFO), checked with ``fstat`` and refused as bad input before anything else is opened.
A file asyncopy reads itself is read through that same descriptor; one a library opens
(librados reads its ceph.conf and keyring) is checked just before it is handed over.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from asyncopy.core import verify
from asyncopy.errors import UsageError


def _open_regular(path: str, what: str) -> int:
    """A descriptor on ``path``, a regular file; else a UsageError naming it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):  # as reading it would say
            raise UsageError(f"{what} {path}: cannot read: {os.strerror(errno.EISDIR)}")
        if not stat.S_ISREG(mode):
            raise UsageError(f"{what} {path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular(path: str, what: str) -> None:
    """Refuse ``path`` unless it is a regular file this process can open for reading.

    Raises:
        UsageError: names ``what`` and the path.
    """
    os.close(_open_regular(path, what))


def read_regular(path: str, what: str) -> str:
    """The text of the regular file ``path``.

    Raises:
        UsageError: not a regular file, unreadable, or not text; names ``what`` and the path.
    """
    return verify.read_regular(Path(path), what)
