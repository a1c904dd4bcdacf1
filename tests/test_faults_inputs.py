"""Hostile input that reaches the copy's libraries: librados options, configuration files
that are not files, and libraries that talk too much on stderr.

Each case checks the README's reliability promise for it: the exit status, one line naming
what went wrong, a bounded time, and nothing opened, written or removed that should not be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import devstack
from tests.cephtools import Cluster
from tests.conftest import MiB
from tests.test_cinder import rbd_info as cinder_rbd
from tests.test_faults import ASYNCOPY, images, one_error, run

BOUND = 60  # seconds: a copy of a few MiB takes one

# -- librados options in a URI --------------------------------------------------------------


@pytest.mark.parametrize("option", ["admin_socket", "log_file"])
def test_a_path_option_in_a_uri_is_refused_and_touches_nothing(
    ceph: Cluster, tmp_path: Path, option: str
) -> None:
    name = ceph.name()
    ceph.create(name, MiB, [(0, MiB)])
    victim = tmp_path / "victim"
    victim.write_bytes(b"an unrelated file\n")
    before = images(ceph)
    done = run("copy", f"{ceph.uri(name)}:{option}={victim}", str(tmp_path / "out.img"))
    one_error(done, 2, f"rbd:rbd/{name}", repr(option), "not accepted")
    assert victim.read_bytes() == b"an unrelated file\n"
    assert not (tmp_path / "out.img").exists()
    assert images(ceph) == before
    dst = ceph.name()
    done = run("copy", str(victim), f"{ceph.uri(dst)}:{option}={victim}")
    one_error(done, 2, option)
    assert victim.read_bytes() == b"an unrelated file\n"
    assert not ceph.exists(dst)


def test_an_accepted_option_still_reaches_librados(ceph: Cluster, tmp_path: Path) -> None:
    name = ceph.name()
    content = ceph.create(name, MiB, [(0, MiB)])
    empty = tmp_path / "empty.conf"  # names no monitors: only the URI's option does
    empty.write_text("")
    monitors = ceph.stack.mon_host.replace(":", "\\:")
    uri = f"rbd:{ceph.pool}/{name}:conf={empty}:mon_host={monitors}"
    done = run("copy", uri, str(tmp_path / "out.img"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.img").read_bytes() == content


# -- the Cinder copy child and a talkative library ------------------------------------------

CALLER = """
import eventlet; eventlet.monkey_patch()
import json, sys, time
from asyncopy.cinder import copy_volume_data
from asyncopy.errors import CopyFailed
src, dst, missing, size = json.loads(sys.argv[1])
began = time.monotonic()
result = copy_volume_data(src, dst, size)
took = time.monotonic() - began
try:
    copy_volume_data(src, missing, size)
    error = None
except CopyFailed as exc:
    error = str(exc)
print(json.dumps({"result": result, "seconds": took, "error": error}))
"""


def test_a_cinder_copy_with_librados_logging_to_stderr_ends_with_its_own_error(
    stack: devstack.Stack, ceph: Cluster, tmp_path: Path
) -> None:
    """An operator debugging a backend: the cluster's ceph.conf (librados reads it for a
    connection_info) sends its debug log to stderr. The copy still ends in bounded time,
    and a failing one still says what failed."""
    debug = tmp_path / "debug.conf"
    debug.write_text(
        Path(ceph.conf).read_text()
        + "log to stderr = true\ndebug rbd = 20\ndebug ms = 20\ndebug rados = 20\n"
    )
    src, dst = ceph.name("volume"), ceph.name("volume")
    content = ceph.create(src, 8 * MiB, [(0, 8 * MiB)])
    ceph.create(dst, 8 * MiB)
    args = [cinder_rbd(stack, name) for name in (src, dst, "missing-volume")]
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CALLER, json.dumps([*args, 8 * MiB])],
        env={**os.environ, "CEPH_CONF": str(debug)},  # as /etc/ceph/ceph.conf would be
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.monotonic() - began < BOUND
    answer = json.loads(done.stdout)
    assert answer["result"]["bytes_total"] == 8 * MiB
    assert ceph.read(dst) == content
    assert answer["error"] == f"rbd:{ceph.pool}/missing-volume: no such image"


# -- configuration files that are not files -------------------------------------------------

QUICK = 10  # seconds: every refusal here is made before anything is opened


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO nobody writes to: opening it for reading blocks until a writer comes."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_a_fifo_keyring_is_refused_at_once(ceph: Cluster, tmp_path: Path, fifo: Path) -> None:
    name = ceph.name()
    ceph.create(name, MiB, [(0, MiB)])
    cephx = f"{ceph.uri(name)}:keyring={fifo}:auth_client_required=cephx"  # it reads keyrings
    done = run("copy", cephx, str(tmp_path / "out.img"), timeout=QUICK)
    one_error(done, 2, f"keyring {fifo}: not a regular file")
    assert not (tmp_path / "out.img").exists()
    dst = ceph.name()
    (tmp_path / "src.img").write_bytes(b"\1" * MiB)
    done = run("copy", str(tmp_path / "src.img"), f"{ceph.uri(dst)}:keyring={fifo}", timeout=QUICK)
    one_error(done, 2, f"keyring {fifo}: not a regular file")
    assert not ceph.exists(dst)


def test_a_fifo_ceph_conf_is_refused_at_once(tmp_path: Path, fifo: Path) -> None:
    done = run("copy", f"rbd:rbd/img:conf={fifo}", str(tmp_path / "out.img"), timeout=QUICK)
    one_error(done, 2, f"ceph configuration file {fifo}: not a regular file")
    assert not (tmp_path / "out.img").exists()


@pytest.mark.parametrize("command", ["copy", "verify"])
def test_a_fifo_config_file_is_refused_at_once(tmp_path: Path, fifo: Path, command: str) -> None:
    src = tmp_path / "src.img"
    src.write_bytes(b"\1" * MiB)
    dst = tmp_path / ("out.img" if command == "copy" else "same.img")
    if command == "verify":
        dst.write_bytes(b"\1" * MiB)
    done = run(command, "--config-file", str(fifo), str(src), str(dst), timeout=QUICK)
    one_error(done, 2, f"configuration file {fifo}: not a regular file")
    assert command == "verify" or not dst.exists()


def test_a_fifo_connection_info_file_is_refused_at_once(tmp_path: Path, fifo: Path) -> None:
    done = run("copy", f"brick:{fifo}", str(tmp_path / "out.img"), timeout=QUICK)
    one_error(done, 2, f"connection info {fifo}: not a regular file")
    assert not (tmp_path / "out.img").exists()


def fifo_keyring_conf(ceph: Cluster, tmp_path: Path, fifo: Path) -> Path:
    """The cluster's ceph.conf, but for a keyring librados itself opens: the FIFO."""
    lines = [
        f"keyring = {fifo}" if line.startswith("keyring =") else line
        for line in Path(ceph.conf).read_text().splitlines()
    ]
    conf = tmp_path / "fifo-keyring.conf"
    conf.write_text("\n".join([*lines, "auth client required = cephx", ""]))
    return conf


def test_a_connect_that_never_ends_fails_within_the_timeout(
    ceph: Cluster, tmp_path: Path, fifo: Path
) -> None:
    """librados opens the keyring its ceph.conf names, a FIFO: the connect never returns."""
    name = ceph.name()
    ceph.create(name, MiB, [(0, MiB)])
    conf = fifo_keyring_conf(ceph, tmp_path, fifo)
    began = time.monotonic()
    uri = f"rbd:{ceph.pool}/{name}:conf={conf}"
    done = run("copy", "--ceph-timeout", "2", uri, str(tmp_path / "out.img"), timeout=30)
    one_error(done, 1, f"connect failed on rbd:rbd/{name}", "no answer in 2 s")
    assert time.monotonic() - began < 2 + 5
    assert not (tmp_path / "out.img").exists()


@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_connect_that_never_ends_can_be_interrupted(
    ceph: Cluster, tmp_path: Path, fifo: Path, signal_number: int, code: int
) -> None:
    (tmp_path / "src.img").write_bytes(b"\1" * MiB)
    conf = fifo_keyring_conf(ceph, tmp_path, fifo)
    dst = ceph.name()
    copying = subprocess.Popen(
        [*ASYNCOPY, "copy", str(tmp_path / "src.img"), f"rbd:{ceph.pool}/{dst}:conf={conf}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)  # importing, then stuck in librados
        began = time.monotonic()
        copying.send_signal(signal_number)
        _, errors = copying.communicate(timeout=10)
    finally:
        copying.kill()  # if the signal was not heeded
        copying.communicate()
    assert copying.returncode == code, errors
    assert time.monotonic() - began < 5
    assert len(errors.splitlines()) == 1
    assert not ceph.exists(dst)
