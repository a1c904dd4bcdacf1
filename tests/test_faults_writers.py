"""Writers the copy does not own: two copies onto one volume, and a source written under a
copy or a comparison. Real processes of ``python -m asyncopy`` racing each other and real
writers (other processes, another Ceph client) against files, LUNs and images.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from asyncopy.access.iscsi import IscsiOptions, open_session, parse_iscsi
from tests.cephtools import Cluster
from tests.conftest import MakeLun, MiB, write_pattern
from tests.test_faults import ASYNCOPY, TIMEOUT, one_error, run

SLOW = ("--rate-limit", "32M/s")  # 64 MiB: two seconds, time enough for the other one


def race(*commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once; each one's outcome, in order."""
    started = [
        subprocess.Popen(
            [*ASYNCOPY, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    done = []
    for process, command in zip(started, commands, strict=True):
        out, err = process.communicate(timeout=TIMEOUT)
        done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return done


# -- two copies onto one file ---------------------------------------------------------------


@pytest.mark.parametrize("existing", [True, False])
def test_two_copies_onto_one_file_one_is_refused(tmp_path: Path, existing: bool) -> None:
    sources = [tmp_path / "a.img", tmp_path / "b.img"]
    contents = [
        write_pattern(src, 64 * MiB, [(0, 64 * MiB)], seed=n) for n, src in enumerate(sources)
    ]
    dst = tmp_path / "dst.img"
    if existing:
        dst.write_bytes(b"\xee" * 64 * MiB)
    done = race(*(["copy", *SLOW, str(src), str(dst)] for src in sources))
    assert sorted(d.returncode for d in done) == [0, 2], [d.stderr for d in done]
    winner = 0 if done[0].returncode == 0 else 1
    one_error(done[1 - winner], 2, str(dst), "another copy")
    assert dst.read_bytes() == contents[winner]
    # the lock went with the winner: a third copy (the loser's source) goes through
    assert run("copy", str(sources[1 - winner]), str(dst)).returncode == 0
    assert dst.read_bytes() == contents[1 - winner]


def test_a_file_being_copied_cannot_be_written_by_another_copy(tmp_path: Path) -> None:
    src, other, dst = tmp_path / "src.img", tmp_path / "other.img", tmp_path / "dst.img"
    content = write_pattern(src, 64 * MiB, [(0, 64 * MiB)], seed=1)
    write_pattern(other, 64 * MiB, [(0, 64 * MiB)], seed=2)
    reader = subprocess.Popen(
        [*ASYNCOPY, "copy", *SLOW, "--verify", str(src), str(dst)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the reader has started (0.2-0.5 s) and has two seconds to go
    one_error(run("copy", str(other), str(src)), 2, str(src), "another copy")
    _, err = reader.communicate(timeout=TIMEOUT)
    assert reader.returncode == 0, err
    assert src.read_bytes() == content == dst.read_bytes()


# -- two copies onto one LUN ----------------------------------------------------------------


def reservation_holder(url: str) -> int | None:
    """The key holding the LUN's persistent reservation, asked by an initiator of its own."""

    async def ask() -> int | None:
        spec = parse_iscsi(url.removeprefix("iscsi:"))
        async with open_session(spec, IscsiOptions()) as session:
            return await session.reservation_holder()

    return trio.run(ask)


def test_two_copies_onto_one_lun_one_is_refused(tmp_path: Path, make_lun: MakeLun) -> None:
    sources = [tmp_path / "a.img", tmp_path / "b.img"]
    contents = [
        write_pattern(src, 64 * MiB, [(0, 64 * MiB)], seed=n) for n, src in enumerate(sources)
    ]
    lun = make_lun(64 * MiB, fill=b"\xee" * MiB)
    done = race(*(["copy", *SLOW, str(src), lun.url] for src in sources))
    assert sorted(d.returncode for d in done) == [0, 2], [d.stderr for d in done]
    winner = 0 if done[0].returncode == 0 else 1
    one_error(done[1 - winner], 2, lun.url, "reserved by another initiator")
    assert Path(lun.backing).read_bytes() == contents[winner]
    assert reservation_holder(lun.url) is None  # released at the end
    assert run("copy", str(sources[1 - winner]), lun.url).returncode == 0
    assert Path(lun.backing).read_bytes() == contents[1 - winner]


def test_a_reservation_is_released_when_interrupted_and_taken_over_when_killed(
    tmp_path: Path, make_lun: MakeLun
) -> None:
    src = tmp_path / "src.img"
    content = write_pattern(src, 64 * MiB, [(0, 64 * MiB)])
    lun = make_lun(64 * MiB)
    for stop, code in ((signal.SIGINT, 130), (signal.SIGKILL, -9)):
        copying = subprocess.Popen([*ASYNCOPY, "copy", *SLOW, str(src), lun.url], text=True)
        time.sleep(1.0)  # under way: it has a second to go
        copying.send_signal(stop)
        assert copying.wait(timeout=TIMEOUT) == code
    # SIGINT released it; SIGKILL left it, held by a process that is gone
    holder = reservation_holder(lun.url)
    assert holder is not None
    assert holder & 0xFFFFFFFF == copying.pid
    assert run("copy", str(src), lun.url).returncode == 0  # a copy of this host takes it over
    assert Path(lun.backing).read_bytes() == content
    assert reservation_holder(lun.url) is None


# -- a file source written under a copy or a comparison --------------------------------------

WRITERS = {
    "append": "open(path, 'ab').write(b'x' * 4096)",
    "overwrite": "f = open(path, 'r+b'); f.seek(200 << 20); held = f.read(4096); "
    "f.seek(200 << 20); f.write(held)",  # the bytes it held: only the guard can tell
    "truncate": "os.truncate(path, 64 << 20); os.truncate(path, 256 << 20)",  # size as before
}


def dense(path: Path, size: int) -> bytes:
    """A file of ``size`` random bytes."""
    content = b"".join(os.urandom(64 * MiB) for _ in range(size // (64 * MiB)))
    path.write_bytes(content)
    return content


def write_later(path: Path, code: str, delay: float) -> subprocess.Popen[str]:
    """Another process that changes ``path`` after ``delay`` seconds, as ``code`` says."""
    script = f"import os, time; time.sleep({delay}); path = {str(path)!r}; {code}"
    return subprocess.Popen([sys.executable, "-c", script], text=True)


@pytest.mark.parametrize("change", sorted(WRITERS))
def test_a_file_source_written_mid_copy_fails_the_copy(tmp_path: Path, change: str) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    dense(src, 256 * MiB)
    writer = write_later(src, WRITERS[change], 1.5)
    done = run("copy", "--rate-limit", "64M/s", "--verify", "--json", str(src), str(dst))
    assert writer.wait(timeout=TIMEOUT) == 0
    one_error(done, 1, str(src), "while it was read", "no single moment")
    assert "verified" not in done.stdout
    assert not dst.exists()


def test_a_file_source_written_by_a_process_that_had_it_open_fails_the_copy(
    tmp_path: Path,
) -> None:
    """No lease can be had while a writer has the file open: its times tell."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    dense(src, 256 * MiB)
    script = (
        f"import sys, time; f = open({str(src)!r}, 'r+b'); print('open', flush=True); "
        "time.sleep(1.5); f.seek(100 << 20); held = f.read(4096); f.seek(100 << 20); "
        "f.write(held); f.flush(); time.sleep(5)"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "open\n"
        done = run("copy", "--rate-limit", "64M/s", "--verify", str(src), str(dst))
    finally:
        writer.kill()
        writer.wait()
    one_error(done, 1, str(src), "written or truncated while it was read")
    assert not dst.exists()


def test_verify_of_a_file_written_mid_compare_is_not_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    b.write_bytes(dense(a, 256 * MiB))
    writer = write_later(a, WRITERS["overwrite"], 1.5)
    done = run("verify", "--chunk-size", "64K", "--depth", "1", str(a), str(b))  # about 4 s
    assert writer.wait(timeout=TIMEOUT) == 0
    one_error(done, 2, str(a), "while it was read")
    assert "identical" not in done.stdout


def test_verify_against_a_manifest_of_a_file_written_mid_check_is_not_identical(
    tmp_path: Path,
) -> None:
    a, manifest = tmp_path / "a.img", tmp_path / "a.manifest"
    dense(a, 256 * MiB)
    made = run("copy", "--chunk-size", "16K", "--manifest", str(manifest), str(a), str(a) + ".b")
    assert made.returncode == 0, made.stderr  # 16 KiB chunks: the check takes about 4 s
    writer = write_later(a, WRITERS["overwrite"], 1.5)
    done = run("verify", "--depth", "1", "--manifest", str(manifest), str(a))
    assert writer.wait(timeout=TIMEOUT) == 0
    one_error(done, 2, str(a), "while it was read")
    assert "identical" not in done.stdout


def test_verify_of_an_rbd_head_written_mid_compare_is_not_identical(
    ceph: Cluster, tmp_path: Path
) -> None:
    name, file = ceph.name(), tmp_path / "same.img"
    content = ceph.create(
        name, 128 * MiB, [(offset, 32 * MiB) for offset in range(0, 128 * MiB, 32 * MiB)]
    )
    file.write_bytes(content)
    try:
        verify = subprocess.Popen(
            [*ASYNCOPY, "verify", "--chunk-size", "16K", "--depth", "1", ceph.uri(name), str(file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while not ceph.watchers(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        with ceph.image(name) as image:  # another client writes the bytes it already holds
            image.write(content[:4096], 0)
        out, err = verify.communicate(timeout=TIMEOUT)
    finally:
        subprocess.run(["rbd", "-c", ceph.conf, "rm", f"{ceph.pool}/{name}"], capture_output=True)
    done = subprocess.CompletedProcess(verify.args, verify.returncode, out, err)
    one_error(done, 2, name, "another client took its lock")
    assert "identical" not in out
