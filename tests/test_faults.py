"""The fault matrix: hostile input, signals and concurrency against real endpoints.

Each case checks what the README's reliability section promises: the exit status, one line
naming what went wrong, a bounded time, the destination a copy created removed, and nothing
left behind (no lock, watcher, temporary file or process).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncopy.cinder import child_request
from devtools import devstack
from tests.cephtools import Cluster
from tests.conftest import MakeLoop, MakeLun, MiB, write_pattern

TIMEOUT = 120
ASYNCOPY = (sys.executable, "-m", "asyncopy")


@pytest.fixture(autouse=True)
def _images_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """The images a test made on the session's cluster are removed after it: these tests
    write hundreds of MiB each, and the cluster's OSD holds 2 GiB."""
    if "ceph" not in request.fixturenames:
        yield
        return
    ceph: Cluster = request.getfixturevalue("ceph")
    before = set(images(ceph))
    yield
    for name in set(images(ceph)) - before:
        argv = ["rbd", "-c", ceph.conf, "--no-progress", "rm", f"{ceph.pool}/{name}"]
        subprocess.run([*argv], check=False, capture_output=True, timeout=TIMEOUT)


def images(ceph: Cluster) -> list[str]:
    listed = subprocess.run(
        ["rbd", "-c", ceph.conf, "ls", "--format", "json", ceph.pool],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    return list(json.loads(listed.stdout))


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ASYNCOPY, *args], capture_output=True, text=True, timeout=timeout)


def one_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The single error line of a run that exited with ``code``."""
    assert done.returncode == code, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("asyncopy: error: ")
    for word in words:
        assert word in lines[0]
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}


# -- a manifest, or a destination, that is the source ----------------------------------------


@pytest.mark.parametrize(
    "manifest",
    ["{src}", "{link}", "{hard}", "{dst}", "{dir}/./dst.img"],
)
def test_a_manifest_naming_an_endpoint_is_refused_before_anything_is_written(
    tmp_path: Path, manifest: str
) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, 4 * MiB, [(0, 4 * MiB)])
    (tmp_path / "link.img").symlink_to(src)
    os.link(src, tmp_path / "hard.img")
    before = snapshot(tmp_path)
    names = {
        "src": src,
        "link": tmp_path / "link.img",
        "hard": tmp_path / "hard.img",
        "dst": tmp_path / "dst.img",
        "dir": tmp_path,
    }
    done = run("copy", "--manifest", manifest.format(**names), str(src), str(tmp_path / "dst.img"))
    one_error(done, 2, "manifest", "is the source or the destination")
    assert snapshot(tmp_path) == before  # the source intact, no destination, no manifest


def test_a_manifest_naming_an_existing_destination_device_is_refused(
    tmp_path: Path, make_loop: MakeLoop
) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, MiB, [(0, MiB)])
    device, backing = make_loop(MiB)
    before = backing.read_bytes()
    done = run("copy", "--manifest", str(backing), str(src), device)
    one_error(done, 2, "manifest")
    assert backing.read_bytes() == before
    one_error(run("copy", "--manifest", device, str(src), str(tmp_path / "d")), 2, "regular file")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("dst", ["{src}", "{link}", "{hard}", "{dir}/../{dirname}/src.img"])
def test_a_file_copied_onto_itself_is_refused(tmp_path: Path, dst: str) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, 4 * MiB, [(0, MiB)])
    (tmp_path / "link.img").symlink_to(src)
    os.link(src, tmp_path / "hard.img")
    before = snapshot(tmp_path)
    names = {
        "src": src,
        "link": tmp_path / "link.img",
        "hard": tmp_path / "hard.img",
        "dir": tmp_path,
        "dirname": tmp_path.name,
    }
    one_error(run("copy", str(src), dst.format(**names)), 2, "are the same volume")
    assert snapshot(tmp_path) == before


def test_a_file_copied_onto_the_loop_device_over_it_is_refused(make_loop: MakeLoop) -> None:
    device, backing = make_loop(2 * MiB)
    backing.write_bytes(os.urandom(2 * MiB))
    before = backing.read_bytes()
    one_error(run("copy", str(backing), device), 2, "are the same volume")
    one_error(run("copy", device, str(backing)), 2, "are the same volume")
    assert backing.read_bytes() == before


def test_an_image_copied_onto_itself_is_refused_by_any_name(ceph: Cluster, tmp_path: Path) -> None:
    name = ceph.name()
    content = ceph.create(name, 8 * MiB, [(0, 8 * MiB)])
    other_conf = tmp_path / "same-cluster.conf"
    other_conf.write_text(Path(ceph.conf).read_text())  # another spelling of the cluster
    same = f"rbd:{ceph.pool}/{name}:conf={other_conf}"
    for dst in (ceph.uri(name), same):
        one_error(run("copy", ceph.uri(name), dst), 2, "are the same volume")
    assert ceph.read(name) == content
    assert ceph.watchers(name) == []
    with ceph.image(name) as image:
        assert list(image.lock_get_owners()) == []
        image.create_snap("s")
    try:  # a snapshot onto its own head is a roll-back, not a copy onto itself
        done = run("copy", ceph.uri(name, "s"), ceph.uri(name))
        assert done.returncode == 0, done.stderr
    finally:
        with ceph.image(name) as image:
            image.remove_snap("s")


# -- signals -------------------------------------------------------------------------------


def write_dense(path: Path, size: int) -> None:
    block = os.urandom(4 * MiB)
    with open(path, "wb") as out:
        for _ in range(size // len(block)):
            out.write(block)


def start_copy(*args: str) -> subprocess.Popen[str]:
    """An ``asyncopy copy --progress``, returned once its first progress report is out."""
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncopy", "copy", "--progress", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    child.stderr.read(1)  # the copy is under way
    return child


@pytest.mark.parametrize(
    ("stop", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["sigint", "sigterm"],
)
@pytest.mark.parametrize("kind", ["file", "rbd", "rbd-existing", "loop", "iscsi"])
def test_a_stopped_copy_cancels_cleans_up_and_says_so(
    ceph: Cluster,
    tmp_path: Path,
    make_loop: MakeLoop,
    make_lun: MakeLun,
    kind: str,
    stop: signal.Signals,
    code: int,
    word: str,
) -> None:
    """Ctrl-C or SIGTERM mid-copy: the conventional exit status, one line, a destination the
    copy created removed, and no lock, watcher or iSCSI session left."""
    src = tmp_path / "src.img"
    write_dense(src, 256 * MiB)
    name = ceph.name()
    if kind == "rbd-existing":
        ceph.create(name, 256 * MiB)
    lun = make_lun(256 * MiB) if kind == "iscsi" else None
    dst = {
        "file": str(tmp_path / "dst.img"),
        "loop": make_loop(256 * MiB)[0] if kind == "loop" else "",
        "iscsi": lun.url if lun is not None else "",
    }.get(kind, ceph.uri(name))
    child = start_copy(str(src), dst)
    child.send_signal(stop)
    _, errors = child.communicate(timeout=30)
    assert child.returncode == code, errors
    assert errors.splitlines()[-1].endswith(f"asyncopy: error: {word}")
    if kind == "file":
        assert not (tmp_path / "dst.img").exists()  # created by the copy: removed
    elif kind == "rbd":
        assert not ceph.exists(name)
    elif kind == "rbd-existing":
        assert unlocked(ceph, name)  # no dead client's exclusive lock
    elif lun is not None:
        assert iscsi_sessions(ceph.stack, lun) == ""


def iscsi_sessions(stack: devstack.Stack, lun: devstack.Lun) -> str:
    """tgtd's list of the connections to ``lun``'s target (empty: none)."""
    argv = ["tgtadm", "-C", str(stack.tgt_control_port), "--lld", "iscsi", "--op", "show"]
    shown = subprocess.run(
        [*argv, "--mode", "conn", "--tid", str(lun.tid)], capture_output=True, text=True, check=True
    )
    return shown.stdout.strip()


# -- bad input that used to cost a traceback, memory or a hang --------------------------------


def manifest_text(**fields: object) -> str:
    document: dict[str, object] = {
        "format": "asyncopy-manifest",
        "version": 1,
        "algorithm": "xxh3-128",
        "size": 4 * MiB,
        "chunk_size": 4 * MiB,
        "digests": ["00" * 16],
    }
    document.update(fields)
    return json.dumps(document)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (manifest_text(size=2**60, chunk_size=1), "expected 1152921504606846976 digests"),
        (manifest_text(size=2**27, chunk_size=1), "expected 134217728 digests"),
        (manifest_text(digests=[{"a": 1}]), "bad digest"),
        ("\xff\xfe", "not JSON"),
    ],
)
def test_a_bad_manifest_is_one_line_fast_and_small(tmp_path: Path, text: str, message: str) -> None:
    src, manifest = tmp_path / "src.img", tmp_path / "m.json"
    write_pattern(src, 4 * MiB, [(0, MiB)])
    manifest.write_text(text)
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *ASYNCOPY, "verify", "--manifest", str(manifest), str(src)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    *errors, peak_kib = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(errors) == 2, errors  # the error line, then GNU time's
    assert errors[0].startswith("asyncopy: error: manifest")
    assert message in errors[0]
    assert time.monotonic() - started < 10
    assert int(peak_kib) < 200 * 1024  # nothing allocated for what the file does not hold


def test_a_fifo_as_manifest_is_refused_without_blocking(tmp_path: Path) -> None:
    src, fifo = tmp_path / "src.img", tmp_path / "m.fifo"
    write_pattern(src, MiB, [(0, MiB)])
    os.mkfifo(fifo)
    one_error(run("verify", "--manifest", str(fifo), str(src), timeout=30), 2, "regular file")
    done = run("copy", "--manifest", str(fifo), str(src), str(tmp_path / "d"), timeout=30)
    one_error(done, 2, "regular file")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depth", "100000", "--max-inflight", "1T"], "depth 100000 is more than 1024"),
        (["--depth", "1000", "--max-inflight", "1000G", "--chunk-size", "1G"], "half of"),
    ],
)
def test_a_buffer_budget_past_the_machine_is_refused(
    tmp_path: Path, args: list[str], message: str
) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, MiB, [(0, MiB)])
    one_error(run("copy", *args, str(src), str(tmp_path / "d")), 2, message)
    assert not (tmp_path / "d").exists()


def test_a_manifest_that_cannot_be_written_fails_the_copy_and_removes_its_destination(
    tmp_path: Path,
) -> None:
    """ENOSPC when the manifest is written, after the whole copy: exit 1, and the destination
    the copy created goes, as after any other failure."""
    src, full = tmp_path / "src.img", tmp_path / "full"
    write_pattern(src, 8 * MiB, [(0, 8 * MiB)])
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        with open(full / "filler", "wb", buffering=0) as filler:  # the tmpfs full
            try:
                while True:
                    filler.write(b"f" * 4096)
            except OSError:
                pass
        done = run("copy", "--manifest", str(full / "m.json"), str(src), str(tmp_path / "d"))
        one_error(done, 1, "manifest", "cannot write")
        assert not (tmp_path / "d").exists()
        assert sorted(os.listdir(full)) == ["filler"]  # no temporary manifest left either
    finally:
        subprocess.run(["umount", str(full)], check=True)


@pytest.mark.parametrize(
    "url",
    [
        "iscsi://user%s3cr3t",
        "iscsi://user%s3cr3t@",
        "iscsi://user%s3/cr3t@host/iqn",
        "iscsi:user%s3cr3t@host/iqn/x",
        "iscsi://us@er%s3cr3t@host",
    ],
)
def test_a_malformed_iscsi_url_never_shows_its_password(tmp_path: Path, url: str) -> None:
    line = one_error(run("copy", url, str(tmp_path / "d")), 2, "expected iscsi://")
    for piece in ("s3cr3t", "s3", "cr3t"):
        assert piece not in line


# -- the cluster or the target failing mid-copy, on every path --------------------------------

CEPH_TIMEOUT = 3
FAULT_BOUND = 2 * CEPH_TIMEOUT + 5  # what --ceph-timeout's help promises, and start-up slack
VOLUME = 512 * MiB  # over a second to copy on any path: the fault lands mid-copy
PATHS = [
    ("rbd", "rbd"),
    ("rbd", "file"),
    ("file", "rbd"),
    ("rbd", "iscsi"),
    ("iscsi", "rbd"),
    ("rbd", "loop"),
    ("loop", "rbd"),
]


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dense") / "dense.img"
    write_dense(path, VOLUME)
    return path


def endpoint(
    kind: str, role: str, stack: devstack.Stack, dense: Path, tmp_path: Path, make_loop: MakeLoop
) -> str:
    """A source holding ``dense``'s bytes, or a destination of its size, of ``kind``."""
    if kind == "rbd":
        name = f"{role}-image"
        if role == "src":
            argv = ["rbd", "-c", stack.ceph_conf, "--no-progress", "import", str(dense)]
            subprocess.run([*argv, f"{stack.pool}/{name}"], check=True, timeout=TIMEOUT)
        return f"rbd:{stack.pool}/{name}:conf={stack.ceph_conf}"
    if kind == "file":
        return str(dense) if role == "src" else str(tmp_path / "dst.img")
    if kind == "loop":
        device, backing = make_loop(VOLUME)
        if role == "src":
            subprocess.run(["cp", str(dense), str(backing)], check=True)
        return device
    lun = devstack.add_lun(stack, role, VOLUME)
    if role == "src":
        subprocess.run(["cp", "--sparse=never", str(dense), lun.backing], check=True)
    return lun.url


def fault_mid_copy(
    stack: devstack.Stack, daemon: str, fault: signal.Signals, *args: str
) -> tuple[subprocess.Popen[str], str, float]:
    """Start a copy, send ``fault`` to the stack's ``daemon`` once it is under way; the
    copy, its stderr, and the seconds from the fault to its end."""
    child = start_copy(*args)
    (target,) = [started for started in stack.daemons if started.name == daemon]
    os.kill(target.pid, fault)
    started = time.monotonic()
    _, errors = child.communicate(timeout=60)
    return child, errors, time.monotonic() - started


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
@pytest.mark.parametrize(("src_kind", "dst_kind"), PATHS, ids=[f"{a}-{b}" for a, b in PATHS])
def test_the_osd_failing_mid_copy_fails_it_in_bounded_time(
    tmp_path: Path,
    make_loop: MakeLoop,
    dense: Path,
    src_kind: str,
    dst_kind: str,
    fault: signal.Signals,
) -> None:
    iscsi = "iscsi" in (src_kind, dst_kind)
    stack = devstack.up(tmp_path / "stack", osd_bytes=3 * VOLUME, iscsi=iscsi)
    try:
        src = endpoint(src_kind, "src", stack, dense, tmp_path, make_loop)
        dst = endpoint(dst_kind, "dst", stack, dense, tmp_path, make_loop)
        child, errors, elapsed = fault_mid_copy(
            stack, "ceph-osd", fault, "--ceph-timeout", str(CEPH_TIMEOUT), src, dst
        )
    finally:
        devstack.down(tmp_path / "stack")
    assert child.returncode == 1, errors
    line = errors.splitlines()[-1]
    assert line.startswith("asyncopy: error: ")
    assert re.search(
        r"failed on rbd:rbd/(src|dst)-image( at offset \d+ \(length \d+\))?: .*timed out", line
    )
    assert elapsed < FAULT_BOUND, line
    if dst_kind == "file":
        assert not (tmp_path / "dst.img").exists()  # created by the copy: removed
    if dst_kind == "rbd":  # the cluster cannot remove it: said so, never a silent leftover
        assert "the partial image rbd:rbd/dst-image was left behind" in line


# -- a head image written while it is read --------------------------------------------------

SLOW = ("--rate-limit", "64M/s")  # four seconds for 256 MiB: the reader holds the head


def test_a_writer_is_refused_while_a_copy_reads_the_head(ceph: Cluster, tmp_path: Path) -> None:
    name = ceph.name()
    content = ceph.create(name, 256 * MiB, [(i * 4 * MiB, 4 * MiB) for i in range(64)])
    reader = start_copy(*SLOW, "--verify", ceph.uri(name), str(tmp_path / "out.img"))
    small = tmp_path / "small.img"
    write_pattern(small, MiB, [(0, MiB)], seed=5)
    writer = run("copy", str(small), ceph.uri(name))
    _, errors = reader.communicate(timeout=TIMEOUT)
    one_error(writer, 2, f"destination rbd:rbd/{name} is in use by 1 other client")
    assert reader.returncode == 0, errors
    assert (tmp_path / "out.img").read_bytes() == content == ceph.read(name)


def test_a_head_written_by_another_client_fails_the_copy(ceph: Cluster, tmp_path: Path) -> None:
    """The other client takes the image's exclusive lock to write: the reader hears of it
    and fails rather than say 'verified' over bytes of no single moment."""
    name = ceph.name()
    ceph.create(name, 256 * MiB, [(i * 4 * MiB, 4 * MiB) for i in range(64)])
    reader = start_copy(*SLOW, "--verify", ceph.uri(name), str(tmp_path / "out.img"))
    with ceph.image(name) as image:  # python-rbd, as any librbd client
        image.write(b"moved", 200 * MiB)
    _, errors = reader.communicate(timeout=TIMEOUT)
    assert reader.returncode == 1, errors
    line = errors.splitlines()[-1]
    assert line.startswith(f"asyncopy: error: read failed on rbd:rbd/{name}: another client")
    assert "copy from a snapshot" in line
    assert "verified" not in errors
    assert not (tmp_path / "out.img").exists()
    assert ceph.watchers(name) == []


def test_without_exclusive_lock_a_client_holding_the_head_open_fails_the_copy(
    ceph: Cluster, tmp_path: Path
) -> None:
    """Without the exclusive-lock feature a writer takes no lock: any other client that has
    the head open when the reads end may have written it."""
    name = ceph.name()
    ceph.create(name, 256 * MiB, [(i * 4 * MiB, 4 * MiB) for i in range(64)], features=1)
    reader = start_copy(*SLOW, "--verify", ceph.uri(name), str(tmp_path / "out.img"))
    with ceph.image(name):  # python-rbd, open read-write as a writer would be
        _, errors = reader.communicate(timeout=TIMEOUT)
    assert reader.returncode == 1, errors
    line = errors.splitlines()[-1]
    assert line.startswith(f"asyncopy: error: read failed on rbd:rbd/{name}: 1 other client")
    assert "verified" not in errors
    assert not (tmp_path / "out.img").exists()


# -- the Cinder copy child: stopped, or its caller giving up -----------------------------------

KEYRING = "[client.admin]\n\tkey = AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"


def cinder_rbd(stack: devstack.Stack, name: str) -> dict[str, object]:
    """An rbd connection_info as Cinder's RBD driver gives it, with a keyring's contents."""
    port = stack.mon_host.rsplit(":", 1)[1].rstrip("]")
    data = {"name": f"{stack.pool}/{name}", "hosts": ["127.0.0.1"], "ports": [port]}
    return {"driver_volume_type": "rbd", "data": {**data, "keyring": KEYRING}}


def unlocked(ceph: Cluster, name: str) -> bool:
    """No client watches the image, and none holds its lock (checked in that order: the
    checking handle watches it too)."""
    if ceph.watchers(name):
        return False
    with ceph.image(name) as image:
        return list(image.lock_get_owners()) == []


def keyring_files() -> list[str]:
    return [name for name in os.listdir("/tmp") if name.startswith("asyncopy-keyring")]


def copying_child(ceph: Cluster, src: str, dst: str, size: int) -> subprocess.Popen[str]:
    """A Cinder copy child copying image ``src`` onto ``dst`` at 32 MiB/s, once it reports
    its first progress."""
    request = child_request(
        {"connection_info": cinder_rbd(ceph.stack, src)},
        {"connection_info": cinder_rbd(ceph.stack, dst)},
        size,
        None,
        target_is_zero=False,
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncopy.cinder.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(json.dumps({**request, "rate": 32 * MiB}) + "\n")
    child.stdin.flush()
    assert "progress" in json.loads(child.stdout.readline())  # copying
    return child


def test_sigterm_stops_the_cinder_child_cleanly(ceph: Cluster) -> None:
    src, dst = ceph.name(), ceph.name()
    ceph.create(src, 256 * MiB, [(i * 4 * MiB, 4 * MiB) for i in range(64)])
    ceph.create(dst, 256 * MiB)
    child = copying_child(ceph, src, dst, 256 * MiB)  # 8 s for the whole
    assert keyring_files() == []  # the key is in librados' memory only
    child.send_signal(signal.SIGTERM)
    _, errors = child.communicate(timeout=30)
    assert child.returncode == 143, errors
    assert errors.strip() == "terminated: the copy was cancelled and cleaned up"
    assert unlocked(ceph, dst)
    assert unlocked(ceph, src)


def test_a_caller_giving_up_stops_its_child_and_releases_the_volume(ceph: Cluster) -> None:
    """cinder-volume stopping kills the green thread waiting on a copy: the child is told
    to stop, cleans up and is gone; the destination keeps no dead client's lock."""
    src, dst = ceph.name(), ceph.name()
    ceph.create(src, 256 * MiB, [(i * 4 * MiB, 4 * MiB) for i in range(64)])
    ceph.create(dst, 256 * MiB)
    script = (
        "import eventlet; eventlet.monkey_patch()\n"
        "import json, os, sys\n"
        "from asyncopy.cinder import RateShare, copy_volume_data\n"
        "src, dst = json.loads(sys.argv[1])\n"
        "started = eventlet.event.Event()\n"
        "def progress(done):\n"
        "    if not started.ready(): started.send()\n"
        "copying = eventlet.spawn(copy_volume_data, src, dst, 256 << 20, progress=progress,\n"
        "                         rate=RateShare(32 << 20))\n"
        "started.wait()\n"
        "copying.kill()\n"
        "try:\n"
        "    copying.wait()  # the kill's clean-up runs in the killed green thread\n"
        "except BaseException:\n"
        "    pass\n"
        "print(json.dumps(sorted(os.listdir(f'/proc/{os.getpid()}/task'))))\n"
    )
    args = json.dumps([cinder_rbd(ceph.stack, src), cinder_rbd(ceph.stack, dst)])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    assert unlocked(ceph, dst)
    assert keyring_files() == []
    children = subprocess.run(
        ["pgrep", "-f", "asyncopy.cinder.child"], capture_output=True, text=True, check=False
    )
    assert children.stdout == ""


ISCSI_TIMEOUT = 3
ISCSI_BOUND = 2 * ISCSI_TIMEOUT + 5  # a command's timeout, the logout's, and start-up slack


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"])
@pytest.mark.parametrize("direction", ["to-lun", "from-lun"])
def test_tgtd_failing_mid_copy_fails_it_in_bounded_time(
    tmp_path: Path, dense: Path, direction: str, fault: signal.Signals
) -> None:
    stack = devstack.up(tmp_path / "stack", osd_bytes=64 * MiB)
    try:
        lun = devstack.add_lun(stack, "lun", VOLUME)
        output = tmp_path / "out.img"
        if direction == "to-lun":
            src, dst = str(dense), lun.url
        else:
            subprocess.run(["cp", "--sparse=never", str(dense), lun.backing], check=True)
            src, dst = lun.url, str(output)
        child, errors, elapsed = fault_mid_copy(
            stack, "tgtd", fault, "--iscsi-timeout", str(ISCSI_TIMEOUT), src, dst
        )
    finally:
        devstack.down(tmp_path / "stack")
    assert child.returncode == 1, errors
    line = errors.splitlines()[-1]
    kind = "write" if direction == "to-lun" else "read"
    pattern = rf"asyncopy: error: {kind} failed on {re.escape(lun.url)} at offset \d+ "
    assert re.match(pattern, line), line
    assert elapsed < ISCSI_BOUND, line
    assert not output.exists()  # created by the copy: removed


# -- a full destination, and a lossy messenger ----------------------------------------------


@pytest.mark.parametrize("source", ["file", "rbd"])
def test_a_destination_filesystem_filling_up_fails_the_copy(
    ceph: Cluster, tmp_path: Path, source: str
) -> None:
    """ENOSPC mid-copy: exit 1, the offset named, the half-written file removed."""
    full = tmp_path / "small-fs"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(full)], check=True)
    try:
        src = tmp_path / "src.img"
        write_dense(src, 64 * MiB)
        if source == "rbd":
            name = ceph.name()
            subprocess.run(
                ["rbd", "-c", ceph.conf, "--no-progress", "import", str(src), f"rbd/{name}"],
                check=True,
                timeout=TIMEOUT,
            )
        spec = str(src) if source == "file" else ceph.uri(name)
        done = run("copy", spec, str(full / "dst.img"))
        line = one_error(done, 1, "write failed on", "at offset")
        assert "No space left on device" in line
        assert os.listdir(full) == []
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_a_lossy_messenger_still_gives_a_verified_copy(ceph: Cluster, tmp_path: Path) -> None:
    """librados' own fault injection drops a connection every ~50 messages: it reconnects and
    resends, and the copy is whole. (Set in a ceph.conf: a URI takes no such option.)"""
    name = ceph.name()
    content = ceph.create(name, 64 * MiB, [(i * 4 * MiB, 4 * MiB) for i in range(0, 16, 2)])
    conf = tmp_path / "lossy.conf"
    conf.write_text(Path(ceph.conf).read_text() + "\n[client]\nms inject socket failures = 50\n")
    lossy = f"rbd:{ceph.pool}/{name}:conf={conf}"
    done = run("copy", "--verify", lossy, str(tmp_path / "out.img"))
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    assert (tmp_path / "out.img").read_bytes() == content
    target = ceph.name()
    done = run(
        "copy",
        "--verify",
        str(tmp_path / "out.img"),
        f"rbd:{ceph.pool}/{target}:conf={conf}",
    )
    assert done.returncode == 0, done.stderr
    assert ceph.read(target) == content


# -- secrets on the command line --------------------------------------------------------------


def test_a_secret_on_the_command_line_is_warned_of_and_never_shown(
    ceph: Cluster, tmp_path: Path
) -> None:
    name = ceph.name()
    ceph.create(name, MiB, [(0, MiB)])
    keyed = f"{ceph.uri(name)}:key=AQBmZXR0bGVkaXN0aGVrZXkxMjM0NQ=="
    done = run("copy", keyed, str(tmp_path / "out.img"))
    assert done.returncode == 0, done.stderr  # it still works
    (warning,) = done.stderr.splitlines()
    assert warning.startswith(f"asyncopy: warning: rbd:rbd/{name}: a key on the command line")
    assert "keyring" in warning
    assert "AQBmZXR0" not in warning
    chap = "iscsi://user%s3cr3t@127.0.0.1:1/iqn.2026-01.test:none/1"
    done = run("copy", chap, str(tmp_path / "out2.img"))
    assert done.returncode == 1  # nothing listens there
    warning, error = done.stderr.splitlines()
    assert "LIBISCSI_CHAP_PASSWORD" in warning
    assert error.startswith("asyncopy: error: connect failed on iscsi://127.0.0.1:1/")
    assert "s3cr3t" not in done.stderr
    assert not (tmp_path / "out2.img").exists()
