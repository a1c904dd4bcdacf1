"""The dev stack itself, and clusters that cannot answer: full, or stopped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import trio

from asyncopy import devstack
from asyncopy.api import copy_sync, verify_uris
from asyncopy.ceph import CephOptions
from asyncopy.errors import CopyFailed, EndpointError
from asyncopy.uri import EndpointOptions
from tests.cephtools import Cluster, MiB
from tests.conftest import write_pattern
from tests.test_cli import run

TIMEOUT = 3.0
QUICK = EndpointOptions(ceph=CephOptions(timeout=TIMEOUT))


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[devstack.Stack]:
    """A second cluster with a 64 MiB OSD, no iSCSI: ours to fill and to stop."""
    stack = devstack.up(tmp_path / "tiny", osd_bytes=64 * MiB, iscsi=False)
    try:
        yield stack
    finally:
        devstack.down(tmp_path / "tiny")


def test_status_reports_a_live_stack(stack: devstack.Stack) -> None:
    done = run("devstack", "status", stack.dir)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["ceph_answers_io"] is True
    assert set(state["alive"]) == {"ceph-mon", "ceph-osd", "tgtd"}
    assert all(state["alive"].values())
    assert re.fullmatch(r"127\.0\.0\.1:\d+", state["iscsi_portal"])
    assert Path(state["ceph_conf"]).is_file()
    assert state["pool"] == "rbd"


def test_down_stops_exactly_its_processes_and_is_idempotent(tmp_path: Path) -> None:
    directory = tmp_path / "stack"
    done = run("devstack", "up", str(directory), "--osd-size", "64M")
    assert done.returncode == 0, done.stderr
    daemons = [devstack.Daemon(**d) for d in json.loads(done.stdout)["daemons"]]
    assert [d.name for d in daemons] == ["ceph-mon", "ceph-osd", "tgtd"]
    assert all(os.path.exists(f"/proc/{d.pid}") for d in daemons)
    for _ in range(2):
        done = run("devstack", "down", str(directory))
        assert done.returncode == 0, done.stderr
    assert not directory.exists()
    assert not any(devstack._alive(d) for d in daemons)


def test_missing_packages_are_named_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no ceph-mon, rbd, tgtd on this PATH
    done = run_env(env, "devstack", "up", str(tmp_path / "stack"))
    assert done.returncode == 2
    assert done.stderr == (
        "asyncopy: error: missing Debian packages: ceph-common ceph-mon ceph-osd tgt\n"
    )
    assert not (tmp_path / "stack").exists()


def run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncopy", *args], capture_output=True, text=True, env=env
    )


def test_a_full_cluster_fails_the_copy_in_bounded_time(
    tiny: devstack.Stack, tmp_path: Path
) -> None:
    ceph = Cluster(tiny)
    target = ceph.name("target")
    ceph.create(target, 32 * MiB)
    _fill(ceph, tmp_path)
    src = tmp_path / "src.img"
    write_pattern(src, 32 * MiB, [(0, 32 * MiB)])
    start = time.monotonic()
    with pytest.raises(EndpointError) as failure:
        copy_sync(str(src), ceph.uri(target), dst_options=QUICK)
    elapsed = time.monotonic() - start
    assert f"on rbd:rbd/{target}" in str(failure.value)
    assert "timed out" in str(failure.value)
    assert elapsed < 4 * TIMEOUT + 5


def _fill(ceph: Cluster, tmp_path: Path) -> None:
    """Write past the OSD's capacity, then wait until the OSD says it is full."""
    filler = tmp_path / "filler.img"
    write_pattern(filler, 96 * MiB, [(0, 96 * MiB)], seed=2)
    with suppress(CopyFailed):  # it may already be full before the end
        copy_sync(str(filler), ceph.uri("filler"), dst_options=QUICK)
    log = Path(ceph.stack.dir) / "log" / "osd.0.log"
    deadline = time.monotonic() + 30
    while "failsafe engaged" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the OSD never reported itself full"
        time.sleep(0.2)


def test_a_stopped_cluster_fails_the_copy_in_bounded_time(
    tiny: devstack.Stack, tmp_path: Path
) -> None:
    ceph = Cluster(tiny)
    name = ceph.name()
    ceph.create(name, 4 * MiB, [(0, MiB)])
    devstack.stop(tiny)
    start = time.monotonic()
    with pytest.raises(EndpointError, match=rf"connect failed on rbd:rbd/{name}: .*timed out"):
        copy_sync(ceph.uri(name), str(tmp_path / "dst.img"), src_options=QUICK)
    assert time.monotonic() - start < TIMEOUT + 5
    assert not (tmp_path / "dst.img").exists()
    with pytest.raises(EndpointError, match="connect failed"):
        trio.run(verify_uris, ceph.uri(name), ceph.uri(name), MiB, 4, QUICK)
