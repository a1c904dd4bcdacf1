"""Hostile input that reaches the copy's libraries: librados options, configuration files
that are not files, and libraries that talk too much on stderr.

Each case checks the README's reliability promise for it: the exit status, one line naming
what went wrong, a bounded time, and nothing opened, written or removed that should not be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools import devstack
from tests.cephtools import Cluster
from tests.conftest import MiB
from tests.test_cinder import rbd_info as cinder_rbd
from tests.test_faults import images, one_error, run

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
