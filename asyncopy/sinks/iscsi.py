"""An iSCSI LUN as a sink, through the user-space initiator (``asyncopy.access.iscsi``).

A LUN is a volume that exists: it must be at least as large as the source and is not known
to read zeros (unless the caller says so). Zero runs are written with WRITE SAME(16), with
the UNMAP bit when the LUN says unmapped blocks read as zeros (LBPRZ) and WRITE SAME may
unmap (LBPWS): a thin LUN stays thin. A LUN that refuses WRITE SAME gets zero buffers from
the engine. SYNCHRONIZE CACHE(16) makes the writes durable at flush. Reading (to verify, to
patch a partial last block) is the source's (``asyncopy.sources.iscsi.IscsiVolume``).

A LUN being written is held with a SCSI persistent reservation for the whole copy, as an RBD
image is held with its exclusive lock: this session registers a key and reserves the LUN
"write exclusive" (others may read it, only this session write it) before anything is
written, and unregisters at the end, which also releases the reservation, on error and
cancellation too. A LUN another initiator holds is refused (exit 2), its holder's key named.
A reservation outlives the session that took it, also when its process is killed: the key
says whose it is, this host's pid space on this boot (high 32 bits: a hash of the host name,
the boot id and the pid namespace) and the pid (low 32 bits), so that a copy finding the
reservation of a dead process of its own host takes it over (PREEMPT); one from another host
cannot tell, and is refused until the reservation is cleared (``sg_persist --clear``) or the
target restarts. A target without persistent reservations (ILLEGAL REQUEST) is written
without one.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import trio

from asyncopy.access.iscsi import (
    IscsiOptions,
    IscsiSpec,
    PumpFactory,
    Session,
    ThreadPump,
    open_session,
)
from asyncopy.errors import EndpointError, ReservationConflict, ScsiError, UsageError
from asyncopy.sources.iscsi import IscsiVolume

ILLEGAL_REQUEST = 0x05


class IscsiSink(IscsiVolume):
    """A LUN opened for writing."""

    known_zero = False
    needs_aligned_buffers = False
    _write_same = True

    async def write(self, offset: int, data: memoryview) -> None:
        await self.session.write16(offset, data)

    async def write_zeroes(self, offset: int, length: int) -> bool:
        if not self._write_same or offset % self.block_size or length % self.block_size:
            return False
        step = self.geometry.max_write_same
        for at in range(offset, offset + length, step):
            count = min(step, offset + length - at)
            try:
                await self.session.write_same16_zero(
                    at, count, unmap=self.geometry.unmap_by_write_same
                )
            except ScsiError as exc:
                if at > offset or exc.sense_key != ILLEGAL_REQUEST:
                    raise
                self._write_same = False  # not supported: the engine writes zero buffers
                return False
        return True

    async def flush(self) -> None:
        await self.session.synchronize_cache16()


@asynccontextmanager
async def open_iscsi_sink(
    spec: IscsiSpec,
    *,
    options: IscsiOptions,
    target_is_zero: bool = False,
    pump: PumpFactory = ThreadPump,
) -> AsyncIterator[IscsiSink]:
    """Log in to the LUN for writing; logged out on every path."""
    async with open_session(spec, options, pump=pump) as session, reserved(session):
        sink = IscsiSink(session)
        sink.known_zero = target_is_zero
        yield sink


@asynccontextmanager
async def reserved(session: Session) -> AsyncIterator[None]:
    """Hold the LUN's persistent reservation, write exclusive, while the block runs."""
    key = own_key()
    registered = await _register(session, key)
    try:
        if registered:
            await _reserve(session, key)
        yield
    except BaseException:
        if registered:
            with trio.CancelScope(shield=True), suppress(EndpointError):
                await _unregister(session, key)
        raise
    if registered:
        with trio.CancelScope(shield=True):
            await _unregister(session, key)


async def _register(session: Session, key: int) -> bool:
    """Register ``key`` for this session; False when the target has no reservations."""
    lib = session.lib
    try:
        await session.persistent_reserve_out(
            "reserve", lib.SCSI_PERSISTENT_RESERVE_REGISTER, 0, key
        )
    except ScsiError as exc:
        if exc.sense_key != ILLEGAL_REQUEST:
            raise
        return False
    return True


async def _reserve(session: Session, key: int) -> None:
    """Reserve the LUN, or take over the reservation a dead process of this host left."""
    lib, kind = session.lib, session.lib.SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE
    try:
        await session.persistent_reserve_out(
            "reserve", lib.SCSI_PERSISTENT_RESERVE_RESERVE, key, pr_type=kind
        )
        return
    except ReservationConflict:
        holder = await session.reservation_holder()
    if holder is None or not left_by_the_dead(holder, key):
        held = f" (reservation key 0x{holder:016x})" if holder is not None else ""
        raise UsageError(
            f"destination {session.name} is reserved by another initiator{held}: "
            "another copy or client is writing it"
        )
    await session.persistent_reserve_out(
        "reserve", lib.SCSI_PERSISTENT_RESERVE_PREEMPT, key, holder, kind
    )


async def _unregister(session: Session, key: int) -> None:
    """Unregister ``key``; the holder's reservation goes with it."""
    lib = session.lib
    await session.persistent_reserve_out("release", lib.SCSI_PERSISTENT_RESERVE_REGISTER, key, 0)


def own_key() -> int:
    """This process's reservation key: its pid space (host, boot, pid namespace) and pid."""
    boot = ""
    with suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    namespace = 0
    with suppress(OSError):
        namespace = os.stat("/proc/self/ns/pid").st_ino
    space = f"{socket.gethostname()} {boot} {namespace}".encode()
    return int.from_bytes(hashlib.blake2b(space, digest_size=4).digest()) << 32 | os.getpid()


def left_by_the_dead(holder: int, key: int) -> bool:
    """Whether ``holder`` is the key of a process of this pid space that no longer runs."""
    pid = holder & 0xFFFFFFFF
    if holder >> 32 != key >> 32 or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
