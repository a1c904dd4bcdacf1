"""asyncopy for cinder-volume: ``copy_volume_data`` and a drop-in ``copy_volume``.

cinder-volume runs under eventlet, monkey-patched, where trio cannot even be imported (its
socket and select modules are replaced). So this module imports neither trio nor anything that
does: the copy runs in a child process (``python -m asyncopy.connection``) that gets the
request, secrets included, on its stdin (never on its command line) and answers with JSON
lines, progress then the result. Waiting on it is cooperative under eventlet (its patched
``subprocess``), and a crash in a storage library cannot take cinder-volume down with it.
Every failure is one ``CopyFailed`` naming the endpoint, the operation and the offset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from asyncopy.errors import CopyFailed

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes in all)


def copy_volume_data(
    src_connection_info: Mapping[str, Any],
    dst_connection_info: Mapping[str, Any],
    size: int,
    *,
    conf: Any = None,
    target_is_zero: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Copy the first ``size`` bytes of one Cinder volume onto another; block until done.

    Args:
        src_connection_info: the source volume's ``initialize_connection`` result.
        dst_connection_info: the destination's; the volume exists and holds ``size`` bytes.
        size: bytes to copy (a Cinder volume's size in GiB times 2**30).
        conf: an oslo.config ConfigOpts: the copy reads its config files' ``[asyncopy]``.
        target_is_zero: the destination is known to read zeros (Cinder's ``sparse``).
        progress: called with (bytes done, bytes in all) as the copy goes.

    Returns:
        The copy's figures: bytes_total, bytes_read, bytes_written, bytes_zeroed,
        bytes_skipped, seconds, verified.

    Raises:
        CopyFailed: the one exception for every failure, its message one line naming the
            endpoint, the operation and the offset. Bad input (a connection_info or setting
            that cannot work, a destination too small) fails before anything is written.
    """
    request = {
        "src": {"connection_info": dict(src_connection_info)},
        "dst": {"connection_info": dict(dst_connection_info)},
        "size": size,
        "config_files": _config_files(conf),
        "target_is_zero": target_is_zero,
    }
    return run_child(request, progress)


def _config_files(conf: Any) -> list[str]:
    files = getattr(conf, "config_file", None) if conf is not None else None
    return [str(path) for path in files or []]


def run_child(request: Mapping[str, Any], progress: ProgressCallback | None) -> dict[str, Any]:
    """Run one copy in ``python -m asyncopy.connection``; its result, or its error raised."""
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncopy.connection"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, errors = _talk(child, json.dumps(request), progress)
    except BaseException:
        child.kill()
        child.wait()
        raise
    if child.returncode != 0 or out is None:
        raise CopyFailed(errors or f"the copy process exited with {child.returncode}")
    return out


def _talk(
    child: subprocess.Popen[str], request: str, progress: ProgressCallback | None
) -> tuple[dict[str, Any] | None, str]:
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    child.stdin.write(request)
    child.stdin.close()
    result: dict[str, Any] | None = None
    for line in child.stdout:
        message = json.loads(line)
        if "progress" in message and progress is not None:
            progress(message["progress"]["done"], message["progress"]["total"])
        result = message.get("result", result)
    errors = child.stderr.read().strip().splitlines()
    child.wait()
    return result, errors[-1] if errors else ""


def copy_volume(
    src: Any,
    dest: Any,
    size_in_m: int,
    blocksize: Any = None,
    sync: bool = False,
    execute: Any = None,
    ionice: Any = None,
    throttle: Any = None,
    sparse: bool = False,
    *,
    conf: Any = None,
) -> None:
    """A drop-in for ``cinder.volume.volume_utils.copy_volume``.

    ``src`` and ``dest`` are device or file paths, file objects opened on a path, or os-brick
    ``RBDVolumeIOWrapper`` objects, which are unwrapped to their pool and image (read and
    written through librbd, concurrently and sparsely, not through the wrapper's serial
    ``read``/``write``). ``sparse`` keeps Cinder's meaning: the destination reads as zeros,
    so zero blocks are skipped. ``blocksize``, ``execute``, ``ionice`` and ``throttle`` are
    accepted and ignored (asyncopy sizes its own I/O and runs no command); the copy is always
    made durable, so ``sync`` changes nothing either.

    Raises:
        CopyFailed: the copy failed (or an argument cannot be copied from or to).
    """
    request = {
        "src": describe(src),
        "dst": describe(dest),
        "size": int(size_in_m) * (1 << 20),
        "config_files": _config_files(conf),
        "target_is_zero": bool(sparse),
    }
    run_child(request, None)


def describe(volume: Any) -> dict[str, Any]:
    """How the child process reaches what ``copy_volume`` was handed."""
    if isinstance(volume, str | os.PathLike):
        return {"uri": f"file:{os.fspath(volume)}"}
    if all(hasattr(volume, name) for name in ("rbd_image", "rbd_pool", "rbd_user", "rbd_conf")):
        image = volume.rbd_image
        name = image.get_name()
        snapshot = image.get_snap_name() if hasattr(image, "get_snap_name") else None
        uri = f"rbd:{_escape(volume.rbd_pool)}/{_escape(name)}"
        if snapshot:
            uri += f"@{_escape(snapshot)}"
        if volume.rbd_conf:
            uri += f":conf={_escape(volume.rbd_conf)}"
        if volume.rbd_user:
            uri += f":id={_escape(volume.rbd_user)}"
        return {"uri": uri, "callers_handles": 1}  # the caller's handle stays open meanwhile
    path = getattr(volume, "name", None)
    if isinstance(path, str) and os.path.exists(path):
        return {"uri": f"file:{path}"}
    raise CopyFailed(f"cannot copy from or to a {type(volume).__name__}: not a path or RBD image")


def _escape(text: str) -> str:
    """A name inside an ``rbd:`` URI, with ``:`` and ``\\`` escaped as qemu's syntax wants."""
    return text.replace("\\", "\\\\").replace(":", "\\:")
