"""The dev stack itself, and clusters that cannot answer: full, or stopped."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import trio

from asyncopy.access.ceph import CephOptions
from asyncopy.api import copy_sync, copy_uri, verify_uris
from asyncopy.core.engine import copy
from asyncopy.errors import CopyFailed, EndpointError
from asyncopy.specs import EndpointOptions, open_sink, open_source
from devtools import daemons, devstack
from tests.cephtools import Cluster, MiB
from tests.conftest import write_pattern

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 3.0
# What --ceph-timeout's help promises: a copy whose cluster stops answering (here: full)
# ends within twice the timeout, clean-up included; and a few seconds of start-up.
FULL_BOUND = 2 * TIMEOUT + 5
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
    done = run("status", stack.dir)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["ceph_answers_io"] is True
    assert set(state["alive"]) == {"ceph-mon", "ceph-osd", "tgtd"}
    assert all(state["alive"].values())
    assert re.fullmatch(r"127\.0\.0\.1:\d+", state["iscsi_portal"])
    assert Path(state["ceph_conf"]).is_file()
    assert state["pool"] == "rbd"


def test_daemons_listen_on_loopback_only(stack: devstack.Stack) -> None:
    addresses = {
        (daemon.name, address)
        for daemon in stack.daemons
        for address in listening_addresses(daemon.pid)
    }
    assert {name for name, _ in addresses} == {"ceph-mon", "ceph-osd", "tgtd"}
    assert {address for _, address in addresses} == {"127.0.0.1"}


def listening_addresses(pid: int) -> set[str]:
    """The local IPv4/IPv6 addresses of the TCP sockets a process listens on."""
    inodes = {
        link.removeprefix("socket:[").removesuffix("]")
        for link in (os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
        if link.startswith("socket:[")
    }
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(_address(fields[1].split(":")[0]))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # per-word host order
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def test_down_stops_exactly_its_processes_and_is_idempotent(
    stack: devstack.Stack, tmp_path: Path
) -> None:
    directory = tmp_path / "stack"
    done = run("up", str(directory), "--osd-size", "64M")
    assert done.returncode == 0, done.stderr
    started = [daemons.Daemon(**d) for d in json.loads(done.stdout)["daemons"]]
    assert [d.name for d in started] == ["ceph-mon", "ceph-osd", "tgtd"]
    assert all(os.path.exists(f"/proc/{d.pid}") for d in started)
    control = Path(f"/run/tgtd/socket.{json.loads(done.stdout)['tgt_control_port']}")
    assert control.exists()
    for _ in range(2):
        done = run("down", str(directory))
        assert done.returncode == 0, done.stderr
    assert not directory.exists()
    assert not any(daemons.alive(d) for d in started)
    assert not control.exists()  # nor its lock: tgtd leaves both behind
    assert all(daemons.alive(d) for d in stack.daemons)  # another stack is untouched


def test_a_pid_that_is_not_the_started_process_is_never_signalled(
    stack: devstack.Stack,
) -> None:
    mon = stack.daemons[0]
    impostor = daemons.Daemon(mon.name, mon.pid, mon.start_time + 1)  # a reused pid
    devstack.stop(devstack.Stack(stack.dir, "", "", "", None, None, [impostor]))
    assert daemons.alive(mon)


def test_down_leaves_a_directory_that_is_not_a_stack_alone(tmp_path: Path) -> None:
    keep = tmp_path / "precious.txt"
    keep.write_text("mine")
    done = run("down", str(tmp_path))
    assert done.returncode == 2
    assert "no dev stack here" in done.stderr
    assert keep.read_text() == "mine"
    done = run("up", str(tmp_path))
    assert done.returncode == 2
    assert "not empty" in done.stderr


def test_a_stack_that_does_not_start_says_why_and_leaves_nothing_running(tmp_path: Path) -> None:
    directory = tmp_path / "full"
    with pytest.raises(devstack.DevstackError, match="did not start") as failure:
        devstack.up(directory, osd_bytes=1, iscsi=False, timeout=5)  # full from the start
    assert "full osd" in str(failure.value)  # from the daemons' log tails
    state = devstack.Stack.load(directory)
    assert state.daemons
    assert not any(daemons.alive(d) for d in state.daemons)
    devstack.down(directory)
    assert not directory.exists()


def test_missing_packages_are_named_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no ceph-mon, rbd, tgtd on this PATH
    done = run_env(env, "up", str(tmp_path / "stack"))
    assert done.returncode == 2
    assert done.stderr == (
        "devstack: error: missing Debian packages: ceph-common ceph-mon ceph-osd tgt\n"
    )
    assert not (tmp_path / "stack").exists()


def run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m devtools.devstack ARGS`` from the source tree."""
    return subprocess.run(
        [sys.executable, "-m", "devtools.devstack", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_env(dict(os.environ), *args)


async def test_a_full_cluster_fails_the_copy_in_bounded_time(
    tiny: devstack.Stack, tmp_path: Path
) -> None:
    ceph = Cluster(tiny)
    target = ceph.name("target")
    ceph.create(target, 32 * MiB)
    src = tmp_path / "src.img"
    write_pattern(src, 32 * MiB, [(0, 32 * MiB)])
    started: list[float] = []
    with pytest.raises(EndpointError) as failure:
        await _fill_then_copy(ceph, src, target, tmp_path, started)
    elapsed = time.monotonic() - started[0]
    assert re.search(
        rf"write failed on rbd:rbd/{target} at offset \d+ .*timed out", str(failure.value)
    )
    assert elapsed < FULL_BOUND
    start = time.monotonic()  # and a new copy onto the full cluster
    with pytest.raises(EndpointError, match=rf"failed on rbd:rbd/{target}2.*timed out"):
        await copy_uri(str(src), ceph.uri(target + "2"), dst_options=QUICK)
    assert time.monotonic() - start < FULL_BOUND


async def _fill_then_copy(
    ceph: Cluster, src: Path, target: str, tmp_path: Path, started: list[float]
) -> None:
    """Open both ends, fill the cluster, then copy: the writes meet a full OSD."""
    async with (
        open_source(str(src)) as source,
        open_sink(ceph.uri(target), size=source.size, options=QUICK) as sink,
    ):
        await trio.to_thread.run_sync(_fill, ceph, tmp_path)
        started.append(time.monotonic())
        await copy(source, sink)


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
