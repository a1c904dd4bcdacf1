"""Settings for a process whose one job is a copy: the CLI and the Cinder copy child.

- Its I/O priority, when asked for (Cinder's ``ionice``): ``ioprio_set`` before any thread
  starts, so that librbd's and os-brick's threads inherit it.

- Everything imported so far lives as long as the process: ``gc.freeze`` moves it out of
  the collector's sight. librbd completions leave cyclic garbage at every request, and the
  full collections that follow would otherwise scan the whole heap again and again.
- One glibc malloc arena. librbd's threads and the binding's per-read buffers otherwise
  spread 4 MiB allocations over many arenas that keep what is freed: peak RSS grows by
  each arena's share, for no speed.

What the command writes on stdout and stderr is a report on the copy, never a reason to
fail it: a write whose reader is gone (a closed pipe, a hung-up terminal) points the stream
at /dev/null for the rest of the run (``say``), so that neither later lines nor the
interpreter's last flush fail, and the exit status stays the copy's. A standard stream
closed at start gets /dev/null (``standard_streams``): Python would leave ``sys.stderr``
None, and print the lines meant for it on stdout, and the first file the copy opened would
take descriptor 2, where librados and libiscsi write their messages.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import platform
import sys
from typing import NoReturn, TextIO

from asyncopy.errors import UsageError

M_ARENA_MAX = -8  # glibc's malloc.h


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``. If librbd still holds a request this process gave up
    on, the interpreter's teardown is skipped (``os._exit`` once the output is flushed): it
    would free buffers librbd may still write into, and run librados' destructors under its
    live threads (a segfault at exit, seen with an OSD killed mid-copy)."""
    librbd = sys.modules.get("asyncopy.access.librbd")
    if librbd is not None and librbd.abandoned_images():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def standard_streams() -> None:
    """Give descriptors 0-2 that are closed /dev/null, and ``sys.stderr`` one over it;
    call first, before anything opens a file."""
    for fd in range(3):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:  # left so by Python: print(file=None) writes on stdout
        stream = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = stream


def say(line: str, stream: TextIO) -> None:
    """Write ``line`` on ``stream``; if that fails, the stream is silenced for good."""
    try:
        print(line, file=stream, flush=True)
    except OSError:
        silence(stream)


def silence(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at /dev/null: what it still buffers, and all that is
    written on it later, goes nowhere instead of failing."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file, or closed: nothing reaches a reader
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def tune_for_copy() -> None:
    """Call once, early, before any thread starts."""
    gc.freeze()
    libc = ctypes.CDLL(None) if sys.platform == "linux" else None
    if libc is not None and hasattr(libc, "mallopt"):  # glibc's; musl has none
        libc.mallopt(M_ARENA_MAX, 1)


# ioprio_set(2): the syscall's number by machine, who = a process, the class in bits 13-15.
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "ppc64le": 273, "s390x": 282}
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
_IO_CLASSES = {"none": 0, "realtime": 1, "best-effort": 2, "idle": 3}


def io_priority(ionice: str) -> int:
    """The ioprio value of ``ionice``'s options (``-c3``, ``-c 2 -n 7``, ``--class idle``),
    as Cinder's ``volume_clear_ionice`` and ``copy_volume(ionice=...)`` spell them.

    Raises:
        UsageError: options that ionice would not take.
    """
    words = ionice.replace("=", " ").split()
    klass: int | None = None
    level = 4
    position = 0
    while position < len(words):
        word = words[position]
        flag, value = (word[:2], word[2:]) if word[:2] in ("-c", "-n") and word[2:] else (word, "")
        if flag in ("-t", "--ignore"):
            position += 1
            continue
        if not value:
            position += 1
            if position == len(words):
                raise UsageError(f"ionice options {ionice!r}: {flag} needs a value")
            value = words[position]
        if flag in ("-c", "--class"):
            klass = _IO_CLASSES.get(value, int(value) if value.isdigit() else -1)
            if klass not in _IO_CLASSES.values():
                raise UsageError(f"ionice options {ionice!r}: no I/O class {value!r}")
        elif flag in ("-n", "--classdata") and value.isdigit() and int(value) < 8:
            level = int(value)
        else:
            raise UsageError(f"ionice options {ionice!r}: cannot use {word!r}")
        position += 1
    klass = _IO_CLASSES["best-effort"] if klass is None else klass
    return klass << _IOPRIO_CLASS_SHIFT | (level if klass in (1, 2) else 0)


def set_io_priority(value: int) -> None:
    """Give this process (and the threads it starts afterwards) the I/O priority ``value``.

    Raises:
        OSError: the kernel refused (a realtime class needs CAP_SYS_ADMIN).
    """
    _ioprio(0, value)


def io_priority_now() -> int:
    """This process's I/O priority (ioprio_get), for checks."""
    return _ioprio(1)


def _ioprio(offset: int, *value: int) -> int:
    """ioprio_set (offset 0) or ioprio_get (1, the next number) on this process."""
    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"ioprio_set is not known on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    answer = int(libc.syscall(number + offset, _IOPRIO_WHO_PROCESS, 0, *value))
    if answer < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return answer
