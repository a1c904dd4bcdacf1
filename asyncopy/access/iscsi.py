"""iSCSI in user space: a thin binding over libiscsi, its sessions and ``iscsi://`` URIs.

No kernel initiator: one iSCSI session per endpoint, many SCSI commands in flight on it.
What a source and a sink do with a LUN is in ``asyncopy.sources.iscsi`` and
``asyncopy.sinks.iscsi``; this module knows logins, commands and their completions.

Design:
- libiscsi 1.19 is not thread-safe, so each session's context belongs to one thread, the
  pump (C, in ``_iscsi_build.py``): it alone queues commands, polls the socket and calls
  ``iscsi_service``, so the event loop never spends a cycle in libiscsi's socket work. The
  loop hands it requests (``struct ap_request``, filled here) through a list under a
  mutex, held only to link or unlink; the pump wakes on an eventfd when it sleeps.
- Completions come back the other way, batched: the pump links finished requests to a done
  list and writes a second eventfd when the list was empty. One task per session waits for
  that descriptor, takes the whole list and wakes each command's task. Any error while
  taking or handling completions fails the session (every waiting command with it), never
  leaves a task waiting.
- Reads and writes point the request's iovec at the engine's own buffer: no copies. A
  transfer longer than ``transfer_size`` is cut into pieces sent at once, and at most
  ``queue_depth`` commands are in flight per session.
- A command cannot be taken back once handed over, so its task waits for the completion
  shielded from cancellation, but never past the session timeout and a grace period (libiscsi
  expires commands itself at the timeout). Past that the session is broken: the pump stops
  all socket work and answers every request it still has. A request (and its buffer) that
  was never answered stays referenced until the pump thread has exited; a pump that does
  not exit in time is abandoned, never freed under its thread.
- A session that fails (socket error, timeout, cancelled commands) fails every command still
  waiting and refuses new ones, and each error names the LUN, the operation and the offset.
- ``Pump`` is the seam between the session and the thread: tests wrap ``ThreadPump`` to
  lose, corrupt or break completions.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

import trio

from asyncopy.errors import EndpointError, ReservationConflict, ScsiError, UsageError

DEFAULT_TIMEOUT = 30  # seconds, per command and for the login
DEFAULT_QUEUE_DEPTH = 16  # commands in flight per session (measured: see the README)
DEFAULT_TRANSFER_SIZE = 1 << 20  # bytes per READ/WRITE(16), at most the target's own limit
INITIATOR = "iqn.2026-11.org.openstack.asyncopy:initiator"
MAX_TRANSFER = 4 << 20  # the largest READ/WRITE(16) and optimal size, below the target's limit
MAX_WRITE_SAME = 1 << 30  # bytes per WRITE SAME(16), below the target's own limit
LBA_STATUS_ALLOC = 4096  # GET LBA STATUS reply buffer: 255 descriptors
VPD_ALLOC = 255
RESERVATION_ALLOC = 24  # READ RESERVATION reply: a header and one reservation descriptor
GRACE = 3.0  # seconds past the timeout before an unanswered command breaks the session
STOP_WAIT = 5.0  # seconds for the pump thread to exit before it is abandoned
CData = Any  # a cffi object: a libiscsi context, task or request, a buffer
BATCH = 64  # completions taken from the pump per call
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
    """How to reach iSCSI LUNs: CHAP credentials (when the URI has none), the timeout, and
    how many commands of how many bytes a session keeps in flight."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: int = DEFAULT_TIMEOUT
    initiator: str = INITIATOR
    queue_depth: int = DEFAULT_QUEUE_DEPTH
    transfer_size: int = DEFAULT_TRANSFER_SIZE

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.queue_depth <= 0 or self.transfer_size <= 0:
            raise UsageError("iSCSI timeout, queue depth and transfer size must be positive")


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
        raise UsageError(f"iscsi:{_masked(text)}: {USAGE}")
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


def iscsi_spec_of(data: Mapping[str, Any]) -> IscsiSpec:
    """The LUN an ``iscsi`` connection_info names (its first portal), with its CHAP secret."""
    try:
        portal = data.get("target_portal") or data["target_portals"][0]
        target = data.get("target_iqn") or data["target_iqns"][0]
        lun = int(data.get("target_lun", (data.get("target_luns") or [0])[0]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UsageError(
            "iscsi connection_info: needs target_portal, target_iqn, target_lun"
        ) from exc
    host, _, port = str(portal).rpartition(":")
    chap = str(data.get("auth_method", "")).upper() == "CHAP"
    return IscsiSpec(
        host=host or str(portal),
        port=int(port) if port.isdigit() else 3260,
        target=str(target),
        lun=lun,
        user=data.get("auth_username") if chap else None,
        password=data.get("auth_password") if chap else None,
    )


def _masked(text: str) -> str:
    """``text`` with whatever may hold a secret hidden: all before the last ``@``, or an
    authority holding ``%`` (``user%password`` with no host after it)."""
    slashes = "//" if text.startswith("//") else ""
    if "@" in text:
        return f"{slashes}***@{text.rpartition('@')[2]}"
    authority, sep, rest = text.removeprefix(slashes).partition("/")
    return f"{slashes}***{sep}{rest}" if "%" in authority else text


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


def _library() -> tuple[Any, Any]:  # (ffi, lib), built by _iscsi_build.py
    try:
        from asyncopy.access._libiscsi import ffi, lib
    except ImportError as exc:  # built at install time against libiscsi-dev
        raise UsageError(
            "iSCSI support is not built (install libiscsi-dev, then reinstall asyncopy)"
        ) from exc
    return ffi, lib


# -- the pump -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completion:
    """How one request ended, as its pump reports it."""

    id: int
    status: int  # SCSI_STATUS_*
    error: str | None = None  # libiscsi's message, for a status but GOOD or CHECK CONDITION
    sense_key: int = 0
    sense_ascq: int = 0
    residual: int = 0  # bytes the target did not move
    task: CData = None  # a data-in reply (GOOD only): whoever takes it frees it
    held: bool = False  # the pump points at the request until it exits


class Pump(Protocol):
    """The thread that owns one libiscsi context and runs all its I/O (``ThreadPump``)."""

    def fileno(self) -> int:
        """A descriptor that turns readable when completions are ready."""

    @property
    def exited(self) -> bool:
        """True once the thread has exited: what it answered before is in ``completions``."""

    def submit(self, request: CData) -> None:
        """Hand a filled ``struct ap_request *`` over; never blocks."""

    def completions(self) -> list[Completion]:
        """Take every request that has finished; never blocks."""

    def break_session(self, reason: str) -> None:
        """Stop all socket I/O for good and answer every request in flight."""

    def stop(self) -> None:
        """Destroy the context (libiscsi cancels what it holds), answer the rest, exit."""

    def close(self) -> None:
        """Free what the pump holds; only once it has exited."""


PumpFactory = Callable[[CData], Pump]  # takes a configured libiscsi context and owns it


class ThreadPump:
    """The pump in C: a detached thread per session that owns its context."""

    def __init__(self, ctx: CData) -> None:
        self._ffi, self._lib = _library()
        self._pump = self._lib.ap_pump_new(ctx)
        if self._pump == self._ffi.NULL:
            number = self._ffi.errno
            raise OSError(number, os.strerror(number))
        self._batch = self._ffi.new("struct ap_request *[]", BATCH)
        self._exited = self._ffi.new("int *")

    def fileno(self) -> int:
        return int(self._lib.ap_pump_fd(self._pump))

    @property
    def exited(self) -> bool:
        return bool(self._lib.ap_pump_exited(self._pump))

    def submit(self, request: CData) -> None:
        self._lib.ap_pump_submit(self._pump, request)

    def completions(self) -> list[Completion]:
        ffi, lib = self._ffi, self._lib
        found: list[Completion] = []
        while True:
            count = lib.ap_pump_take(self._pump, self._batch, BATCH, self._exited)
            for r in ffi.unpack(self._batch, count):
                found.append(
                    Completion(
                        r.id,
                        r.status,
                        ffi.string(r.error).decode(errors="replace") or None,
                        r.sense_key,
                        r.sense_ascq,
                        r.residual,
                        None if r.task == ffi.NULL else r.task,
                        bool(r.held),
                    )
                )
            if count < BATCH:
                return found

    def break_session(self, reason: str) -> None:
        self._lib.ap_pump_break(self._pump, reason.encode(errors="replace"))

    def stop(self) -> None:
        self._lib.ap_pump_stop(self._pump)

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.fileno())
        self._lib.ap_pump_free(self._pump)
        self._pump = self._ffi.NULL


# -- sessions -------------------------------------------------------------------------------


class _Waiter:
    """One request handed to the pump: what keeps it alive, and how it ended."""

    __slots__ = (
        "abandoned",
        "completed",
        "deadline",
        "done",
        "export",
        "length",
        "offset",
        "operation",
        "outcome",
        "request",
        "slot",
        "task",
    )

    def __init__(
        self,
        operation: str,
        request: CData,
        offset: int | None,
        length: int | None,
        export: CData,
        deadline: float,
    ) -> None:
        self.operation = operation
        self.request = request  # the pump points at it until it is answered
        self.offset = offset
        self.length = length
        self.export = export  # the buffer's export, for a read or a write
        self.deadline = deadline
        self.slot = False  # it holds one of the session's queue-depth slots
        self.done = trio.Event()
        self.completed = False  # its completion arrived
        self.abandoned = False  # its task stopped waiting first
        self.outcome: Exception | None = None
        self.task: CData = None


# The pumps that did not exit in time, with what their threads may still use: never freed.
_ABANDONED: list[Session] = []


class Session:
    """A logged-in iSCSI session to one LUN, and the SCSI commands asyncopy sends on it."""

    geometry: Geometry  # set by ``open_session`` after the login

    def __init__(
        self,
        spec: IscsiSpec,
        options: IscsiOptions,
        chap: tuple[str, str] | None,
        pump: PumpFactory = ThreadPump,
    ) -> None:
        self.ffi, self.lib = _library()
        self.spec = spec
        self.name = str(spec)
        self.options = options
        self.failure: str | None = None
        self.logged_in = False
        self._waiting: dict[int, _Waiter] = {}  # handed over, completion not yet handled
        self._held: list[_Waiter] = []  # answered, but the pump points at them until it exits
        self._ids = itertools.count(1)
        self._slots = trio.Semaphore(options.queue_depth)
        self._reader = trio.CancelScope(shield=True)  # stopped by close, not by the caller
        self._reader_done = trio.Event()
        ctx = self._context(chap)
        try:
            self.pump = pump(ctx)
        except Exception as exc:  # no thread took it: the context is still ours
            self.lib.iscsi_destroy_context(ctx)
            raise EndpointError(self.name, "connect", f"cannot start the pump: {exc}") from exc

    def _context(self, chap: tuple[str, str] | None) -> CData:
        """A libiscsi context, configured before any thread owns it."""
        lib, spec = self.lib, self.spec
        ctx = lib.iscsi_create_context(self.options.initiator.encode())
        if ctx == self.ffi.NULL:
            raise EndpointError(self.name, "connect", "cannot create an iSCSI context")
        lib.iscsi_set_targetname(ctx, spec.target.encode())
        lib.iscsi_set_session_type(ctx, lib.ISCSI_SESSION_NORMAL)
        lib.iscsi_set_header_digest(ctx, lib.ISCSI_HEADER_DIGEST_NONE_CRC32C)
        lib.iscsi_set_noautoreconnect(ctx, 1)
        lib.iscsi_set_timeout(ctx, self.options.timeout)
        if chap is not None:
            lib.iscsi_set_initiator_username_pwd(ctx, chap[0].encode(), chap[1].encode())
        return ctx

    # -- completions ----------------------------------------------------------------------

    async def deliver(self) -> None:
        """Hand each completion to its waiting task, until the pump has exited."""
        fd = self.pump.fileno()
        try:
            with self._reader:
                while True:
                    await trio.lowlevel.wait_readable(fd)
                    exited = self.pump.exited  # before taking: all it answered is taken below
                    try:
                        batch = self.pump.completions()
                    except Exception as exc:
                        self.fail(f"completions lost: {exc!r}")
                        return
                    for done in batch:
                        try:
                            self._complete(done)
                        except Exception as exc:
                            self.fail(f"a completion could not be handled: {exc!r}")
                    if exited:
                        return
        finally:
            self._reader_done.set()

    def _complete(self, done: Completion) -> None:
        waiter = self._waiting[done.id]
        if waiter.abandoned:
            if done.task is not None:
                self.lib.scsi_free_scsi_task(done.task)
        else:
            waiter.outcome = self._outcome(waiter, done)  # raising, it stays in _waiting
            waiter.task = done.task
        del self._waiting[done.id]
        if done.held:
            self._held.append(waiter)
        self._release(waiter)
        self._free_slot(waiter)
        waiter.completed = True
        waiter.done.set()

    def _outcome(self, waiter: _Waiter, done: Completion) -> Exception | None:
        """The error a completion means, if any; one that breaks the session fails it."""
        lib, operation = self.lib, waiter.operation
        if done.status == lib.SCSI_STATUS_GOOD:
            if done.residual and operation in ("read", "write"):
                reason = f"short transfer: {done.residual} of {waiter.length} bytes not moved"
                return EndpointError(self.name, operation, reason, waiter.offset, waiter.length)
            return None
        reason = done.error or f"status {done.status}"
        if operation == "connect":
            return connect_error(self.name, reason)
        if done.status == lib.SCSI_STATUS_CHECK_CONDITION:
            return ScsiError(
                self.name,
                operation,
                self.sense(done.sense_key, done.sense_ascq),
                waiter.offset,
                waiter.length,
                sense_key=done.sense_key,
            )
        if done.status == lib.SCSI_STATUS_RESERVATION_CONFLICT:
            reason = "reservation conflict: another initiator holds the LUN's reservation"
            return ReservationConflict(self.name, operation, reason, waiter.offset, waiter.length)
        if done.status == lib.SCSI_STATUS_TIMEOUT:
            reason = f"timed out after {self.options.timeout} s"
        if done.held or done.status in (lib.SCSI_STATUS_TIMEOUT, lib.SCSI_STATUS_CANCELLED):
            self.fail(reason)  # half-sent PDUs may be gone: the session is not to be trusted
        return EndpointError(
            self.name, operation, self.failure or reason, waiter.offset, waiter.length
        )

    def sense(self, key: int, ascq: int) -> str:
        key_text = self.ffi.string(self.lib.scsi_sense_key_str(key)).decode()
        ascq_text = self.ffi.string(self.lib.scsi_sense_ascq_str(ascq)).decode()
        return f"check condition: {key_text}, {ascq_text} (0x{ascq:04x})"

    def fail(self, reason: str) -> None:
        """The session is unusable: every waiting command fails, none is sent any more."""
        if self.failure is None:
            self.failure = reason
            self.pump.break_session(reason)
        for waiter in self._waiting.values():
            waiter.done.set()

    def _release(self, waiter: _Waiter) -> None:
        if waiter.export is not None:
            self.ffi.release(waiter.export)
            waiter.export = None

    def _free_slot(self, waiter: _Waiter) -> None:
        """A slot is held from submission to completion (or until its task gives up), not
        until the task that sent it has sent its other pieces: no hold-and-wait."""
        if waiter.slot:
            waiter.slot = False
            self._slots.release()

    # -- requests -------------------------------------------------------------------------

    def _request(self, op: int, lba: int = 0, datalen: int = 0) -> CData:
        request = self.ffi.new("struct ap_request *")
        request.op, request.lun, request.lba, request.datalen = op, self.spec.lun, lba, datalen
        return request

    def _start(
        self,
        operation: str,
        request: CData,
        offset: int | None = None,
        length: int | None = None,
        export: CData = None,
        wait: float | None = None,
        slot: bool = False,
    ) -> _Waiter:
        """Hand ``request`` to the pump (with a slot the caller acquired, if ``slot``); the
        waiter learns how it ends. Refused, the export and the slot are given back."""
        request.id = key = next(self._ids)
        deadline = trio.current_time() + (wait or self.options.timeout + GRACE)
        waiter = _Waiter(operation, request, offset, length, export, deadline)
        waiter.slot = slot
        if self.failure is not None:
            self._release(waiter)
            self._free_slot(waiter)
            raise EndpointError(self.name, operation, self.failure, offset, length)
        self._waiting[key] = waiter
        try:
            self.pump.submit(request)
        except BaseException:
            del self._waiting[key]
            self._release(waiter)
            self._free_slot(waiter)
            raise
        return waiter

    async def _wait(self, waiter: _Waiter) -> None:
        """Wait for the completion, shielded, until the deadline; past it the session fails."""
        with trio.CancelScope(shield=True), trio.move_on_at(waiter.deadline) as late:
            await waiter.done.wait()
        if late.cancelled_caught:
            self.fail(f"no answer within {self.options.timeout + GRACE:.0f} s")
        if not waiter.completed:
            waiter.abandoned = True  # kept in _waiting: the pump may still point at it
            self._free_slot(waiter)

    def _result(self, waiter: _Waiter) -> CData:
        """The data-in reply of a command that ended well (the caller frees it)."""
        if not waiter.completed:
            reason = self.failure or "failed"
            raise EndpointError(self.name, waiter.operation, reason, waiter.offset, waiter.length)
        if waiter.outcome is not None:
            if waiter.task is not None:
                self.lib.scsi_free_scsi_task(waiter.task)
            raise waiter.outcome
        return waiter.task

    async def _command(
        self, operation: str, request: CData, offset: int | None = None, length: int | None = None
    ) -> CData:
        await self._slots.acquire()
        waiter = self._start(operation, request, offset, length, slot=True)
        await self._wait(waiter)
        return self._result(waiter)

    async def _transfer(self, op: int, operation: str, offset: int, view: memoryview) -> None:
        """READ(16) or WRITE(16) of ``view`` at ``offset``, in pieces sent at once."""
        block = self.geometry.block_size
        if offset % block or len(view) % block:
            raise EndpointError(
                self.name, operation, f"not on the {block}-byte grid", offset, len(view)
            )
        step = max(block, min(self.options.transfer_size, self.geometry.max_transfer))
        step -= step % block
        waiters: list[_Waiter] = []
        try:
            for start in range(0, len(view), step):
                piece = view[start : start + step]
                request = self._request(op, (offset + start) // block, len(piece))
                request.blocksize = block
                export = self.ffi.from_buffer(piece, require_writable=op == self.lib.AP_READ16)
                request.iov.iov_base, request.iov.iov_len = export, len(piece)
                try:
                    await self._slots.acquire()
                except BaseException:
                    self.ffi.release(export)
                    raise
                at = offset + start
                waiters.append(self._start(operation, request, at, len(piece), export, slot=True))
        finally:
            for waiter in waiters:
                await self._wait(waiter)
        for waiter in waiters:
            self._result(waiter)

    # -- SCSI commands --------------------------------------------------------------------

    async def read16(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` from the LUN at byte ``offset`` (both on the block grid)."""
        await self._transfer(self.lib.AP_READ16, "read", offset, view)

    async def write16(self, offset: int, view: memoryview) -> None:
        """Write ``view`` to the LUN at byte ``offset`` (both on the block grid)."""
        await self._transfer(self.lib.AP_WRITE16, "write", offset, view)

    async def write_same16_zero(self, offset: int, length: int, *, unmap: bool) -> None:
        """WRITE SAME(16) of a zero block over [offset, offset+length), unmapping if asked.

        Raises:
            ScsiError: the target refused (ILLEGAL REQUEST when it has no WRITE SAME).
        """
        block = self.geometry.block_size
        request = self._request(self.lib.AP_WRITE_SAME16_ZERO, offset // block)
        request.blocksize, request.blocks, request.unmap = block, length // block, int(unmap)
        await self._command("zero", request, offset, length)

    async def synchronize_cache16(self) -> None:
        """Make every write durable."""
        await self._command("flush", self._request(self.lib.AP_SYNCHRONIZE_CACHE16))

    async def get_lba_status(self, offset: int) -> list[tuple[int, int, bool]]:
        """(offset, length, mapped) runs from GET LBA STATUS at ``offset``, in bytes."""
        block = self.geometry.block_size
        request = self._request(self.lib.AP_GET_LBA_STATUS, offset // block, LBA_STATUS_ALLOC)
        task = await self._command("map", request, offset)
        try:
            ffi, lib = self.ffi, self.lib
            status = ffi.cast("struct scsi_get_lba_status *", lib.scsi_datain_unmarshall(task))
            if status == ffi.NULL:
                raise EndpointError(self.name, "map", "unreadable GET LBA STATUS reply", offset)
            return [
                (d.lba * block, d.num_blocks * block, d.provisioning not in UNMAPPED)
                for d in (status.descriptors[i] for i in range(status.num_descriptors))
                if d.num_blocks > 0
            ]
        finally:
            self.lib.scsi_free_scsi_task(task)

    async def persistent_reserve_out(
        self, operation: str, action: int, key: int, sa_key: int = 0, pr_type: int = 0
    ) -> None:
        """PERSISTENT RESERVE OUT ``action`` (a service action) for the LUN, with the basic
        parameter list: this initiator's ``key``, the service action's ``sa_key``.

        Raises:
            ReservationConflict: the target refused it (another initiator holds the LUN).
            ScsiError: ILLEGAL REQUEST when the target has no persistent reservations.
        """
        request = self._request(self.lib.AP_PR_OUT)
        request.action, request.pr_type, request.key, request.sa_key = action, pr_type, key, sa_key
        await self._command(operation, request)

    async def reservation_holder(self) -> int | None:
        """The key of the initiator holding the LUN's persistent reservation (READ
        RESERVATION); None when no one holds it."""
        ffi, lib = self.ffi, self.lib
        request = self._request(lib.AP_PR_IN, 0, RESERVATION_ALLOC)
        request.action = lib.SCSI_PERSISTENT_RESERVE_READ_RESERVATION
        task = await self._command("reserve", request)
        try:
            kind = "struct scsi_persistent_reserve_in_read_reservation *"
            found = ffi.cast(kind, lib.scsi_datain_unmarshall(task))
            if found == ffi.NULL:
                raise EndpointError(self.name, "reserve", "unreadable READ RESERVATION reply")
            return int(found.reservation_key) if found.reserved else None
        finally:
            lib.scsi_free_scsi_task(task)

    async def read_capacity16(self) -> tuple[int, int, bool, bool]:
        """(size in bytes, block size, LBPME, LBPRZ) from READ CAPACITY(16)."""
        ffi, lib = self.ffi, self.lib
        task = await self._command("open", self._request(lib.AP_READ_CAPACITY16))
        try:
            cap = ffi.cast("struct scsi_readcapacity16 *", lib.scsi_datain_unmarshall(task))
            if cap == ffi.NULL:
                raise EndpointError(self.name, "open", "unreadable READ CAPACITY(16) reply")
            block = cap.block_length
            return (cap.returned_lba + 1) * block, block, bool(cap.lbpme), bool(cap.lbprz)
        finally:
            lib.scsi_free_scsi_task(task)

    async def inquiry_vpd(self, page: int, kind: str, read: Callable[[CData], T]) -> T | None:
        """What ``read`` takes from a VPD page, or None when the target does not have it."""
        ffi, lib = self.ffi, self.lib
        request = self._request(lib.AP_INQUIRY_VPD, 0, VPD_ALLOC)
        request.page = page
        try:
            task = await self._command("open", request)
        except ScsiError:
            return None
        try:
            data = ffi.cast(kind, lib.scsi_datain_unmarshall(task))
            return None if data == ffi.NULL else read(data)
        finally:
            lib.scsi_free_scsi_task(task)

    # -- login and logout -----------------------------------------------------------------

    async def connect(self) -> None:
        """Log in, bounded by the timeout; a cancelled login leaves nothing to wait for."""
        request = self._request(self.lib.AP_CONNECT)
        request.portal = self.spec.portal.encode()
        waiter = self._start("connect", request, wait=self.options.timeout + 1)
        try:
            with trio.move_on_at(waiter.deadline):
                await waiter.done.wait()
        finally:
            if not waiter.completed:
                waiter.abandoned = True
        if not waiter.completed:
            timeout = self.options.timeout
            raise EndpointError(
                self.name, "connect", self.failure or f"timed out after {timeout} s"
            )
        self._result(waiter)
        self.logged_in = True

    async def close(self) -> None:
        """Log out politely (a failed session is just dropped), then stop the pump: each
        wait bounded. Called shielded."""
        if self.failure is None and self.logged_in:
            waiter = self._start("logout", self._request(self.lib.AP_LOGOUT))
            with trio.move_on_at(waiter.deadline):
                await waiter.done.wait()
            if not waiter.completed:
                waiter.abandoned = True
        self.pump.stop()
        with trio.move_on_after(STOP_WAIT):
            await self._reader_done.wait()  # early if it gave up: then the pump may be left
        self._reader.cancel()

    def release(self) -> None:
        """Free the pump and what it pointed at, if it has exited; else abandon it all."""
        if not self.pump.exited:
            _ABANDONED.append(self)
            return
        for waiter in self._waiting.values():
            self._release(waiter)
        self._waiting.clear()
        self._held.clear()
        self.pump.close()


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
    identifiers: tuple[str, ...]  # VPD: "serial:USN", "TYPE:HEX" designators of the LU


async def read_geometry(session: Session) -> Geometry:
    """READ CAPACITY(16), then the Block Limits and Logical Block Provisioning VPD pages."""
    lib = session.lib
    size, block, lbpme, lbprz = await session.read_capacity16()
    if block <= 0 or block & (block - 1):
        raise EndpointError(session.name, "open", f"unusable logical block size {block}")
    limits = await session.inquiry_vpd(
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
    lbpws = await session.inquiry_vpd(
        lib.SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING,
        "struct scsi_inquiry_logical_block_provisioning *",
        lambda p: bool(p.lbpws),
    )
    return Geometry(
        size,
        block,
        max(block, max_transfer),
        max(block, optimal),
        lbpme,
        lbprz,
        bool(lbpws) and lbprz,
        max(block, max_ws),
        await read_identifiers(session),
    )


async def read_identifiers(session: Session) -> tuple[str, ...]:
    """What identifies the LUN whatever its address: its unit serial number (VPD 0x80) and
    the logical unit's own designators (VPD 0x83: NAA, EUI-64, T10 vendor ID...)."""
    ffi, lib = session.ffi, session.lib
    text = ffi.new("char[]", 4096)

    def as_text(fill: Callable[[CData, CData, int], int]) -> Callable[[CData], str | None]:
        def read(page: CData) -> str | None:
            return (
                ffi.string(text).decode("ascii", "replace") if fill(page, text, 4096) == 0 else None
            )

        return read

    serial = await session.inquiry_vpd(
        lib.SCSI_INQUIRY_PAGECODE_UNIT_SERIAL_NUMBER, "void *", as_text(lib.ap_unit_serial)
    )
    designators = await session.inquiry_vpd(
        lib.SCSI_INQUIRY_PAGECODE_DEVICE_IDENTIFICATION, "void *", as_text(lib.ap_lu_designators)
    )
    found = [f"serial:{serial.strip()}"] if serial and serial.strip() else []
    return (*found, *(designators or "").split())


@asynccontextmanager
async def open_session(
    spec: IscsiSpec, options: IscsiOptions, *, pump: PumpFactory = ThreadPump
) -> AsyncIterator[Session]:
    """A logged-in session with its LUN's geometry read; logged out and its pump stopped on
    every path, cancellation included.

    Args:
        spec: the LUN.
        options: credentials, timeout, queue depth and transfer size.
        pump: makes the thread that owns the session's context (a seam for fault tests).

    Raises:
        UsageError: a wrong target, LUN or CHAP secret.
        EndpointError: the login or a command failed, naming the LUN.
    """
    session = Session(spec, options, credentials(spec, options), pump)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.deliver)  # never raises; ends when the pump exits
            try:
                await session.connect()
                session.geometry = await read_geometry(session)
                yield session
            finally:
                with trio.CancelScope(shield=True):
                    await session.close()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        session.release()
