"""Configuration files: a ceph.conf, a keyring, a ``--config-file``, a ``brick:`` file.

Only a regular file is one. Opening a FIFO for reading blocks until a writer comes (forever,
and in librados' case in a thread nothing can cancel), and a device or a directory holds no
configuration, so each such path is opened with ``O_NONBLOCK`` (which returns at once, even
for a FIFO), checked with ``fstat`` and refused as bad input before anything else is opened.
A file asyncopy reads itself is read through that same descriptor; one a library opens
(librados reads its ceph.conf and keyring) is checked just before it is handed over.
"""

from __future__ import annotations

import os

from asyncopy.core import verify


def check_regular(path: str, what: str) -> None:
    """Refuse ``path`` unless it is a regular file this process can open for reading.

    Raises:
        UsageError: names ``what`` and the path.
    """
    os.close(verify.open_regular(path, what))
