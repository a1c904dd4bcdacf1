"""The child process of ``asyncopy.cinder.copy_volume_data``: one copy, in trio.

cinder-volume (eventlet) runs ``python -m asyncopy.cinder.child``: a request as the first line
of stdin, then ``{"rate": N}`` lines that change the copy's limit (bytes per second, 0 for
none) as other copies under the same Cinder throttle start and end; JSON lines on stdout:
``{"progress": ...}`` as it goes, then ``{"result": ...}`` or ``{"error": LINE}``. The error
goes to stdout because stderr belongs to the libraries too (librados writes its log there
when a ceph.conf says so); it is also written to stderr, for whoever reads that.
The copy itself is ``asyncopy.cinder.volume.migrate``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Awaitable
from functools import partial
from typing import Any, TypeVar

import trio

from asyncopy.api import run_interruptibly
from asyncopy.cinder import config
from asyncopy.cinder.volume import migrate
from asyncopy.core.engine import CopyResult
from asyncopy.core.pipeline import alongside
from asyncopy.core.progress import Progress
from asyncopy.core.rate import RateLimit
from asyncopy.errors import CopyFailed, HungUp, Terminated, UsageError
from asyncopy.process import exit_process, io_priority, set_io_priority, tune_for_copy

T = TypeVar("T")


def child_main() -> int:
    """``python -m asyncopy.cinder.child``: one copy, asked on stdin, answered in JSON lines."""
    try:
        request, control = _read_request()
        conf = config.load(list(request["config_files"]), dict(request.get("defaults") or {}))
        ionice = request.get("ionice") or config.group(conf).ionice
        if ionice:  # before any thread starts: they inherit it
            _set_io_priority(str(ionice))
        tune_for_copy()
        verify = request.get("verify")

        def report(done: Progress) -> None:
            _say({"progress": done.summary()})

        async def job() -> CopyResult:
            rate = RateLimit(_rate(request.get("rate", 0)))
            copying = migrate(
                request["src"],
                request["dst"],
                int(request["size"]),
                conf=conf,
                target_is_zero=bool(request["target_is_zero"]),
                progress=report,
                verify=None if verify is None else bool(verify),
                rate=rate,
            )
            return await following_rate(control, rate, copying)

        result = run_interruptibly(job)
    except (UsageError, CopyFailed) as exc:
        message = " ".join([str(exc), *getattr(exc, "__notes__", [])])
        return _fail(message, 2 if isinstance(exc, UsageError) else 1)
    except (KeyError, ValueError, TypeError) as exc:
        return _fail(f"bad request: {exc!r}", 2)
    except KeyboardInterrupt:
        return _fail("interrupted: the copy was cancelled and cleaned up", 130)
    except HungUp:
        return _fail("hung up: the copy was cancelled and cleaned up", 129)
    except Terminated:
        return _fail("terminated: the copy was cancelled and cleaned up", 143)
    _say({"result": result.summary()})
    return 0


def _fail(message: str, code: int) -> int:
    """Answer with the copy's error (on stdout, and on stderr too); ``code``."""
    _say({"error": message})
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)
    return code


def _say(message: dict[str, Any]) -> None:
    """One JSON line on stdout; nothing if the caller is gone."""
    with contextlib.suppress(OSError, ValueError):
        print(json.dumps(message), flush=True)


def _read_request(fd: int = 0) -> tuple[dict[str, Any], bytes]:
    """The request (stdin's first line), and what was read past it, read unbuffered so that
    the control lines after it are left to ``follow_rate``."""
    data = b""
    while b"\n" not in data:
        piece = os.read(fd, 1 << 16)
        if not piece:
            break
        data += piece
    line, _, rest = data.partition(b"\n")
    request = json.loads(line)
    if not isinstance(request, dict):
        raise TypeError("the request must be a JSON object")
    return request, rest


def _set_io_priority(ionice: str) -> None:
    try:
        set_io_priority(io_priority(ionice))
    except OSError as exc:
        raise UsageError(f"cannot set the I/O priority {ionice!r}: {exc.strerror}") from exc


def _rate(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"a rate must be a number of bytes per second, not {value!r}")
    return value


async def following_rate(already: bytes, rate: RateLimit, work: Awaitable[T]) -> T:
    """Await ``work`` while the rate lines on stdin change ``rate``; its error raised alone."""

    async def working() -> T:
        return await work

    return await alongside(working, partial(follow_rate, already, rate))


async def follow_rate(already: bytes, rate: RateLimit, fd: int = 0) -> None:
    """Apply each ``{"rate": N}`` line of ``fd`` (after ``already``).

    The caller keeps ``fd`` open until the copy has answered; its end means the caller is
    gone (killed, or its service stopping), and the copy stops rather than write on alone.
    """
    pending = already
    async with trio.lowlevel.FdStream(os.dup(fd)) as stream:
        while True:
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    rate.set_rate(_rate(json.loads(line)["rate"]))
            piece = await stream.receive_some()
            if not piece:
                raise CopyFailed("the caller closed the copy's control channel: copy abandoned")
            pending += piece


if __name__ == "__main__":
    exit_process(child_main())
