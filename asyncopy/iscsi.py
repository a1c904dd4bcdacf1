"""iSCSI LUNs in user space: libiscsi's asynchronous API driven from trio's event loop.

No kernel initiator and no thread per request: one iSCSI session per endpoint, many SCSI
commands in flight on it.

Design:
- libiscsi never leaves the event loop's thread (it is not thread-safe). Two pump tasks own
  the session's socket: one waits for it to be readable, one writable, each only while
  ``iscsi_which_events`` asks for it, and each then calls ``iscsi_service``. Queuing a
  command changes which events the session needs, so every queue and every service call
  "kicks" the pumps to look again: a command queued while the pumps wait only for
  readability would otherwise never be sent. A ticker calls ``iscsi_service(ctx, 0)`` once a
  second, which is how libiscsi expires commands past the session timeout.
- Completions arrive through one ``extern "Python"`` callback, called inside
  ``iscsi_service``; it records the status and wakes the waiting task.
- Reads and writes use the iovec variants pointed at the engine's own buffer: no copies.
  A command cannot be taken back once sent (libiscsi's cancel is local only), so its waiter
  is shielded until it completes or times out, and so are the pumps, which are stopped only
  when the endpoint closes. The session timeout bounds every wait.
- A session that fails (socket error, timeout) fails every command still waiting, and each
  error names the LUN, the operation and the offset.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

import trio

from asyncopy.endpoint import Extent, ExtentKind, all_data
from asyncopy.errors import EndpointError, UsageError

DEFAULT_TIMEOUT = 30  # seconds, per command and for the login
INITIATOR = "iqn.2026-11.org.openstack.asyncopy:initiator"
MAX_TRANSFER = 4 << 20  # bytes per READ/WRITE(16), below the target's own limit
MAX_WRITE_SAME = 1 << 30  # bytes per WRITE SAME(16), below the target's own limit
LBA_STATUS_ALLOC = 4096  # GET LBA STATUS reply buffer: 255 descriptors
TICK = 1.0
UNMAPPED = (1, 2)  # GET LBA STATUS: deallocated, anchored; anything else counts as data
T = TypeVar("T")
USAGE = "expected iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN"

_URL = re.compile(
    r"//(?:(?P<user>[^%@/]*)(?:%(?P<password>[^@/]*))?@)?"
    r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:/@\[\]]+)(?::(?P<port>\d{1,5}))?"
    r"/(?P<target>[^/\s]+)/(?P<lun>\d{1,5})"
)


@dataclass(frozen=True)
class IscsiOptions:
    """How to reach iSCSI LUNs: CHAP credentials (when the URI has none) and the timeout."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: int = DEFAULT_TIMEOUT
    initiator: str = INITIATOR


@dataclass(frozen=True)
class IscsiSpec:
    """A parsed ``iscsi://`` URI. ``str()`` never shows the credentials."""

    host: str
    port: int
    target: str
    lun: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"iscsi://{self.portal}/{self.target}/{self.lun}"


def parse_iscsi(text: str) -> IscsiSpec:
    """Parse what follows ``iscsi:``; bad input is a UsageError that never shows a secret."""
    match = _URL.fullmatch(text)
    if match is None:
        shown = text.rpartition("@")[2] if "@" in text else text
        raise UsageError(f"iscsi:{shown}: {USAGE}")
    port = int(match["port"] or 3260)
    if not 0 < port < 65536:
        raise UsageError(f"iscsi://{match['host']}:{port}: bad port")
    if match["user"] is not None and not match["user"]:
        raise UsageError(f"iscsi://{match['host']}: empty CHAP user name before @")
    return IscsiSpec(
        host=match["host"],
        port=port,
        target=unquote(match["target"]),
        lun=int(match["lun"]),
        user=unquote(match["user"]) if match["user"] else None,
        password=unquote(match["password"]) if match["password"] is not None else None,
    )


def credentials(spec: IscsiSpec, options: IscsiOptions) -> tuple[str, str] | None:
    """CHAP (user, password): from the URI, else the options, else libiscsi's environment."""
    user = spec.user or options.user or os.environ.get("LIBISCSI_CHAP_USERNAME")
    password = spec.password
    if password is None:
        password = options.password or os.environ.get("LIBISCSI_CHAP_PASSWORD")
    if user is None:
        return None
    if not password:
        raise UsageError(f"{spec}: CHAP user {user!r} has no password")
    return user, password


class _Waiter:
    """One command in flight: what the completion callback reports, and who to wake."""

    __slots__ = ("called_back", "done", "error", "orphan", "release", "status")

    def __init__(self, release: Callable[[], None]) -> None:
        self.done = trio.Event()
        self.status: int | None = None
        self.error: str | None = None  # libiscsi's message when it completed, if it failed
        self.release = release  # drops the handle: only once libiscsi has called back
        self.called_back = False
        self.orphan = False  # its waiter left early: the callback frees the task

    def finish(self, status: int, error: str | None = None) -> None:
        if self.status is None:
            self.status = status
            self.error = error
        self.done.set()


def _library() -> tuple[Any, Any]:
    try:
        from asyncopy._libiscsi import ffi, lib
    except ImportError as exc:  # built at install time against libiscsi-dev
        raise UsageError(
            "iSCSI support is not built (install libiscsi-dev, then reinstall asyncopy)"
        ) from exc
    return ffi, lib


@functools.cache
def _install_callback() -> None:
    """Define the one completion callback (once per process)."""
    ffi, lib = _library()

    @ffi.def_extern()  # type: ignore[untyped-decorator]
    def asyncopy_iscsi_done(ctx: Any, status: int, command: Any, private: Any) -> None:
        try:  # inside iscsi_service, on the event loop's thread: nothing may escape
            waiter: _Waiter = ffi.from_handle(private)
            error = None
            if status not in (lib.SCSI_STATUS_GOOD, lib.SCSI_STATUS_CHECK_CONDITION):
                text = lib.iscsi_get_error(ctx)  # now: a later service call may replace it
                error = ffi.string(text).decode(errors="replace") if text else None
            waiter.called_back = True
            waiter.finish(status, error)
            if waiter.orphan and command != ffi.NULL:
                lib.scsi_free_scsi_task(command)  # a SCSI command's data is its task
            waiter.release()
        except BaseException:
            pass


class Session:
    """A logged-in iSCSI session to one LUN, pumped by the event loop."""

    def __init__(self, spec: IscsiSpec, options: IscsiOptions) -> None:
        self.ffi, self.lib = _library()
        _install_callback()
        self.spec = spec
        self.name = str(spec)
        self.options = options
        self.ctx = self.lib.iscsi_create_context(options.initiator.encode())
        if self.ctx == self.ffi.NULL:
            raise EndpointError(self.name, "connect", "cannot create an iSCSI context")
        self.failure: str | None = None
        self._kick = trio.Event()
        # Every command's handle, from queuing until libiscsi calls back (or the context is
        # destroyed, which calls back the rest): a waiter woken early (a failed session, a
        # timed-out logout) must never leave libiscsi holding a dangling handle.
        self._pending: dict[int, tuple[_Waiter, Any]] = {}
        self.logged_in = False

    # -- the pump -------------------------------------------------------------------------

    def kick(self) -> None:
        """Make the pumps ask libiscsi again which events it needs."""
        self._kick.set()
        self._kick = trio.Event()

    async def pump(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the socket until cancelled (by ``close``); never raises on session failure."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_one, self.lib.POLLIN, trio.lowlevel.wait_readable)
            nursery.start_soon(self._pump_one, self.lib.POLLOUT, trio.lowlevel.wait_writable)
            nursery.start_soon(self._tick)
            task_status.started()

    async def _pump_one(self, event: int, wait: Callable[[int], Any]) -> None:
        while True:
            kicked = self._kick
            fd = self.lib.iscsi_get_fd(self.ctx)
            if self.failure is None and fd >= 0 and self.lib.iscsi_which_events(self.ctx) & event:
                await wait(fd)
                self.service(event)
            else:
                await kicked.wait()

    async def _tick(self) -> None:
        while True:
            await trio.sleep(TICK)
            self.service(0)

    def service(self, revents: int) -> None:
        """Let libiscsi handle ``revents``. What reading queued to send (data for an R2T, the
        next command) is sent at once, without a round through the pumps."""
        self._service(revents)
        if revents & self.lib.POLLIN and self.lib.iscsi_which_events(self.ctx) & self.lib.POLLOUT:
            self._service(self.lib.POLLOUT)
        self.kick()

    def _service(self, revents: int) -> None:
        if self.failure is None and self.lib.iscsi_service(self.ctx, revents) < 0:
            self.fail(self.error())

    def error(self) -> str:
        text = self.lib.iscsi_get_error(self.ctx)
        return self.ffi.string(text).decode(errors="replace") if text else "unknown error"

    def fail(self, reason: str) -> None:
        """The session is unusable: every waiting command fails with this reason."""
        self.failure = self.failure or reason
        for waiter, _handle in list(self._pending.values()):
            waiter.finish(self.lib.SCSI_STATUS_ERROR, reason)

    # -- commands -------------------------------------------------------------------------

    async def run(
        self,
        operation: str,
        offset: int | None,
        length: int | None,
        queue: Callable[[Any], Any],
    ) -> Any:
        """Queue one command, wait (shielded) for its completion; return its task pointer.

        The caller frees the task with ``scsi_free_scsi_task`` (``free``).
        """
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled copy queues nothing more
        if self.failure is not None:
            raise EndpointError(self.name, operation, self.failure, offset, length)
        waiter, task = self.submit(queue)
        if task == self.ffi.NULL:
            raise EndpointError(self.name, operation, self.error(), offset, length)
        with trio.CancelScope(shield=True):
            await waiter.done.wait()
        if not waiter.called_back:  # the session failed: libiscsi still holds the task
            waiter.orphan = True
            raise EndpointError(self.name, operation, waiter.error or "failed", offset, length)
        try:
            self.check(waiter, operation, offset, length, task)
        except BaseException:
            self.free(task)
            raise
        return task

    def submit(self, queue: Callable[[Any], Any]) -> tuple[_Waiter, Any]:
        """Call ``queue(handle)`` (which queues one command) and keep the handle until the
        command calls back; return the waiter and what ``queue`` returned."""
        key = object()

        def release() -> None:
            self._pending.pop(id(key), None)

        waiter = _Waiter(release)
        handle = self.ffi.new_handle(waiter)
        self._pending[id(key)] = (waiter, handle)
        queued = queue(handle)
        if queued == self.ffi.NULL or queued is None or (isinstance(queued, int) and queued):
            release()  # libiscsi refused it: it holds nothing
        self.kick()
        return waiter, queued

    def check(
        self, waiter: _Waiter, operation: str, offset: int | None, length: int | None, task: Any
    ) -> None:
        """An EndpointError for any status but GOOD, with the sense data when there is some."""
        status = waiter.status
        if status == self.lib.SCSI_STATUS_GOOD:
            return
        if status == self.lib.SCSI_STATUS_CHECK_CONDITION:
            raise ScsiError(
                self.name, operation, self.sense(task), offset, length, sense_key=task.sense.key
            )
        reason = waiter.error or self.failure or self.error()
        if status == self.lib.SCSI_STATUS_TIMEOUT:
            reason = f"timed out after {self.options.timeout} s"
        if status in (self.lib.SCSI_STATUS_TIMEOUT, self.lib.SCSI_STATUS_CANCELLED):
            self.fail(reason)  # half-sent PDUs may be gone: the session is not to be trusted
        raise EndpointError(self.name, operation, reason, offset, length)

    def sense(self, task: Any) -> str:
        key = self.ffi.string(self.lib.scsi_sense_key_str(task.sense.key)).decode()
        ascq = self.ffi.string(self.lib.scsi_sense_ascq_str(task.sense.ascq)).decode()
        return f"check condition: {key}, {ascq} (0x{task.sense.ascq:04x})"

    def free(self, task: Any) -> None:
        self.lib.scsi_free_scsi_task(task)

    async def connect(self, credentials: tuple[str, str] | None) -> None:
        lib, spec = self.lib, self.spec
        lib.iscsi_set_targetname(self.ctx, spec.target.encode())
        lib.iscsi_set_session_type(self.ctx, lib.ISCSI_SESSION_NORMAL)
        lib.iscsi_set_header_digest(self.ctx, lib.ISCSI_HEADER_DIGEST_NONE_CRC32C)
        lib.iscsi_set_noautoreconnect(self.ctx, 1)
        lib.iscsi_set_timeout(self.ctx, self.options.timeout)
        if credentials is not None:
            user, password = credentials
            lib.iscsi_set_initiator_username_pwd(self.ctx, user.encode(), password.encode())
        portal = spec.portal.encode()
        waiter, refused = self.submit(
            lambda h: lib.iscsi_full_connect_async(
                self.ctx, portal, spec.lun, lib.asyncopy_iscsi_done, h
            )
        )
        if refused:
            raise EndpointError(self.name, "connect", self.error())
        with trio.move_on_after(self.options.timeout + 1) as scope:
            await waiter.done.wait()
        if scope.cancelled_caught:
            raise EndpointError(self.name, "connect", f"timed out after {self.options.timeout} s")
        if waiter.status != lib.SCSI_STATUS_GOOD:
            raise connect_error(self.name, waiter.error or self.error())
        self.logged_in = True

    async def logout(self) -> None:
        """Log out politely, bounded by the timeout; a session that failed is just dropped."""
        if self.failure is not None or not self.logged_in:
            return
        lib = self.lib
        waiter, refused = self.submit(
            lambda h: lib.iscsi_logout_async(self.ctx, lib.asyncopy_iscsi_done, h)
        )
        if not refused:
            with trio.move_on_after(self.options.timeout):
                await waiter.done.wait()

    def destroy(self) -> None:
        fd = self.lib.iscsi_get_fd(self.ctx)
        if fd >= 0:
            trio.lowlevel.notify_closing(fd)
        self.lib.iscsi_destroy_context(self.ctx)  # pending callbacks run here: CANCELLED
        self.ctx = self.ffi.NULL
        self._pending.clear()


class ScsiError(EndpointError):
    """A command ended in CHECK CONDITION; ``sense_key`` says which kind."""

    def __init__(
        self,
        endpoint: str,
        operation: str,
        reason: str,
        offset: int | None,
        length: int | None,
        *,
        sense_key: int,
    ) -> None:
        self.sense_key = sense_key
        super().__init__(endpoint, operation, reason, offset, length)


def connect_error(name: str, reason: str) -> Exception:
    """A wrong IQN, LUN or CHAP secret is bad input; anything else failed on the way."""
    wrong = {
        "Target not found": "no such target",
        "LOGICAL_UNIT_NOT_SUPPORTED": "no such LUN",
        "Authentication failure": "CHAP authentication failed",
        "Authorization failure": "this initiator is not allowed to log in",
    }
    for marker, meaning in wrong.items():
        if marker in reason:
            return UsageError(f"{name}: {meaning} ({reason})")
    return EndpointError(name, "connect", reason)


@asynccontextmanager
async def open_session(spec: IscsiSpec, options: IscsiOptions) -> AsyncIterator[Session]:
    """A logged-in session; logged out and destroyed on every path, cancellation included.

    Errors come out alone, not wrapped in the pump's nursery group.
    """
    chap = credentials(spec, options)
    session = Session(spec, options)
    try:
        async with trio.open_nursery() as nursery:
            pump = trio.CancelScope(shield=True)  # stopped here, never by the caller's cancel
            nursery.start_soon(_serve, session, pump)
            try:
                await session.connect(chap)
                yield session
            finally:
                with trio.CancelScope(shield=True):
                    await session.logout()
                pump.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        session.destroy()


async def _serve(session: Session, scope: trio.CancelScope) -> None:
    with scope:
        await session.pump()


@dataclass(frozen=True)
class Geometry:
    """What READ CAPACITY(16) and the Block Limits and provisioning VPD pages say."""

    size: int
    block_size: int
    max_transfer: int  # bytes per READ/WRITE
    optimal_transfer: int
    lbpme: bool  # thin: GET LBA STATUS is meaningful
    lbprz: bool  # unmapped blocks read as zeros
    unmap_by_write_same: bool
    max_write_same: int  # bytes per WRITE SAME


class IscsiVolume:
    """One LUN through a session: READ(16), GET LBA STATUS; what sources and sinks share."""

    def __init__(self, session: Session, geometry: Geometry) -> None:
        self.session = session
        self.geometry = geometry
        self.name = session.name
        self.size = geometry.size
        self.block_size = geometry.block_size
        self.io_size = geometry.optimal_transfer
        self.lun = session.spec.lun

    def pieces(self, offset: int, length: int, limit: int) -> list[tuple[int, int]]:
        step = max(self.block_size, limit - limit % self.block_size)
        return [
            (at, min(step, offset + length - at)) for at in range(offset, offset + length, step)
        ]

    async def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        for at, count in self.pieces(offset, length, self.geometry.max_transfer):
            view = buf[at - offset : at - offset + count]
            await self._transfer("read", at, view)
        return length

    async def _transfer(self, operation: str, offset: int, view: memoryview) -> None:
        s, lib, ffi = self.session, self.session.lib, self.session.ffi
        lba, size, block = offset // self.block_size, len(view), self.block_size
        if offset % block or size % block:
            raise EndpointError(self.name, operation, f"not on the {block}-byte grid", offset, size)
        # The export of the engine's buffer ends with the block, on every path: a buffer still
        # exported when an error's traceback is collected cannot be released (or reused).
        with ffi.from_buffer(view, require_writable=operation == "read") as pointer:
            iov = ffi.new("struct scsi_iovec *", {"iov_base": pointer, "iov_len": size})

            def queue(handle: Any) -> Any:
                if operation == "read":
                    return lib.iscsi_read16_iov_task(
                        s.ctx, self.lun, lba, size, block, 0, 0, 0, 0, 0,
                        lib.asyncopy_iscsi_done, handle, iov, 1,
                    )  # fmt: skip
                return lib.iscsi_write16_iov_task(
                    s.ctx, self.lun, lba, ffi.NULL, size, block, 0, 0, 0, 0, 0,
                    lib.asyncopy_iscsi_done, handle, iov, 1,
                )  # fmt: skip

            task = await s.run(operation, offset, size, queue)
            try:
                if task.residual_status != lib.SCSI_RESIDUAL_NO_RESIDUAL and task.residual:
                    reason = f"short transfer: {task.residual} of {size} bytes not moved"
                    raise EndpointError(self.name, operation, reason, offset, size)
            finally:
                s.free(task)

    async def extents(self, offset: int, length: int) -> Sequence[Extent]:
        if not self.geometry.lbpme:
            return all_data(offset, length)
        found: list[Extent] = []
        end = offset + length
        position = offset - offset % self.block_size
        while position < end:
            runs = await self._lba_status(position)
            if not runs:
                break
            for start, count, mapped in runs:
                stop = min(start + count, end)
                first = max(start, offset)
                if stop > first:
                    kind = ExtentKind.DATA if mapped or not self.geometry.lbprz else ExtentKind.HOLE
                    found.append(Extent(first, stop - first, kind))
            position = max(position + self.block_size, runs[-1][0] + runs[-1][1])
        covered = found[-1].end if found else offset
        return [*found, *all_data(covered, end - covered)]

    async def _lba_status(self, position: int) -> list[tuple[int, int, bool]]:
        """(offset, length, mapped) runs from GET LBA STATUS at ``position``, in bytes."""
        s, lib, ffi = self.session, self.session.lib, self.session.ffi
        lba = position // self.block_size

        def queue(handle: Any) -> Any:
            return lib.iscsi_get_lba_status_task(
                s.ctx, self.lun, lba, LBA_STATUS_ALLOC, lib.asyncopy_iscsi_done, handle
            )

        task = await s.run("map", position, None, queue)
        try:
            status = ffi.cast("struct scsi_get_lba_status *", lib.scsi_datain_unmarshall(task))
            if status == ffi.NULL:
                raise EndpointError(self.name, "map", "unreadable GET LBA STATUS reply", position)
            block = self.block_size
            return [
                (d.lba * block, d.num_blocks * block, d.provisioning not in UNMAPPED)
                for d in (status.descriptors[i] for i in range(status.num_descriptors))
                if d.num_blocks > 0
            ]
        finally:
            s.free(task)


async def read_geometry(session: Session) -> Geometry:
    """READ CAPACITY(16), then the Block Limits and Logical Block Provisioning VPD pages."""
    lib, ffi = session.lib, session.ffi
    task = await session.run(
        "open",
        None,
        None,
        lambda h: lib.iscsi_readcapacity16_task(
            session.ctx, session.spec.lun, lib.asyncopy_iscsi_done, h
        ),
    )
    try:
        cap = ffi.cast("struct scsi_readcapacity16 *", lib.scsi_datain_unmarshall(task))
        if cap == ffi.NULL:
            raise EndpointError(session.name, "open", "unreadable READ CAPACITY(16) reply")
        block, size = cap.block_length, (cap.returned_lba + 1) * cap.block_length
        lbpme, lbprz = bool(cap.lbpme), bool(cap.lbprz)
    finally:
        session.free(task)
    if block <= 0 or block & (block - 1):
        raise EndpointError(session.name, "open", f"unusable logical block size {block}")
    limits = await _vpd(
        session,
        lib.SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS,
        "struct scsi_inquiry_block_limits *",
        lambda p: (p.max_xfer_len, p.opt_xfer_len, p.max_ws_len),
    )
    max_transfer, optimal, max_ws = MAX_TRANSFER, MAX_TRANSFER, MAX_WRITE_SAME
    if limits is not None:
        most, best, most_ws = limits
        if most:
            max_transfer = min(max_transfer, most * block)
        if best:
            optimal = min(max_transfer, best * block)
        if most_ws:
            max_ws = min(max_ws, most_ws * block)
    lbpws = await _vpd(
        session,
        lib.SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING,
        "struct scsi_inquiry_logical_block_provisioning *",
        lambda p: bool(p.lbpws),
    )
    unmap = bool(lbpws) and lbprz
    return Geometry(
        size,
        block,
        max(block, max_transfer),
        max(block, optimal),
        lbpme,
        lbprz,
        unmap,
        max(block, max_ws),
    )


async def _vpd(session: Session, page: int, kind: str, read: Callable[[Any], T]) -> T | None:
    """What ``read`` takes from a VPD page, or None when the target does not have the page."""
    lib, ffi = session.lib, session.ffi

    def queue(handle: Any) -> Any:
        return lib.iscsi_inquiry_task(
            session.ctx, session.spec.lun, 1, page, 255, lib.asyncopy_iscsi_done, handle
        )

    try:
        task = await session.run("open", None, None, queue)
    except ScsiError:
        return None
    try:
        data = ffi.cast(kind, lib.scsi_datain_unmarshall(task))
        return None if data == ffi.NULL else read(data)
    finally:
        session.free(task)
