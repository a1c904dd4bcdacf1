"""iSCSI LUNs through the user-space initiator, against the dev stack's real tgtd (and its
real Ceph cluster), with ``qemu-img compare`` on the ``iscsi://`` URI as the oracle."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from asyncopy.access.iscsi import Completion, IscsiOptions, ThreadPump, parse_iscsi
from asyncopy.api import copy_sync
from asyncopy.core.endpoint import ExtentKind
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.errors import EndpointError, UsageError
from asyncopy.sinks.iscsi import open_iscsi_sink
from asyncopy.sources.iscsi import open_iscsi_source
from asyncopy.specs import EndpointOptions, open_sink, open_source
from asyncopy.testing import Faults, FaultyVolume, MemoryVolume
from devtools import devstack
from tests.cephtools import Cluster, MiB, qemu_identical
from tests.conftest import MakeLun, write_pattern
from tests.test_cli import run

OBJ = 4 * MiB
SCATTERED = (64 * MiB, [(i * OBJ, OBJ) for i in (0, 2, 3, 6, 9, 10, 13, 15)])
ODD = (10 * MiB + 12800, [(100, 5000), (6 * MiB, 3 * MiB), (10 * MiB + 12000, 800)])
PATHS = ["file-iscsi", "iscsi-file", "rbd-iscsi", "iscsi-rbd", "iscsi-iscsi"]


def dirt(size: int, seed: int = 9) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("layout", ["scattered", "odd"])
@pytest.mark.parametrize("path", PATHS)
def test_copy_paths(
    ceph: Cluster, tmp_path: Path, make_lun: MakeLun, path: str, layout: str
) -> None:
    size, data_at = SCATTERED if layout == "scattered" else ODD
    src_kind, dst_kind = path.split("-")
    if src_kind == "iscsi":  # a LUN's size is a multiple of its block: pad the bytes
        pattern = tmp_path / "pattern.img"
        content = write_pattern(pattern, size, data_at)
        size = -(-size // 512) * 512
        content = content.ljust(size, b"\0")
        src = make_lun(size, fill=content).url
    elif src_kind == "file":
        src = str(tmp_path / "src.img")
        content = write_pattern(Path(src), size, data_at)
    else:
        name = ceph.name()
        content = ceph.create(name, size, data_at)
        src = ceph.uri(name)
    if dst_kind == "iscsi":  # an existing LUN holding other bytes
        lun = make_lun(-(-size // 512) * 512, fill=dirt(size))
        dst = lun.url
    elif dst_kind == "file":
        dst = str(tmp_path / "dst.img")
    else:
        dst = ceph.uri(ceph.name())

    result = copy_sync(src, dst, CopyOptions(verify=True))

    assert result.verified
    assert result.bytes_total == size
    if dst_kind == "iscsi":
        assert Path(lun.backing).read_bytes()[:size] == content
    assert qemu_identical(src, dst)


def test_a_dirty_thin_lun_ends_equal_and_thin(tmp_path: Path, make_lun: MakeLun) -> None:
    size, data_at = SCATTERED
    src = tmp_path / "src.img"
    content = write_pattern(src, size, data_at)
    lun = make_lun(size, fill=dirt(size))
    assert os.stat(lun.backing).st_blocks * 512 >= size  # fully allocated before

    result = copy_sync(str(src), lun.url, CopyOptions(verify=True))

    assert result.bytes_zeroed == size - 8 * OBJ
    assert Path(lun.backing).read_bytes() == content
    assert os.stat(lun.backing).st_blocks * 512 <= 8 * OBJ + 64 * 1024  # holes unmapped
    assert unmapped(lun.url) == {(i * OBJ, OBJ) for i in range(16)} - set(data_at)


def unmapped(url: str) -> set[tuple[int, int]]:
    """The 4 MiB runs that GET LBA STATUS reports as holes."""

    async def holes() -> set[tuple[int, int]]:
        async with open_iscsi_source(parse_iscsi(url.removeprefix("iscsi:")), IscsiOptions()) as v:
            assert v.geometry.lbpme
            assert v.geometry.lbprz
            found = await v.extents(0, v.size)
        return {
            (at, OBJ)
            for extent in found
            if extent.kind is ExtentKind.HOLE
            for at in range(extent.offset, extent.end, OBJ)
            if at % OBJ == 0 and at + OBJ <= extent.end
        }

    return trio.run(holes)


def test_a_4k_lun_takes_an_unaligned_source(tmp_path: Path, make_lun: MakeLun) -> None:
    size, data_at = ODD
    src = tmp_path / "src.img"
    content = write_pattern(src, size, data_at)
    tail = dirt(4096, seed=4)
    lun_size = -(-size // 4096) * 4096
    lun = make_lun(lun_size, block_size=4096, fill=dirt(lun_size - 4096) + tail)

    result = copy_sync(str(src), lun.url, CopyOptions(verify=True))

    assert result.verified
    written = Path(lun.backing).read_bytes()
    assert written[:size] == content
    assert written[size:] == tail[size % 4096 :]  # bytes past the source's end are kept


def test_chap_logins_and_secrets_stay_secret(tmp_path: Path, make_lun: MakeLun) -> None:
    src = tmp_path / "src.img"
    content = write_pattern(src, 8 * MiB, [(MiB, MiB)])
    lun = make_lun(8 * MiB, chap=("alice", SECRET))
    with_chap = lun.url.replace("iscsi://", f"iscsi://alice%{SECRET}@")
    done = run("copy", str(src), with_chap, "--verify")
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert Path(lun.backing).read_bytes() == content
    options = EndpointOptions(iscsi=IscsiOptions(user="alice", password=SECRET))
    copy_sync(lun.url, str(tmp_path / "back.img"), src_options=options)
    assert (tmp_path / "back.img").read_bytes() == content


SECRET = "s3cret-passw0rd"


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (lambda u: u.replace(":lun-", ":no-such-"), 2, "no such target"),
        (lambda u: u.removesuffix("/1") + "/7", 2, "no such LUN"),
        (lambda u: u.replace(SECRET, "wrong-secret"), 2, "CHAP authentication failed"),
        (lambda u: u.replace("alice%", "mallory%"), 2, "CHAP authentication failed"),
        (lambda u: u.replace(u.split("@")[1].split("/")[0], "127.0.0.1:1"), 1, "refused"),
        (lambda u: u.replace("iscsi://", "iscsi:///"), 2, "expected iscsi://"),
    ],
)
def test_wrong_names_ports_and_secrets_are_one_clear_line(
    tmp_path: Path, make_lun: MakeLun, change: Callable[[str], str], code: int, message: str
) -> None:
    lun = make_lun(8 * MiB, chap=("alice", SECRET))
    dst = tmp_path / "dst.img"
    done = run("copy", change(lun.url.replace("iscsi://", f"iscsi://alice%{SECRET}@")), str(dst))
    assert done.returncode == code
    # the password on the command line is warned of, once the URL parses; then one error
    warnings = [line for line in done.stderr.splitlines() if line.startswith("asyncopy: warn")]
    assert len(warnings) == (0 if message == "expected iscsi://" else 1), done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line not in warnings]
    assert error.startswith("asyncopy: error: ")
    assert message in error
    assert "secret" not in done.stderr
    assert "s3cret" not in done.stderr
    assert not dst.exists()


def test_a_too_small_lun_is_refused_untouched(tmp_path: Path, make_lun: MakeLun) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, 16 * MiB, [(0, MiB)])
    before = dirt(8 * MiB)
    lun = make_lun(8 * MiB, fill=before)
    with pytest.raises(UsageError, match="is too small"):
        copy_sync(str(src), lun.url)
    assert Path(lun.backing).read_bytes() == before


def connections(stack: devstack.Stack, lun: devstack.Lun) -> str:
    shown = subprocess.run(
        [
            "tgtadm",
            "-C",
            str(stack.tgt_control_port),
            "--lld",
            "iscsi",
            "--op",
            "show",
            "--mode",
            "conn",
            "--tid",
            str(lun.tid),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.strip()


async def test_errors_and_cancellation_log_out(stack: devstack.Stack, make_lun: MakeLun) -> None:
    lun = make_lun(16 * MiB, fill=dirt(16 * MiB))
    source = MemoryVolume(dirt(16 * MiB, seed=5))
    failing = FaultyVolume(source, Faults(read_eio_at=8 * MiB))
    with pytest.raises(EndpointError, match="read failed on memory at offset"):
        async with open_sink(lun.url, size=source.size) as sink:
            await copy(failing, sink, CopyOptions(chunk_size=MiB))
    assert connections(stack, lun) == ""
    slow = FaultyVolume(source, Faults(delay=0.2))  # 8 rounds of 2 chunks: 1.6 s
    started = trio.current_time()
    with trio.move_on_after(0.5) as scope:
        async with open_sink(lun.url, size=source.size) as sink:
            await copy(slow, sink, CopyOptions(chunk_size=MiB, depth=2))
    assert scope.cancelled_caught
    assert trio.current_time() - started < 5  # what was in flight ended, and the logout
    assert connections(stack, lun) == ""


def test_a_lun_gone_mid_copy_fails_naming_the_lun_and_offset(
    stack: devstack.Stack, tmp_path: Path, make_lun: MakeLun
) -> None:
    lun = make_lun(64 * MiB)
    src = tmp_path / "src.img"
    data = write_pattern(src, 64 * MiB, [(0, 64 * MiB)])

    async def copy_while_removed() -> None:
        async with open_sink(lun.url, size=64 * MiB, options=QUICK) as sink:
            devstack.remove_lun(stack, lun)  # the target drops the session
            source = MemoryVolume(data)
            await copy(source, sink, CopyOptions(chunk_size=MiB))

    with pytest.raises(EndpointError, match=rf"write failed on {lun.url} at offset \d+"):
        trio.run(copy_while_removed)


QUICK = EndpointOptions(iscsi=IscsiOptions(timeout=3))


def test_a_check_condition_names_the_lun_offset_and_sense(
    tmp_path: Path, make_lun: MakeLun
) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, 8 * MiB, [(0, 8 * MiB)])
    before = dirt(8 * MiB)
    lun = make_lun(8 * MiB, fill=before, read_only=True)
    done = run("copy", str(src), lun.url)
    assert done.returncode == 1
    assert re.fullmatch(
        rf"asyncopy: error: write failed on {re.escape(lun.url)} at offset \d+ \(length \d+\): "
        r"check condition: DATA PROTECTION, WRITE_PROTECTED \(0x2700\)\n",
        done.stderr,
    )
    assert Path(lun.backing).read_bytes() == before


async def test_a_target_that_stops_answering_fails_in_bounded_time(
    stack: devstack.Stack, make_lun: MakeLun
) -> None:
    """Through a proxy that stalls after 8 MiB: a timeout, a logout that times out too, and
    a session torn down with commands still queued in libiscsi (no crash, no hang)."""
    lun = make_lun(32 * MiB, fill=dirt(32 * MiB))
    host, port = (stack.iscsi_portal or "").split(":")
    quick = EndpointOptions(iscsi=IscsiOptions(timeout=2))

    async def forward(src: trio.SocketStream, dst: trio.SocketStream, counted: list[int]) -> None:
        while data := await src.receive_some(1 << 16):
            counted[0] += len(data)
            if counted[0] > 8 * MiB:
                await trio.sleep_forever()  # hold the connection, answer nothing
            await dst.send_all(data)

    async def relay(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(host, int(port))
        async with trio.open_nursery() as pipes:
            pipes.start_soon(forward, client, server, [-(1 << 62)])
            pipes.start_soon(forward, server, client, [0])

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, relay, 0)
        proxy = listeners[0].socket.getsockname()[1]
        url = lun.url.replace(f"{host}:{port}", f"127.0.0.1:{proxy}")
        started = trio.current_time()
        with pytest.raises(EndpointError, match=r"read failed on .* timed out after 2 s"):
            await copy_to_memory(url, quick)
        assert trio.current_time() - started < 2 * 2 + 5  # 2 x --iscsi-timeout, and slack
        nursery.cancel_scope.cancel()


async def copy_to_memory(url: str, options: EndpointOptions) -> None:
    async with open_source(url, options) as source:
        await copy(source, MemoryVolume(bytes(source.size)), CopyOptions(chunk_size=MiB))


def test_ctrl_c_during_a_copy_cancels_it_cleanly(
    stack: devstack.Stack, tmp_path: Path, make_lun: MakeLun
) -> None:
    """SIGINT becomes a cancellation: requests in flight end, the session logs out, exit 130."""
    size = 512 * MiB
    src = tmp_path / "src.img"
    block = dirt(4 * MiB, seed=11)
    with open(src, "wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
    lun = make_lun(size)
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncopy", "copy", str(src), lun.url, "--verify", "--progress"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    child.stderr.read(1)  # the first progress report: the copy is under way
    child.send_signal(signal.SIGINT)
    _, errors = child.communicate(timeout=20)  # far less than the 30 s iSCSI timeout
    assert child.returncode == 130, errors
    assert errors.strip().endswith("asyncopy: error: interrupted")
    assert connections(stack, lun) == ""


def test_a_thick_lun_has_no_map_and_is_zeroed_by_writing(tmp_path: Path, make_lun: MakeLun) -> None:
    """Without LBPME there is no allocation map (all data) and no UNMAP: zero runs are
    written as zeros (WRITE SAME without the UNMAP bit)."""
    size, data_at = SCATTERED
    src = tmp_path / "src.img"
    content = write_pattern(src, size, data_at)
    lun = make_lun(size, fill=dirt(size), thin=False)

    there = copy_sync(str(src), lun.url, CopyOptions(verify=True))
    assert there.bytes_zeroed == size - 8 * OBJ
    assert Path(lun.backing).read_bytes() == content

    back = copy_sync(lun.url, str(tmp_path / "back.img"))
    assert back.bytes_read == size  # no map: everything is read, zeros found by scanning
    assert back.bytes_skipped == size - 8 * OBJ
    assert (tmp_path / "back.img").read_bytes() == content


Mangle = Callable[[list[Completion]], list[Completion]]


class RecordingPump:
    """The real pump, recording what is in flight and each READ/WRITE's size, with a hook
    that may lose, corrupt or refuse the completions it hands back."""

    def __init__(self, ctx: Any, mangle: Mangle | None = None) -> None:
        self.inner = ThreadPump(ctx)
        self.mangle = mangle
        self.in_flight = self.most = 0
        self.sizes: set[int] = set()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def exited(self) -> bool:
        return self.inner.exited

    def submit(self, request: Any) -> None:
        if request.iov.iov_len:  # a READ or a WRITE
            self.sizes.add(request.datalen)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.inner.submit(request)

    def completions(self) -> list[Completion]:
        batch = self.inner.completions()
        self.in_flight -= len(batch)
        return self.mangle(batch) if self.mangle else batch

    def break_session(self, reason: str) -> None:
        self.inner.break_session(reason)

    def stop(self) -> None:
        self.inner.stop()

    def close(self) -> None:
        self.inner.close()


def on_the_nth(n: int, change: Callable[[Completion], Completion | None]) -> Mangle:
    """Apply ``change`` to the nth completion (None drops it)."""
    seen = 0

    def mangle(batch: list[Completion]) -> list[Completion]:
        nonlocal seen
        kept = []
        for done in batch:
            seen += 1
            changed = change(done) if seen == n else done
            if changed is not None:
                kept.append(changed)
        return kept

    return mangle


def unreadable_batch(batch: list[Completion]) -> list[Completion]:
    if any(done.id >= 8 for done in batch):
        raise RuntimeError("completions unreadable")
    return batch


FAULTS: dict[str, Mangle] = {
    "unhandled": on_the_nth(8, lambda done: replace(done, id=-1)),  # nobody waits for it
    "unreadable": unreadable_batch,
    "lost": on_the_nth(8, lambda done: None),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_completion_gone_wrong_fails_the_copy_never_hangs_it(
    stack: devstack.Stack, make_lun: MakeLun, fault: str
) -> None:
    """A completion that cannot be handled, a batch that cannot be taken, a completion
    that never arrives: the copy fails in bounded time naming the LUN and an offset, and
    the session is torn down (its connection closed)."""
    lun = make_lun(32 * MiB, fill=dirt(32 * MiB))
    spec = parse_iscsi(lun.url.removeprefix("iscsi:"))

    async def copy_out() -> None:
        pump = partial(RecordingPump, mangle=FAULTS[fault])
        async with open_iscsi_source(spec, IscsiOptions(timeout=1), pump=pump) as source:
            await copy(source, MemoryVolume(bytes(source.size)), CopyOptions(chunk_size=MiB))

    started = time.monotonic()
    with pytest.raises(EndpointError, match=rf"\w+ failed on {re.escape(lun.url)} at offset \d+"):
        trio.run(copy_out)
    assert time.monotonic() - started < 15
    while connections(stack, lun) and time.monotonic() - started < 25:
        time.sleep(0.1)
    assert connections(stack, lun) == ""


def test_queue_depth_and_transfer_size_are_what_was_asked(make_lun: MakeLun) -> None:
    size = 64 * MiB
    content = dirt(size)
    lun = make_lun(size, fill=content)
    spec = parse_iscsi(lun.url.removeprefix("iscsi:"))
    options = IscsiOptions(queue_depth=5, transfer_size=256 * 1024)
    engine = CopyOptions(chunk_size=4 * MiB, depth=4)  # 4 chunks of 16 pieces offered
    pumps: list[RecordingPump] = []

    def recording(ctx: Any) -> RecordingPump:
        pumps.append(RecordingPump(ctx))
        return pumps[-1]

    async def there_and_back() -> bytes:
        async with open_iscsi_sink(spec, options=options, pump=recording) as sink:
            await copy(MemoryVolume(content[::-1]), sink, engine)
        async with open_iscsi_source(spec, options, pump=recording) as source:
            back = MemoryVolume(bytes(size))
            await copy(source, back, engine)
        return bytes(back.data)

    assert trio.run(there_and_back) == content[::-1]
    assert Path(lun.backing).read_bytes() == content[::-1]
    for pump in pumps:
        assert pump.most == 5
        assert pump.sizes == {256 * 1024}
        assert pump.in_flight == 0


def test_iscsi_options_refuse_a_queue_depth_of_zero() -> None:
    with pytest.raises(UsageError, match="queue depth"):
        IscsiOptions(queue_depth=0)
