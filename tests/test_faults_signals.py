"""Stops and lost readers: SIGHUP, SIGPIPE and standard streams that go away.

A closed terminal or a dropped ssh session (SIGHUP) stops a copy as SIGTERM does: cancelled,
cleaned up, one line, exit 129. Output is a report on the copy, never a reason to fail it:
a reader that goes away, or a stream closed from the start, leaves the copy's exit status
that of the copy, and ``--json`` keeps stdout to one object.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.cephtools import Cluster
from tests.conftest import MiB
from tests.test_faults import (
    ASYNCOPY,
    TIMEOUT,
    copying_child,
    run,
    start_copy,
    unlocked,
    write_dense,
)

SIZE = 256 * MiB
SLOW = ("--rate-limit", "64M/s")  # four seconds for SIZE: the copy is under way when stopped


def remove_image(ceph: Cluster, name: str) -> None:
    for command in (["snap", "purge"], ["rm"]):
        argv = ["rbd", "-c", ceph.conf, "--no-progress", *command, f"{ceph.pool}/{name}"]
        subprocess.run(argv, check=False, capture_output=True, timeout=TIMEOUT)


# -- SIGHUP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "rbd"])
def test_a_hangup_stops_the_copy_removes_its_destination_and_a_rerun_works(
    ceph: Cluster, tmp_path: Path, kind: str
) -> None:
    """SIGHUP mid-copy: 129, one line, the new destination removed, and nothing (no watcher,
    no lock) that keeps a rerun started at once from succeeding."""
    src = tmp_path / "src.img"
    write_dense(src, SIZE)
    name = ceph.name()
    dst = str(tmp_path / "dst.img") if kind == "file" else ceph.uri(name)
    try:
        child = start_copy(*SLOW, str(src), dst)
        child.send_signal(signal.SIGHUP)
        _, errors = child.communicate(timeout=30)
        assert child.returncode == 129, errors
        assert errors.splitlines()[-1].endswith("asyncopy: error: hung up")
        if kind == "file":
            assert not (tmp_path / "dst.img").exists()
        else:
            assert not ceph.exists(name)
        again = run("copy", str(src), dst, timeout=60)
        assert again.returncode == 0, again.stderr
        if kind == "file":
            assert (tmp_path / "dst.img").read_bytes() == src.read_bytes()
        else:
            assert ceph.read(name) == src.read_bytes()
            assert unlocked(ceph, name)
    finally:
        remove_image(ceph, name)


def on_a_terminal(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """``asyncopy ARGS`` in a session of its own whose controlling terminal is a new pty:
    the process and the pty's master end, once the command has written on it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # rows, columns
    child = subprocess.Popen(
        [*ASYNCOPY, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    os.read(master, 1)  # the copy is under way
    return child, master


def test_a_closed_terminal_stops_the_copy_and_a_rerun_works(ceph: Cluster, tmp_path: Path) -> None:
    """The terminal closes (its master end, as when an ssh session drops): the kernel sends
    SIGHUP and writes on it fail from then on. The copy stops with 129 and its new image is
    removed, with no watcher left to refuse a rerun."""
    src = tmp_path / "src.img"
    write_dense(src, SIZE)
    name = ceph.name()
    try:
        child, master = on_a_terminal("copy", "--progress", *SLOW, str(src), ceph.uri(name))
        os.close(master)
        assert child.wait(timeout=30) == 129
        assert not ceph.exists(name)
        again = run("copy", str(src), ceph.uri(name), timeout=60)
        assert again.returncode == 0, again.stderr
        assert ceph.read(name) == src.read_bytes()
        assert unlocked(ceph, name)
    finally:
        remove_image(ceph, name)


def test_a_hangup_stops_the_cinder_child_cleanly(ceph: Cluster) -> None:
    src, dst = ceph.name(), ceph.name()
    ceph.create(src, SIZE, [(i * 4 * MiB, 4 * MiB) for i in range(64)])
    ceph.create(dst, SIZE)
    try:
        child = copying_child(ceph, src, dst, SIZE)
        child.send_signal(signal.SIGHUP)
        _, errors = child.communicate(timeout=30)
        assert child.returncode == 129, errors
        assert errors.strip().startswith("hung up")
        assert unlocked(ceph, dst)
        assert unlocked(ceph, src)
    finally:
        remove_image(ceph, src)
        remove_image(ceph, dst)


# -- standard streams whose reader goes away -------------------------------------------------


@pytest.mark.parametrize("output", ["summary", "json"])
def test_a_good_copy_whose_stdout_reader_is_gone_still_succeeds(
    tmp_path: Path, output: str
) -> None:
    """``asyncopy copy ... | true``: the reader exits at once, the copy's result cannot be
    written (EPIPE), and the copy still ends with its own status, 0, and no traceback."""
    src = tmp_path / "src.img"
    write_dense(src, 64 * MiB)
    dst = tmp_path / "dst.img"
    flags = ["--json"] if output == "json" else []
    piped = ["bash", "-c", 'set -o pipefail; "$@" | true', "bash"]
    done = subprocess.run(
        [*piped, *ASYNCOPY, "copy", *flags, str(src), str(dst)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("kind", ["bar", "json"])
def test_a_progress_reader_going_away_leaves_the_copy_whole(tmp_path: Path, kind: str) -> None:
    """--progress on a pipe whose reader closes it mid-copy: the copy goes on to the end."""
    src = tmp_path / "src.img"
    write_dense(src, SIZE)
    dst = tmp_path / "dst.img"
    child = subprocess.Popen(
        [*ASYNCOPY, "copy", f"--progress={kind}", *SLOW, str(src), str(dst)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    child.stderr.read(1)  # the copy is under way
    child.stderr.close()  # and its progress reader gone
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert out.startswith("copied 256.0 MiB")
    assert dst.read_bytes() == src.read_bytes()


def without_stderr(*args: str) -> subprocess.CompletedProcess[str]:
    """``asyncopy ARGS 2>&-``: started with descriptor 2 closed, not merely /dev/null."""
    closed = ["sh", "-c", 'exec "$@" 2>&-', "sh"]
    return subprocess.run(
        [*closed, *ASYNCOPY, *args], stdout=subprocess.PIPE, text=True, timeout=TIMEOUT
    )


def test_with_stderr_closed_json_keeps_stdout_to_one_object(ceph: Cluster, tmp_path: Path) -> None:
    """A warning (a key on the command line) and an error meant for a closed stderr never
    reach stdout: a good copy prints its one JSON object there, a refused one nothing."""
    name = ceph.name()
    data = ceph.create(name, 8 * MiB, [(0, 8 * MiB)])
    try:
        keyed = f"{ceph.uri(name)}:key=AQBmZXR0bGVkaXN0aGVrZXkxMjM0NQ=="
        done = without_stderr("copy", "--json", keyed, str(tmp_path / "dst.img"))
        assert done.returncode == 0
        assert json.loads(done.stdout)["bytes_total"] == 8 * MiB  # one object, nothing else
        assert (tmp_path / "dst.img").read_bytes() == data
        refused = without_stderr("copy", "--json", str(tmp_path / "none"), str(tmp_path / "d2"))
        assert refused.returncode == 2
        assert refused.stdout == ""
    finally:
        remove_image(ceph, name)


# -- warnings --------------------------------------------------------------------------------


def test_a_library_warning_is_one_line(tmp_path: Path) -> None:
    """A resumed copy finding a chunk written since by something else: the library's
    warning, one line on stderr."""
    src, dst, journal = tmp_path / "src.img", tmp_path / "dst.img", tmp_path / "j"
    data = os.urandom(8 * MiB)
    src.write_bytes(data)
    assert run("copy", str(src), str(dst), "--journal", str(journal)).returncode == 0
    with open(dst, "r+b") as out:
        out.write(b"another writer")
    done = run("copy", str(src), str(dst), "--resume", str(journal))
    assert done.returncode == 0, done.stderr
    (warning,) = done.stderr.splitlines()
    assert warning.startswith(f"asyncopy: warning: {dst}: 1 chunk(s) the journal shows done")
    assert dst.read_bytes() == data
