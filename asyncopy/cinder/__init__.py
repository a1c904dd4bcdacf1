"""asyncopy for cinder-volume: ``copy_volume_data``, a drop-in ``copy_volume``, and (in
``asyncopy.cinder.manager``) a volume manager that copies through them.

cinder-volume runs under eventlet, monkey-patched, where trio cannot even be imported (its
socket and select modules are replaced). So this package imports neither trio nor anything
that does: the copy runs in a child process (``python -m asyncopy.cinder.child``). The child
reads its request, secrets included, as the first line of its stdin (never on its command
line); later lines change its rate limit while it copies. It answers with JSON lines on
stdout, progress then the result or its error: the error line is always the copy's own,
whatever else the child's libraries print (librados logs to stderr when a ceph.conf says
``log to stderr``, and may print to stdout, which is skipped). Both pipes are read as they
fill, stdout by the caller and stderr by a thread that keeps only its last lines (to say
something of a child that died without answering), so a child is never blocked on a full
pipe. Waiting on it is cooperative under eventlet (its patched ``subprocess`` and
``threading``), and a crash in a storage library cannot take cinder-volume down with it.
Every failure is one ``CopyFailed`` naming the endpoint, the operation and the offset.

A rate limit is shared as Cinder shares ``volume_copy_bps_limit``: the copies running under
one ``RateShare`` (one per Cinder ``Throttle``, one per volume manager) split its bytes per
second evenly, and each is told its new share when one starts or ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import IO, TYPE_CHECKING, Any

from asyncopy.core.progress import Progress
from asyncopy.errors import CopyFailed

if TYPE_CHECKING:  # imported by cinder-volume: oslo.config is there already, trio never
    from oslo_config import cfg

JsonObject = dict[str, Any]  # a connection_info, a request or a result, as JSON carries them


# A Cinder ``Throttle`` (``cinder.volume.throttling``): only a ``BlkioCgroup`` has the
# ``bps_limit`` a copy under it shares, so it is read when there.
Throttle = object


ProgressCallback = Callable[[Progress], None]  # bytes done and in all, rate, time left
Tell = Callable[[int], None]  # sends one copy its bytes per second


class RateShare:
    """A bytes-per-second limit split evenly among the copies running under it (0: none)."""

    def __init__(self, bytes_per_second: int = 0) -> None:
        self.bytes_per_second = bytes_per_second
        self._members: list[Tell] = []
        self._lock = threading.Lock()  # a green lock under eventlet's patching

    def each(self) -> int:
        """What every copy may move now."""
        if not self.bytes_per_second:
            return 0
        return max(1, self.bytes_per_second // max(1, len(self._members)))

    def join(self, tell: Tell, start: Tell) -> None:
        """Add a copy: ``start`` gets its share, then every other copy is told its new one.

        Both run under the share's lock, so no new share reaches a copy before it started.
        """
        with self._lock:
            self._members.append(tell)
            start(self.each())
            self._retell(exclude=tell)

    def leave(self, tell: Tell) -> None:
        """Remove a copy (ended, however it ended); the others get the bytes it had."""
        with self._lock:
            if tell in self._members:
                self._members.remove(tell)
                self._retell()

    def set_limit(self, bytes_per_second: int) -> None:
        """A new limit for every copy under the share (the running ones are told)."""
        with self._lock:
            if bytes_per_second != self.bytes_per_second:
                self.bytes_per_second = bytes_per_second
                self._retell()

    def _retell(self, exclude: Tell | None = None) -> None:
        rate = self.each()
        for tell in self._members:
            if tell is not exclude:
                tell(rate)


_SHARES: weakref.WeakKeyDictionary[object, RateShare] = weakref.WeakKeyDictionary()
_SHARES_LOCK = threading.Lock()


def rate_share(owner: object, bytes_per_second: int) -> RateShare:
    """The share of ``owner`` (a Cinder ``Throttle``, a volume manager), at this limit."""
    with _SHARES_LOCK:
        share = _SHARES.get(owner)
        if share is None:
            share = _SHARES[owner] = RateShare(bytes_per_second)
    share.set_limit(bytes_per_second)
    return share


def copy_volume_data(
    src_connection_info: Mapping[str, object],
    dst_connection_info: Mapping[str, object],
    size: int,
    *,
    conf: cfg.ConfigOpts | None = None,
    target_is_zero: bool = False,
    progress: ProgressCallback | None = None,
    verify: bool | None = None,
    rate: RateShare | None = None,
    ionice: str | None = None,
) -> JsonObject:
    """Copy the first ``size`` bytes of one Cinder volume onto another; block until done.

    Args:
        src_connection_info: the source volume's ``initialize_connection`` result.
        dst_connection_info: the destination's; the volume exists and holds ``size`` bytes.
        size: bytes to copy (a Cinder volume's size in GiB times 2**30).
        conf: an oslo.config ConfigOpts: the copy reads its config files' ``[asyncopy]``.
        target_is_zero: the destination is known to read zeros (Cinder's ``sparse``).
        progress: called with a ``Progress`` (bytes done and in all, rate, time left) as
            the copy goes.
        verify: re-read and compare the destination; None takes ``[asyncopy] verify``.
        rate: the bytes-per-second limit this copy shares with others; none if None.
        ionice: ionice's options for the copy's I/O priority (``-c3``, ``-c2 -n7``).

    Returns:
        The copy's figures: bytes_total, bytes_read, bytes_written, bytes_zeroed,
        bytes_skipped, seconds, verified, verify_seconds.

    Raises:
        CopyFailed: the one exception for every failure, its message one line naming the
            endpoint, the operation and the offset. Bad input (a connection_info or setting
            that cannot work, a destination too small) fails before anything is written.
    """
    request = child_request(
        {"connection_info": dict(src_connection_info)},
        {"connection_info": dict(dst_connection_info)},
        size,
        conf,
        target_is_zero=target_is_zero,
        verify=verify,
        ionice=ionice,
    )
    return run_child(request, progress, rate)


def child_request(
    src: Mapping[str, object],
    dst: Mapping[str, object],
    size: int,
    conf: cfg.ConfigOpts | None,
    *,
    target_is_zero: bool,
    verify: bool | None = None,
    ionice: str | None = None,
    defaults: Mapping[str, object] | None = None,
) -> JsonObject:
    """What the child is asked: both ends described, the size, the settings."""
    files = getattr(conf, "config_file", None) if conf is not None else None
    return {
        "src": dict(src),
        "dst": dict(dst),
        "size": size,
        "config_files": [str(path) for path in files or []],
        "target_is_zero": target_is_zero,
        "verify": verify,
        "ionice": ionice,
        "defaults": dict(defaults or {}),
    }


STOP_GRACE = 5.0  # seconds a stopped copy has to clean up before it is killed
STDERR_LINES = 20  # the child's last stderr lines kept, to say why it died if it did not
LINE_LIMIT = 4096  # characters read as one stderr line at most
SHOWN = 200  # characters of a stderr line an error quotes at most


def run_child(
    request: Mapping[str, object],
    progress: ProgressCallback | None,
    rate: RateShare | None = None,
) -> JsonObject:
    """Run one copy in ``python -m asyncopy.cinder.child``; its result, or its error raised.

    If this wait is interrupted (a green thread killed when cinder-volume stops), the child
    is told to stop and waited for, and killed if it lingers: no copy outlives its caller.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncopy.cinder.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",  # a library's log need not be UTF-8
    )
    assert child.stdin is not None
    control = _Control(child.stdin)
    stderr = _Tail(child)
    share = rate or RateShare()
    try:
        share.join(control.tell, lambda each: control.send({**request, "rate": each}))
        try:
            answer = _talk(child, progress)
        finally:
            share.leave(control.tell)
    except BaseException:
        _stop(child, control)
        raise
    finally:
        control.close()
        stderr.close()
    if child.returncode != 0 or answer.result is None:
        raise CopyFailed(answer.error or _died(child.returncode, stderr.last()))
    return answer.result


def _died(returncode: int, last: str | None) -> str:
    """Why a child that gave no answer failed, as far as can be told."""
    if returncode < 0:
        how = f"was killed by signal {-returncode}"
        with contextlib.suppress(ValueError):
            how = f"was killed by {signal.Signals(-returncode).name}"
    else:
        how = f"exited with {returncode}"
    said = f" (its last output: {last[:SHOWN]})" if last else ""
    return f"the copy process {how} without an answer{said}"


def _stop(child: subprocess.Popen[str], control: _Control) -> None:
    """Stop a copy whose caller gives up: its control channel closes, so the child cancels
    the copy and cleans up (a created image removed, locks and sessions released, as after
    any failure); killed if it is not gone within ``STOP_GRACE`` seconds."""
    control.close()
    try:
        child.wait(timeout=STOP_GRACE)  # it writes a line or two at most meanwhile
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


class _Control:
    """The child's stdin: the request line, then ``{"rate": N}`` lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def send(self, message: Mapping[str, object]) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):  # the child is gone: its
            self.stream.write(json.dumps(message) + "\n")  # exit status will say why
            self.stream.flush()

    def tell(self, each: int) -> None:
        self.send({"rate": each})

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.stream.close()


class _Tail:
    """The child's stderr, read by a thread as it fills; its last lines kept."""

    def __init__(self, child: subprocess.Popen[str]) -> None:
        assert child.stderr is not None
        self.stream = child.stderr
        self.lines: deque[str] = deque(maxlen=STDERR_LINES)
        self.thread = threading.Thread(target=self._read, name="asyncopy-stderr", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in iter(partial(self.stream.readline, LINE_LIMIT), ""):
                if line.strip():
                    self.lines.append(line.strip())

    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None

    def close(self) -> None:
        """Once the child is gone its stderr ends; the stream is closed when read to its
        end (a descendant still holding it open leaves it to the thread)."""
        self.thread.join(timeout=STOP_GRACE)
        if not self.thread.is_alive():
            self.stream.close()


class _Answer:
    """What the child said on stdout: its last result, or its error."""

    def __init__(self) -> None:
        self.result: JsonObject | None = None
        self.error: str | None = None


def _talk(child: subprocess.Popen[str], progress: ProgressCallback | None) -> _Answer:
    assert child.stdout is not None
    answer = _Answer()
    for line in child.stdout:
        message = _message(line)
        if "progress" in message and progress is not None:
            progress(Progress.from_summary(message["progress"]))
        answer.result = message.get("result", answer.result)
        answer.error = message.get("error", answer.error)
    child.stdout.close()
    child.wait()
    return answer


def _message(line: str) -> JsonObject:
    """One of the child's JSON lines; anything else on its stdout (a library's) is none."""
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def copy_volume(
    src: Any,
    dest: Any,
    size_in_m: int,
    blocksize: Any = None,
    sync: bool = False,
    execute: Any = None,
    ionice: Any = None,
    throttle: Throttle | None = None,
    sparse: bool = False,
    *,
    conf: cfg.ConfigOpts | None = None,
) -> None:
    """A drop-in for ``cinder.volume.volume_utils.copy_volume``.

    ``src`` and ``dest`` are device or file paths, file objects opened on a path, or os-brick
    ``RBDVolumeIOWrapper`` objects, which are unwrapped to their pool and image (read and
    written through librbd, concurrently and sparsely, not through the wrapper's serial
    ``read``/``write``). ``sparse`` keeps Cinder's meaning: the destination reads as zeros,
    so zero blocks are skipped.

    - ``throttle``: a Cinder ``Throttle``; its ``bps_limit`` (``volume_copy_bps_limit``) is
      the copy's rate limit, shared with every other copy under the same throttle, on every
      path (Cinder's own covers only ``dd`` between block devices). None takes Cinder's
      default throttle, as Cinder does.
    - ``ionice``: ionice's options, set as the copy's I/O priority (``ioprio_set``).
    - ``sync``: the copy is always flushed to stable storage before this returns.
    - A ``/dev/zero`` source (Cinder clearing a volume) and ``blocksize``/``execute`` are
      Cinder's business: such a call goes to Cinder's own ``copy_volume``.

    Raises:
        CopyFailed: the copy failed (or an argument cannot be copied from or to).
    """
    if isinstance(src, str) and os.path.realpath(src) == "/dev/zero":
        cinders = {"sync": sync, "ionice": ionice, "throttle": throttle, "sparse": sparse}
        if execute is not None:
            cinders["execute"] = execute
        _cinder_copy_volume()(src, dest, size_in_m, blocksize, **cinders)
        return
    throttle = throttle if throttle is not None else _cinder_default_throttle()
    limit = int(getattr(throttle, "bps_limit", 0) or 0)
    share = rate_share(throttle, limit) if throttle is not None else None
    size = int(size_in_m) << 20
    copy_handles(src, dest, size, sparse=sparse, conf=conf, rate=share, ionice=ionice or None)


def copy_handles(
    src: Any,
    dest: Any,
    size: int,
    *,
    sparse: bool,
    conf: cfg.ConfigOpts | None = None,
    progress: ProgressCallback | None = None,
    rate: RateShare | None = None,
    ionice: str | None = None,
    defaults: Mapping[str, object] | None = None,
) -> JsonObject:
    """Copy ``size`` bytes between what Cinder's ``_attach_volume`` returned (paths, file
    objects, ``RBDVolumeIOWrapper`` objects; see ``copy_volume``); the copy's figures.

    ``defaults`` replace ``[asyncopy]`` defaults (a config file's value still wins).
    """
    request = child_request(
        describe(src),
        describe(dest),
        size,
        conf,
        target_is_zero=bool(sparse),
        ionice=ionice,
        defaults=defaults,
    )
    return run_child(request, progress, rate)


def _cinder_copy_volume() -> Callable[..., None]:
    """Cinder's own ``copy_volume``, also when this drop-in was installed in its place."""
    from cinder.volume import throttling, volume_utils

    if volume_utils.copy_volume is not copy_volume:
        original: Callable[..., None] = volume_utils.copy_volume
        return original

    def with_path(src: str, dest: str, size_in_m: int, blocksize: Any, **kwargs: Any) -> None:
        throttle = kwargs.pop("throttle", None) or throttling.Throttle.get_default()
        with throttle.subcommand(src, dest) as command:  # as Cinder's copy_volume does
            volume_utils._copy_volume_with_path(
                command["prefix"], src, dest, size_in_m, blocksize, **kwargs
            )

    return with_path


def _cinder_default_throttle() -> Throttle | None:
    """Cinder's default ``Throttle`` (a driver's ``set_throttle`` sets it), if Cinder is here."""
    throttling = sys.modules.get("cinder.volume.throttling")
    return throttling.Throttle.get_default() if throttling is not None else None


def describe(volume: Any) -> JsonObject:
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


def can_describe(volume: Any) -> bool:
    """Whether ``copy_volume`` can take this handle (else Cinder's own copy must)."""
    try:
        describe(volume)
    except CopyFailed:
        return False
    return True


def _escape(text: str) -> str:
    """A name inside an ``rbd:`` URI, with ``:`` and ``\\`` escaped as qemu's syntax wants."""
    return text.replace("\\", "\\\\").replace(":", "\\:")
