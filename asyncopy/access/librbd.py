"""librados and librbd through cffi (``asyncopy.access._librbd``): a thin layer, driven from trio.

- **One connection per cluster and direction per process.** ``connection(settings)`` hands
  out a shared, counted librados connection keyed by its settings (configuration file, user,
  options, and ``direction``): images read share one, images written another, and each is
  shut down when its last user leaves. A source and a destination on one cluster sharing one
  connection share its one session with each OSD: a dense 2.5 GiB rbd -> rbd copy took
  3.1-3.6 s that way and 2.3-2.4 s with a connection each (as qemu-img, which opens one per
  image), 3 interleaved rounds on a single-node memstore cluster; more messenger threads or
  larger objecter throttles on the shared one did not help.
- **No thread hop, no GIL taken by librbd.** Reads and writes are ``rbd_aio_*`` requests made
  from the event loop, straight into or out of the caller's buffer, with completions that have
  no callback: librbd queues each on the image and signals the image's eventfd. One waiting
  task at a time watches that fd and, when it fires, hands every finished completion to its
  waiter; when its own request is done it passes the watch on.
- **Every wait is bounded.** A request cannot be taken back from librbd, so its waiter is
  shielded from cancellation, but only until ``deadline`` seconds: past that the image is
  declared broken and abandoned (``rbd_close`` would wait for the request), and the request
  fails with ETIMEDOUT.
- Calls that block (connect, open, close, create, remove, the allocation map, locks, watchers)
  run in worker threads; errors are ``RbdError`` (the call and its errno), never a message
  holding a configuration value.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from asyncopy.access._librbd import ffi, lib
from asyncopy.errors import RbdError

POLL_BATCH = 32  # completions taken per rbd_poll_io_events call
EXCLUSIVE_LOCK = int(lib.RBD_FEATURE_EXCLUSIVE_LOCK)
FAST_DIFF = int(lib.RBD_FEATURE_FAST_DIFF)
FAST_DIFF_INVALID = int(lib.RBD_FLAG_FAST_DIFF_INVALID)
CData = Any  # a cffi pointer
T = TypeVar("T")


def check(call: str, result: int, detail: str = "") -> int:
    """``result`` if it is not a negative errno; else an RbdError."""
    if result < 0:
        raise RbdError(call, -result, detail)
    return result


# -- connections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What makes a connection: equal settings share one."""

    conf: str | None  # a ceph.conf; None: librados' default search, if any is found
    user: str | None  # the cephx id (without "client."); None: admin
    options: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold a key
    direction: str = ""  # "read" or "write": never sent to librados, only keeps them apart


class Health:
    """Whether a cluster has stopped answering this process. Once a request timed out, the
    copy has failed: every other wait on that cluster is cut short (its image abandoned) and
    clean-up that needs the cluster is not tried, so a copy fails within its timeout of the
    first unanswered request instead of waiting that long again for each one."""

    def __init__(self) -> None:
        self.silent = False
        self.waits: set[trio.CancelScope] = set()

    def timed_out(self) -> None:
        self.silent = True
        for scope in self.waits:
            scope.cancel()


@dataclass(eq=False)
class _Attempt:
    """One caller's wait for a connection; ``given_up`` once it stopped waiting."""

    settings: Settings
    given_up: bool = False
    acquired: bool = False


class _Connections:
    """The process's open connections, counted. Connecting happens outside the lock (it
    may never end: librados reading a FIFO, monitors that never answer), so a caller that
    gives up leaves nothing locked, and a connection made after it gave up is shut down."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[Settings, list[Any]] = {}  # settings -> [rados_t, users, Health]

    def acquire(self, attempt: _Attempt) -> tuple[CData, Health]:
        with self.lock:
            entry = self._join(attempt)
        if entry is not None:
            return entry[0], entry[2]
        cluster = _connect(attempt.settings)
        with self.lock:
            if not attempt.given_up:
                entry = self._join(attempt) or self._add(attempt, cluster)
        if entry is None or entry[0] is not cluster:  # given up, or another connected first
            lib.rados_shutdown(cluster)
        if entry is None:
            raise RbdError("rados_connect", errno.ETIMEDOUT, "(given up)")
        return entry[0], entry[2]

    def _join(self, attempt: _Attempt) -> list[Any] | None:
        entry = self.open.get(attempt.settings)
        if entry is not None:
            entry[1] += 1
            attempt.acquired = True
        return entry

    def _add(self, attempt: _Attempt, cluster: CData) -> list[Any]:
        entry = self.open[attempt.settings] = [cluster, 1, Health()]
        attempt.acquired = True
        return entry

    def give_up(self, attempt: _Attempt) -> bool:
        """Stop waiting for ``attempt``; whether it had acquired a connection meanwhile
        (which must then be released)."""
        with self.lock:
            attempt.given_up = True
            if not attempt.acquired:
                _ABANDONED.append(attempt)  # its thread may be in librados for good
            return attempt.acquired

    def release(self, settings: Settings) -> None:
        with self.lock:
            entry = self.open[settings]
            entry[1] -= 1
            if entry[1]:
                return
            del self.open[settings]
        lib.rados_shutdown(entry[0])


_CONNECTIONS = _Connections()


def _connect(settings: Settings) -> CData:
    handle = ffi.new("rados_t *")
    check("rados_create", lib.rados_create(handle, _text(settings.user)))
    cluster = handle[0]
    try:
        if settings.conf is not None:
            check("rados_conf_read_file", lib.rados_conf_read_file(cluster, _text(settings.conf)))
        else:  # as qemu: the default places, if a file is there
            lib.rados_conf_read_file(cluster, ffi.NULL)
        for key, value in settings.options:
            check("rados_conf_set", lib.rados_conf_set(cluster, _text(key), _text(value)), key)
        check("rados_connect", lib.rados_connect(cluster))
    except BaseException:
        lib.rados_shutdown(cluster)
        raise
    return cluster


# Images with a request librbd never answered: kept (with the buffers librbd may still write
# into) for the rest of the process, which should then end through ``os._exit``.
_ABANDONED: list[object] = []
# The cookies of this process's own header watches: not "other clients" of an image.
_OWN_WATCHES: set[int] = set()


def abandoned_images() -> int:
    """How many images (or pools) this process gave up on with a call still in librbd's
    hands."""
    return len(_ABANDONED)


async def bounded(owner: Pool | Image, call: str, fn: Callable[..., T], *args: object) -> T:
    """A blocking librados/librbd call in a worker thread, waited for at most the owner's
    ``deadline`` seconds. Past that, or if the caller is cancelled, the thread is left to
    finish alone: the owner (and its pool and connection) is abandoned, never closed under
    it, and the call fails with ETIMEDOUT (or the cancellation goes on)."""
    with trio.move_on_after(owner.deadline):
        try:
            return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        except trio.Cancelled:
            owner.abandon()
            raise
    owner.abandon()
    owner.health.timed_out()
    raise RbdError(call, errno.ETIMEDOUT, f"(no answer in {owner.deadline:g} s)")


def open_connections() -> int:
    """How many librados connections this process holds."""
    with _CONNECTIONS.lock:
        return len(_CONNECTIONS.open)


async def _acquire(settings: Settings, deadline: float) -> tuple[CData, Health]:
    """The shared connection for ``settings``, or ETIMEDOUT after ``deadline`` seconds;
    cancellable meanwhile (the connecting thread is then left to finish alone)."""
    attempt = _Attempt(settings)
    try:
        with trio.move_on_after(deadline):
            return await trio.to_thread.run_sync(
                _CONNECTIONS.acquire, attempt, abandon_on_cancel=True
            )
    except trio.Cancelled:
        await _give_up(attempt)
        raise
    await _give_up(attempt)
    raise RbdError("rados_connect", errno.ETIMEDOUT, f"(no answer in {deadline:g} s)")


async def _give_up(attempt: _Attempt) -> None:
    if _CONNECTIONS.give_up(attempt):  # connected just as the wait ended
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_CONNECTIONS.release, attempt.settings)


@asynccontextmanager
async def pool(
    settings: Settings,
    name: str,
    namespace: str = "",
    deadline: float = 60.0,
    connect_deadline: float | None = None,
) -> AsyncIterator[Pool]:
    """An I/O context on a pool (and namespace), over the shared connection, made within
    ``connect_deadline`` seconds (``deadline`` if None)."""
    cluster, health = await _acquire(settings, connect_deadline or deadline)
    ioctx: Pool | None = None
    try:
        handle = ffi.new("rados_ioctx_t *")
        check("rados_ioctx_create", lib.rados_ioctx_create(cluster, _text(name), handle), name)
        ioctx = Pool(handle[0], deadline, health)
        if namespace:
            lib.rados_ioctx_set_namespace(ioctx.handle, _text(namespace))
        yield ioctx
    finally:
        # An abandoned image holds a request librados may still answer: then all stay open.
        if ioctx is None or not ioctx.abandoned:
            if ioctx is not None:
                lib.rados_ioctx_destroy(ioctx.handle)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_CONNECTIONS.release, settings)


class Pool:
    """An open ``rados_ioctx_t``: where images are created, removed and opened.

    ``abandoned`` once an image opened here was: the pool and its connection then stay open.
    """

    def __init__(self, handle: CData, deadline: float, health: Health) -> None:
        self.handle = handle
        self.deadline = deadline  # seconds any blocking call here may take
        self.health = health
        self.abandoned = False

    def abandon(self) -> None:
        if not self.abandoned:
            self.abandoned = True
            _ABANDONED.append(self)

    async def create(
        self,
        name: str,
        size: int,
        *,
        order: int | None = None,
        features: int | None = None,
        data_pool: str | None = None,
    ) -> bool:
        """Create an image (format 2); False if one of that name exists."""

        def create() -> bool:
            with _image_options(order, features, data_pool) as options:
                result = lib.rbd_create4(self.handle, _text(name), size, options)
            if result == -errno.EEXIST:
                return False
            check("rbd_create4", result, name)
            return True

        return await bounded(self, "rbd_create4", create)

    async def remove(self, name: str) -> None:
        if self.health.silent:
            detail = f"{name} (not tried: the cluster stopped answering)"
            raise RbdError("rbd_remove", errno.ETIMEDOUT, detail)
        result = await bounded(self, "rbd_remove", lib.rbd_remove, self.handle, _text(name))
        check("rbd_remove", result, name)

    async def exists(self, name: str) -> bool:
        """Whether the image (its head) can be opened."""
        try:
            image = await self.open(name, read_only=True, deadline=self.deadline)
        except RbdError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        with trio.CancelScope(shield=True):
            await image.close()
        return True

    async def open(
        self, name: str, *, snapshot: str | None = None, read_only: bool, deadline: float
    ) -> Image:
        """Open an image; its ``close`` must follow on every path."""
        return await bounded(self, "rbd_open", self._open, name, snapshot, read_only, deadline)

    def _open(self, name: str, snapshot: str | None, read_only: bool, deadline: float) -> Image:
        handle = ffi.new("rbd_image_t *")
        opener = lib.rbd_open_read_only if read_only else lib.rbd_open
        check("rbd_open", opener(self.handle, _text(name), handle, _text(snapshot)), name)
        try:
            return Image(handle[0], deadline, self)
        except BaseException:
            lib.rbd_close(handle[0])
            raise


@contextmanager
def _image_options(
    order: int | None, features: int | None, data_pool: str | None
) -> Iterator[CData]:
    options = ffi.new("rbd_image_options_t *")
    lib.rbd_image_options_create(options)
    try:
        if order is not None:
            lib.rbd_image_options_set_uint64(options[0], lib.RBD_IMAGE_OPTION_ORDER, order)
        if features is not None:
            lib.rbd_image_options_set_uint64(options[0], lib.RBD_IMAGE_OPTION_FEATURES, features)
        if data_pool is not None:
            lib.rbd_image_options_set_string(
                options[0], lib.RBD_IMAGE_OPTION_DATA_POOL, _text(data_pool)
            )
        yield options[0]
    finally:
        lib.rbd_image_options_destroy(options[0])


# -- images ---------------------------------------------------------------------------------


@dataclass
class _Request:
    """One aio request in flight: what its waiter needs, and the buffer librbd holds."""

    buffer: CData
    result: int | None = None
    wake: trio.Event = field(default_factory=trio.Event)


class Image:
    """An open ``rbd_image_t`` with its completion eventfd."""

    def __init__(self, handle: CData, deadline: float, pool: Pool) -> None:
        self.handle = handle
        self.deadline = deadline
        self.pool = pool
        self.broken = False
        info = ffi.new("rbd_image_info_t *")
        check("rbd_stat", lib.rbd_stat(handle, info, ffi.sizeof("rbd_image_info_t")))
        self.size, self.object_size = int(info.size), int(info.obj_size)
        value = ffi.new("uint64_t *")
        check("rbd_get_features", lib.rbd_get_features(handle, value))
        self.features = int(value[0])
        check("rbd_get_flags", lib.rbd_get_flags(handle, value))
        self.flags = int(value[0])
        self.events = check("eventfd", lib.eventfd(0, lib.EVENTFD_NONBLOCK | lib.EVENTFD_CLOEXEC))
        try:
            notify = lib.rbd_set_image_notification(handle, self.events, lib.EVENT_TYPE_EVENTFD)
            check("rbd_set_image_notification", notify)
        except BaseException:
            os.close(self.events)
            raise
        self._ids = itertools.count(1)
        self._pending: dict[int, _Request] = {}
        self._watching = False

    def image_id(self) -> str:
        text = ffi.new("char[]", 256)
        check("rbd_get_id", lib.rbd_get_id(self.handle, text, 256))
        return str(ffi.string(text).decode())

    def snapshot_id(self, name: str) -> int:
        """The id of snapshot ``name`` (another snapshot made under the same name has
        another id)."""
        value = ffi.new("uint64_t *")
        check("rbd_snap_get_id", lib.rbd_snap_get_id(self.handle, name.encode(), value), name)
        return int(value[0])

    async def snapshot_exists(self, name: str) -> bool:
        found = ffi.new("bool *")
        result = await bounded(
            self, "rbd_snap_exists", lib.rbd_snap_exists, self.handle, name.encode(), found
        )
        check("rbd_snap_exists", result, name)
        return bool(found[0])

    async def create_snapshot(self, name: str) -> None:
        """Take snapshot ``name``, without asking the image's users to quiesce first (an
        image being written by a copy has no other user)."""
        result = await bounded(
            self,
            "rbd_snap_create2",
            lib.rbd_snap_create2,
            self.handle,
            name.encode(),
            lib.RBD_SNAP_CREATE_SKIP_QUIESCE,
            ffi.NULL,
            ffi.NULL,
        )
        check("rbd_snap_create2", result, name)

    async def metadata(self, key: str) -> str | None:
        """The image's metadata value for ``key``; None when it has none."""
        return await bounded(self, "rbd_metadata_get", self._metadata, key)

    def _metadata(self, key: str) -> str | None:
        room = 256
        while True:
            value, length = ffi.new("char[]", room), ffi.new("size_t *", room)
            result = lib.rbd_metadata_get(self.handle, key.encode(), value, length)
            if result == -errno.ENOENT:
                return None
            if result == -errno.ERANGE:
                room = max(int(length[0]), room * 2)
                continue
            check("rbd_metadata_get", result, key)
            return str(ffi.string(value).decode())

    async def set_metadata(self, key: str, value: str) -> None:
        result = await bounded(
            self,
            "rbd_metadata_set",
            lib.rbd_metadata_set,
            self.handle,
            key.encode(),
            value.encode(),
        )
        check("rbd_metadata_set", result, key)

    async def watch_header(self) -> HeaderWatch:
        """Watch the image's header as its writers do: a writer that checks for watchers sees
        this reader, and every client taking the image's lock is counted."""
        watch = HeaderWatch(self)
        started = await bounded(self, "rados_watch2", lib.asyncopy_watch_start, watch.state)
        check("rados_watch2", started)
        _OWN_WATCHES.add(int(watch.state.cookie))
        return watch

    def identity(self) -> tuple[str, int, str, str]:
        """(cluster fsid, pool id, namespace, image id): the same for every way of naming
        this image, and for no other image."""
        ioctx = self.pool.handle
        text = ffi.new("char[]", 256)
        check(
            "rados_cluster_fsid",
            lib.rados_cluster_fsid(lib.rados_ioctx_get_cluster(ioctx), text, 256),
        )
        fsid = ffi.string(text).decode()
        check("rados_ioctx_get_namespace", lib.rados_ioctx_get_namespace(ioctx, text, 256))
        namespace = ffi.string(text).decode()
        return fsid, int(lib.rados_ioctx_get_id(ioctx)), namespace, self.image_id()

    @property
    def health(self) -> Health:
        return self.pool.health

    def abandon(self) -> None:
        """Give up on this image for good: a call or request is still in librbd's hands, so
        it is never closed, its buffers and eventfd are kept, its pool stays open."""
        if not self.broken:
            self.broken = True
            _ABANDONED.append(self)
            self.pool.abandon()

    async def read(self, offset: int, buf: memoryview) -> int:
        """Read len(buf) bytes at ``offset`` into ``buf``; the count read."""
        target = ffi.from_buffer(buf, require_writable=True)
        return await self._request(
            "rbd_aio_read",
            target,
            lambda done: lib.rbd_aio_read(self.handle, offset, len(buf), target, done),
        )

    async def write(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset``; librbd sends from it, so it is held until done."""
        source = ffi.from_buffer(data)
        await self._request(
            "rbd_aio_write",
            source,
            lambda done: lib.rbd_aio_write(self.handle, offset, len(data), source, done),
        )

    async def write_zeroes(self, offset: int, length: int) -> None:
        await self._request(
            "rbd_aio_write_zeroes",
            None,
            lambda done: lib.rbd_aio_write_zeroes(self.handle, offset, length, done, 0, 0),
        )

    async def flush(self) -> None:
        await self._request(
            "rbd_aio_flush", None, lambda done: lib.rbd_aio_flush(self.handle, done)
        )

    async def allocated(
        self, offset: int, length: int, whole_object: bool, since: str | None = None
    ) -> list[tuple[int, int, bool]]:
        """``rbd_diff_iterate2`` from the beginning (parent included), or from snapshot
        ``since``: (offset, length, exists) per run written (or discarded) since."""
        found: list[tuple[int, int, bool]] = []

        def walk() -> None:
            arg = ffi.new_handle(found)
            result = lib.rbd_diff_iterate2(
                self.handle,
                _text(since),
                offset,
                length,
                1,
                whole_object,
                lib.asyncopy_diff_extent,
                arg,
            )
            check("rbd_diff_iterate2", result)

        await bounded(self, "rbd_diff_iterate2", walk)
        return found

    async def watchers(self) -> list[str]:
        """The addresses of the clients watching the image (this one too, if writable), but
        for this process's own header watches (``watch_header``)."""
        return await bounded(self, "rbd_watchers_list", self._watchers)

    def _watchers(self) -> list[str]:
        room = 16
        while True:
            watchers = ffi.new("rbd_image_watcher_t[]", room)
            count = ffi.new("size_t *", room)
            result = lib.rbd_watchers_list(self.handle, watchers, count)
            if result == -errno.ERANGE:
                room = max(int(count[0]), room * 2)
                continue
            check("rbd_watchers_list", result)
            try:
                return [
                    ffi.string(watchers[i].addr).decode()
                    for i in range(count[0])
                    if int(watchers[i].cookie) not in _OWN_WATCHES
                ]
            finally:
                lib.rbd_watchers_list_cleanup(watchers, count[0])

    async def lock_exclusive(self) -> None:
        """Take the exclusive lock and keep it (no other client is handed it)."""
        result = await bounded(
            self, "rbd_lock_acquire", lib.rbd_lock_acquire, self.handle, lib.RBD_LOCK_MODE_EXCLUSIVE
        )
        check("rbd_lock_acquire", result)

    async def close(self) -> None:
        """Close the image, unless a request is still in librbd's hands (then abandon it)."""
        if self.broken:
            return
        if self.health.silent:  # closing would wait on the cluster again (its lock, watch)
            self.abandon()
            return
        result = await bounded(self, "rbd_close", lib.rbd_close, self.handle)
        os.close(self.events)  # not before: librbd may signal it until rbd_close returns
        check("rbd_close", result)

    async def _request(self, call: str, buffer: CData, submit: Callable[[CData], int]) -> int:
        if self.broken:
            raise RbdError(call, errno.EIO, "(an earlier request never completed)")
        completion = ffi.new("rbd_completion_t *")
        key = next(self._ids)
        check(
            "rbd_aio_create_completion",
            lib.rbd_aio_create_completion(ffi.cast("void *", key), ffi.NULL, completion),
        )
        request = self._pending[key] = _Request(buffer)
        result = submit(completion[0])
        if result < 0:
            del self._pending[key]
            lib.rbd_aio_release(completion[0])
            raise RbdError(call, -result)
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.deadline) as wait:
            self.health.waits.add(wait)
            try:
                await self._wait(request)
            finally:
                self.health.waits.discard(wait)
        if request.result is None:
            self.abandon()
            silent = self.health.silent
            self.health.timed_out()
            why = (
                "the cluster stopped answering"
                if silent
                else f"no completion in {self.deadline:g} s"
            )
            raise RbdError(call, errno.ETIMEDOUT, f"({why})")
        if request.result == -errno.ETIMEDOUT:
            self.health.timed_out()
        return check(call, request.result)

    async def _wait(self, request: _Request) -> None:
        """Until ``request`` is done: watch the eventfd if no other task does, else sleep
        until woken (done, or handed the watch)."""
        while request.result is None:
            if self._watching:
                await request.wake.wait()
                request.wake = trio.Event()
                continue
            self._watching = True
            try:
                await trio.lowlevel.wait_readable(self.events)
                self._collect()
            finally:
                self._watching = False
                self._hand_over()

    def _collect(self) -> None:
        """Take every finished completion off the image and wake its waiter."""
        with suppress(BlockingIOError):
            os.read(self.events, 8)
        completions = ffi.new("rbd_completion_t[]", POLL_BATCH)
        while True:
            count = lib.rbd_poll_io_events(self.handle, completions, POLL_BATCH)
            for index in range(max(count, 0)):
                completion = completions[index]
                key = int(ffi.cast("uintptr_t", lib.rbd_aio_get_arg(completion)))
                result = int(lib.rbd_aio_get_return_value(completion))
                lib.rbd_aio_release(completion)
                request = self._pending.pop(key)
                request.result = result
                request.wake.set()
            if count < POLL_BATCH:
                return

    def _hand_over(self) -> None:
        """Wake one task still waiting, to watch the eventfd in turn."""
        for request in self._pending.values():
            if request.result is None:
                request.wake.set()
                return


class HeaderWatch:
    """A watch on an image's header object (``rbd_header.ID``), acked and counted in C."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.state = ffi.new("struct asyncopy_watch *")
        self.state.io = image.pool.handle
        oid = f"rbd_header.{image.image_id()}".encode()
        ffi.memmove(self.state.oid, oid, min(len(oid), 127))

    def _count(self, field: str) -> int:
        return int(lib.asyncopy_watch_read(ffi.addressof(self.state, field)))

    @property
    def lock_taken(self) -> int:
        """How many times another client took (or asked for) the image's lock."""
        return self._count("lock_taken")

    @property
    def errors(self) -> int:
        """How many times librados lost the watch (notifications may have been missed)."""
        return self._count("errors")

    async def stop(self) -> None:
        """Unwatch, and wait until no callback can still run on this watch's state; if that
        cannot be done, the state is kept for the rest of the process."""
        if self.image.broken or self.image.health.silent:
            _ABANDONED.append(self)
            return
        _OWN_WATCHES.discard(int(self.state.cookie))
        try:
            check(
                "rados_unwatch2",
                await bounded(self.image, "rados_unwatch2", lib.asyncopy_watch_stop, self.state),
            )
            cluster = lib.rados_ioctx_get_cluster(self.image.pool.handle)
            await bounded(self.image, "rados_watch_flush", lib.rados_watch_flush, cluster)
        except BaseException:
            _ABANDONED.append(self)
            raise


@ffi.def_extern()  # type: ignore[untyped-decorator]
def asyncopy_diff_extent(offset: int, length: int, exists: int, arg: CData) -> int:
    found: list[tuple[int, int, bool]] = ffi.from_handle(arg)
    found.append((int(offset), int(length), bool(exists)))
    return 0


def _text(value: str | None) -> CData:
    return ffi.NULL if value is None else value.encode()
