"""Hostile input that reaches the copy's libraries: librados options, configuration files
that are not files, and libraries that talk too much on stderr.

Each case checks the README's reliability promise for it: the exit status, one line naming
what went wrong, a bounded time, and nothing opened, written or removed that should not be.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cephtools import Cluster
from tests.conftest import MiB
from tests.test_faults import images, one_error, run

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
