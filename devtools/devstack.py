"""A private dev stack: a single-node Ceph cluster and a tgtd iSCSI target, on loopback.

``up(DIR)`` boots one monitor and one memstore OSD (the pool ``rbd`` initialised) and a tgtd
target, all listening on 127.0.0.1 on free ports with every file under DIR, and writes
``DIR/devstack.json``. ``down(DIR)`` stops exactly the processes ``up`` started, by pid (and
start time, so a reused pid is never hit), then removes DIR. Both are used by the tests, the
demo and the benchmarks, and from the command line::

    python -m devtools.devstack up DIR [--osd-size 4G] [--no-iscsi]
    python -m devtools.devstack status DIR
    python -m devtools.devstack down DIR

What made the cluster boot in seconds and clients never hang: the monmap and ``mon host``
both name the v2 address; no authentication; pool size one; memstore (RAM) sized for the
work; and client timeouts on every librados call (a full OSD otherwise blocks writes forever).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asyncopy.core.sizes import parse_size
from asyncopy.errors import UsageError
from devtools.daemons import Daemon, alive, free_port, load_state, log_tails, save_state, spawn
from devtools.daemons import stop as stop_daemon

STATE_FILE = "devstack.json"
POOL = "rbd"
DEFAULT_OSD_BYTES = 4 << 30
BOOT_TIMEOUT = 60.0
CLIENT_TIMEOUT = 10

# command -> Debian package
REQUIRED = {
    "ceph-mon": "ceph-mon",
    "monmaptool": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "rbd": "ceph-common",
    "tgtd": "tgt",
    "tgtadm": "tgt",
}


class DevstackError(Exception):
    """The dev stack could not be started, inspected or stopped."""


@dataclass
class Stack:
    """What ``up`` wrote to ``devstack.json``."""

    dir: str
    ceph_conf: str
    pool: str
    mon_host: str
    iscsi_portal: str | None
    tgt_control_port: int | None
    daemons: list[Daemon] = field(default_factory=list)

    def save(self) -> None:
        save_state(Path(self.dir) / STATE_FILE, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> Stack:
        path = directory / STATE_FILE
        try:
            fields, daemons = load_state(path)
            return cls(**fields, daemons=daemons)
        except FileNotFoundError as exc:
            raise DevstackError(f"{directory}: no dev stack here ({STATE_FILE} missing)") from exc
        except (ValueError, TypeError) as exc:
            raise DevstackError(f"{path}: not a dev stack state file ({exc})") from exc


def missing_packages() -> list[str]:
    """Debian packages whose commands are missing, in a stable order."""
    missing = {pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd) is None}
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        missing.update({"python3-rados", "python3-rbd"})
    return sorted(missing)


def up(
    directory: Path,
    *,
    osd_bytes: int = DEFAULT_OSD_BYTES,
    iscsi: bool = True,
    timeout: float = BOOT_TIMEOUT,
) -> Stack:
    """Boot the stack under ``directory`` (created; must not hold a stack) and return it."""
    missing = missing_packages()
    if missing:
        raise DevstackError(f"missing Debian packages: {' '.join(missing)}")
    directory = directory.resolve()
    if (directory / STATE_FILE).exists():
        raise DevstackError(f"{directory}: a dev stack is already there; run down first")
    if directory.exists() and any(directory.iterdir()):
        raise DevstackError(f"{directory}: not empty; a dev stack needs a directory of its own")
    for sub in ("run", "log", "mon", "osd"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    mon_port = free_port()
    stack = Stack(
        dir=str(directory),
        ceph_conf=str(directory / "ceph.conf"),
        pool=POOL,
        mon_host=f"[v2:127.0.0.1:{mon_port}]",
        iscsi_portal=None,
        tgt_control_port=None,
    )
    stack.save()  # from here on, down finds what to stop and may remove the directory
    try:
        _boot_ceph(stack, osd_bytes, time.monotonic() + timeout)
        if iscsi:
            _boot_tgtd(stack, time.monotonic() + timeout)
    except BaseException as failure:
        try:
            stop(stack)
        except DevstackError as stop_error:
            failure.add_note(str(stop_error))
        raise
    stack.save()
    return stack


def down(directory: Path) -> None:
    """Stop what ``up`` started there and remove the directory; nothing there is fine.

    A directory without a dev stack's state file is left alone: it is not ours.
    """
    directory = directory.resolve()
    if not directory.exists():
        return
    if not (directory / STATE_FILE).exists():
        raise DevstackError(f"{directory}: no dev stack here ({STATE_FILE} missing); left alone")
    stop(Stack.load(directory))
    shutil.rmtree(directory, ignore_errors=True)


def status(directory: Path) -> dict[str, Any]:
    """Which daemons are alive, and whether the cluster answers I/O."""
    stack = Stack.load(directory.resolve())
    daemons = {daemon.name: alive(daemon) for daemon in stack.daemons}
    try:
        _probe_io(stack, CLIENT_TIMEOUT)
        answers = True
    except DevstackError:
        answers = False
    return {**asdict(stack), "alive": daemons, "ceph_answers_io": answers}


def stop(stack: Stack) -> None:
    """Stop every daemon of the stack: SIGTERM, then SIGKILL if it lingers."""
    stuck = []
    for daemon in reversed(stack.daemons):
        if daemon.name == "tgtd" and alive(daemon):
            _shut_tgtd(stack)
        if not stop_daemon(daemon):
            stuck.append(f"{daemon.name} (pid {daemon.pid})")
        elif daemon.name == "tgtd" and stack.tgt_control_port is not None:
            for leftover in (
                f"socket.{stack.tgt_control_port}",
                f"socket.{stack.tgt_control_port}.lock",
            ):
                Path("/run/tgtd", leftover).unlink(missing_ok=True)  # tgtd leaves them behind
    if stuck:
        raise DevstackError(f"could not stop {', '.join(stuck)}")


def client_conf(timeout: int = CLIENT_TIMEOUT) -> dict[str, str]:
    """librados options that turn a hang (cluster down or full) into an error."""
    return {
        "rados_osd_op_timeout": str(timeout),
        "rados_mon_op_timeout": str(timeout),
        "client_mount_timeout": str(timeout),
    }


# -- Ceph ---------------------------------------------------------------------------------


def _ceph_conf(stack: Stack, fsid: str, osd_bytes: int) -> str:
    d = stack.dir
    return f"""[global]
fsid = {fsid}
mon host = {stack.mon_host}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = {d}/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
log to stderr = false
mon data = {d}/mon/$id
osd data = {d}/osd/$id
osd objectstore = memstore
memstore device bytes = {osd_bytes}
"""


def _boot_ceph(stack: Stack, osd_bytes: int, deadline: float) -> None:
    d = Path(stack.dir)
    fsid = str(uuid.uuid4())
    Path(stack.ceph_conf).write_text(_ceph_conf(stack, fsid, osd_bytes))
    (d / "keyring").write_text("")
    conf = ["-c", stack.ceph_conf]
    monmap = str(d / "monmap")
    _run(["monmaptool", "--create", "--addv", "a", stack.mon_host, "--fsid", fsid, monmap], d)
    _run(["ceph-mon", *conf, "--mkfs", "-i", "a", "--monmap", monmap], d)
    _start(stack, "ceph-mon", ["ceph-mon", *conf, "-f", "-i", "a"])
    osd_uuid = str(uuid.uuid4())
    osd_id = _mon_command(stack, {"prefix": "osd create", "uuid": osd_uuid}, deadline).strip()
    (d / "osd" / osd_id).mkdir()
    _run(["ceph-osd", *conf, "--mkfs", "-i", osd_id, "--osd-uuid", osd_uuid], d)
    _start(stack, "ceph-osd", ["ceph-osd", *conf, "-f", "-i", osd_id])
    _mon_command(stack, {"prefix": "osd pool create", "pool": stack.pool, "pg_num": 8}, deadline)
    _until(deadline, stack, lambda: _init_pool(stack))


def _mon_command(stack: Stack, command: dict[str, Any], deadline: float) -> str:
    """Run a monitor command, retrying until the monitor answers or the deadline passes."""
    result: list[str] = []

    def attempt() -> None:
        with _cluster(stack, CLIENT_TIMEOUT) as cluster:
            ret, out, err = cluster.mon_command(json.dumps(command), b"", timeout=CLIENT_TIMEOUT)
        if ret != 0:
            raise DevstackError(f"ceph {command['prefix']}: {err or os.strerror(-ret)}")
        result.append(out.decode())

    _until(deadline, stack, attempt)
    return result[0]


def _init_pool(stack: Stack) -> None:
    import rbd

    with _cluster(stack, CLIENT_TIMEOUT) as cluster, cluster.open_ioctx(stack.pool) as ioctx:
        rbd.RBD().pool_init(ioctx, True)
    _probe_io(stack, CLIENT_TIMEOUT)


def _probe_io(stack: Stack, timeout: int) -> None:
    """Write and read back one object; DevstackError if the cluster does not answer."""
    import rados

    try:
        with _cluster(stack, timeout) as cluster, cluster.open_ioctx(stack.pool) as ioctx:
            ioctx.write_full("asyncopy-devstack-probe", b"ok")
            if ioctx.read("asyncopy-devstack-probe") != b"ok":
                raise DevstackError("the probe object read back wrong")
    except rados.Error as exc:
        raise DevstackError(f"ceph does not answer I/O: {exc}") from exc


@contextmanager
def _cluster(stack: Stack, timeout: int) -> Iterator[Any]:
    """A short-lived librados connection with timeouts."""
    import rados

    handle = rados.Rados(conffile=stack.ceph_conf, conf=client_conf(timeout))
    try:
        handle.connect(timeout=timeout)
        yield handle
    finally:
        handle.shutdown()


# -- tgtd ---------------------------------------------------------------------------------


def _boot_tgtd(stack: Stack, deadline: float) -> None:
    port, control = free_port(), _free_control_port()
    args = ["tgtd", "-f", "--iscsi", f"portal=127.0.0.1:{port}", "--control-port", str(control)]
    _start(stack, "tgtd", args)
    stack.iscsi_portal = f"127.0.0.1:{port}"
    stack.tgt_control_port = control
    show = ["tgtadm", "-C", str(control), "--lld", "iscsi", "--op", "show", "--mode", "target"]
    _until(deadline, stack, lambda: _run(show, Path(stack.dir)))


def _free_control_port() -> int:
    """tgtd's management channel is the Unix socket /run/tgtd/socket.N, N below 32768."""
    rng = random.Random()
    while True:
        number = rng.randrange(1024, 32768)
        if not Path(f"/run/tgtd/socket.{number}").exists():
            return number


def _shut_tgtd(stack: Stack) -> None:
    """tgtd ignores SIGTERM: delete its targets, then ask it to exit."""
    control = str(stack.tgt_control_port)
    base = ["tgtadm", "-C", control, "--lld", "iscsi"]
    with suppress(DevstackError):
        shown = _run([*base, "--op", "show", "--mode", "target"], Path(stack.dir))
        for tid in re.findall(r"^Target (\d+):", shown, re.MULTILINE):
            _run(
                [*base, "--op", "delete", "--mode", "target", "--tid", tid, "--force"],
                Path(stack.dir),
            )
        _run([*base, "--op", "delete", "--mode", "system"], Path(stack.dir))


@dataclass(frozen=True)
class Lun:
    """A target with one file-backed LUN in the stack's tgtd."""

    tid: int
    iqn: str
    backing: str
    url: str  # iscsi://127.0.0.1:PORT/IQN/1 (no credentials)


def add_lun(
    stack: Stack,
    name: str,
    size: int,
    *,
    thin: bool = True,
    read_only: bool = False,
    chap: tuple[str, str] | None = None,
    block_size: int = 512,
) -> Lun:
    """Create a target ``iqn...:NAME`` with LUN 1 over a new sparse file of ``size`` bytes.

    ``thin`` reports logical block provisioning (LBPME and LBPRZ: unmapped blocks read as
    zeros, GET LBA STATUS and UNMAP work); ``read_only`` refuses writes. ``chap`` is (user,
    secret) for CHAP logins; tgtd's accounts are shared by its targets, and an account made
    before keeps its first secret.
    """
    if stack.iscsi_portal is None or stack.tgt_control_port is None:
        raise DevstackError(f"{stack.dir}: this dev stack has no iSCSI target")
    if not re.fullmatch(r"[a-z0-9.-]+", name):
        raise DevstackError(f"LUN name {name!r}: use lower-case letters, digits, '.' and '-'")
    directory = Path(stack.dir)
    (directory / "luns").mkdir(exist_ok=True)
    backing = directory / "luns" / f"{name}.img"
    with open(backing, "xb") as out:
        out.truncate(size)
    tid = _next_tid(stack)
    iqn = f"iqn.2026-11.org.openstack.asyncopy:{name}"
    base = ["tgtadm", "-C", str(stack.tgt_control_port), "--lld", "iscsi"]
    target = ["--tid", str(tid)]
    lun = [*target, "--lun", "1"]
    commands = [
        ["--op", "new", "--mode", "target", *target, "-T", iqn],
        [
            "--op",
            "new",
            "--mode",
            "logicalunit",
            *lun,
            "-b",
            str(backing),
            "--blocksize",
            str(block_size),
        ],
        ["--op", "bind", "--mode", "target", *target, "-I", "127.0.0.1"],
    ]
    for param, wanted in (("thin_provisioning", thin), ("readonly", read_only)):
        if wanted:
            params = ["--params", f"{param}=1"]
            commands.append(["--op", "update", "--mode", "logicalunit", *lun, *params])
    if chap is not None:
        user, secret = chap
        if user not in _run([*base, "--op", "show", "--mode", "account"], directory).split():
            commands.append(
                ["--op", "new", "--mode", "account", "--user", user, "--password", secret]
            )
        commands.append(["--op", "bind", "--mode", "account", *target, "--user", user])
    for command in commands:
        _run([*base, *command], directory)
    return Lun(tid, iqn, str(backing), f"iscsi://{stack.iscsi_portal}/{iqn}/1")


def remove_lun(stack: Stack, lun: Lun) -> None:
    """Delete the target and its backing file; a target already gone is fine."""
    base = ["tgtadm", "-C", str(stack.tgt_control_port), "--lld", "iscsi"]
    if lun.tid not in _tids(stack):
        Path(lun.backing).unlink(missing_ok=True)
        return
    _run(
        [*base, "--op", "delete", "--mode", "target", "--tid", str(lun.tid), "--force"],
        Path(stack.dir),
    )
    Path(lun.backing).unlink(missing_ok=True)


def _next_tid(stack: Stack) -> int:
    return max(_tids(stack), default=0) + 1


def _tids(stack: Stack) -> set[int]:
    base = ["tgtadm", "-C", str(stack.tgt_control_port), "--lld", "iscsi"]
    shown = _run([*base, "--op", "show", "--mode", "target"], Path(stack.dir))
    return {int(tid) for tid in re.findall(r"^Target (\d+):", shown, re.MULTILINE)}


# -- processes ----------------------------------------------------------------------------

_BACKTRACE = re.compile(r"^\s*\d+: ")


def _run(args: Sequence[str], directory: Path) -> str:
    """Run a setup command; its failure is a DevstackError with its output."""
    try:
        done = subprocess.run(
            args, cwd=directory, capture_output=True, text=True, timeout=CLIENT_TIMEOUT * 3
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevstackError(f"{args[0]}: {exc}") from exc
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        detail = [line for line in lines if not _BACKTRACE.match(line)][-3:]
        logs = log_tails(directory)
        raise DevstackError(
            f"{' '.join(args[:3])}: exit {done.returncode}: {' / '.join(detail)}{logs}"
        )
    return done.stdout


def _start(stack: Stack, name: str, args: Sequence[str]) -> None:
    """Start a daemon and record it at once, so that ``down`` finds it whatever happens next."""
    stack.daemons.append(spawn(name, args, Path(stack.dir)))
    stack.save()


def _not_yet() -> tuple[type[Exception], ...]:
    """What a daemon that is still starting answers with: anything else is a bug, raised."""
    import rados
    import rbd

    return (DevstackError, OSError, rados.Error, rbd.Error)


def _until(deadline: float, stack: Stack, attempt: Any) -> None:
    """Call ``attempt`` until it succeeds; at the deadline fail with the daemons' log tails."""
    while True:
        try:
            attempt()
            return
        except _not_yet() as exc:
            dead = [d.name for d in stack.daemons if not alive(d)]
            if dead or time.monotonic() >= deadline:
                why = f"{', '.join(dead)} exited" if dead else "timed out"
                tails = _log_tails(stack)
                raise DevstackError(f"dev stack did not start ({why}): {exc}{tails}") from exc
            time.sleep(0.5)


def _log_tails(stack: Stack, lines: int = 5) -> str:
    return log_tails(Path(stack.dir), lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.devstack up|status|down DIR``: 0 done (``status``: all alive and
    answering I/O), 1 not, 2 an error, in one line."""
    parser = argparse.ArgumentParser(prog="python -m devtools.devstack", description=__doc__)
    parser.add_argument("action", choices=("up", "status", "down"))
    parser.add_argument("dir", type=Path, help="directory holding all of the stack's state")
    parser.add_argument("--osd-size", default="4G", help="memstore OSD capacity (RAM, as written)")
    parser.add_argument("--no-iscsi", action="store_true", help="start Ceph only")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            osd_bytes = parse_size(args.osd_size, "OSD size")
            stack = up(args.dir, osd_bytes=osd_bytes, iscsi=not args.no_iscsi)
            print(json.dumps(asdict(stack), indent=2))
        elif args.action == "status":
            state = status(args.dir)
            print(json.dumps(state, indent=2))
            return 0 if state["ceph_answers_io"] and all(state["alive"].values()) else 1
        else:
            down(args.dir)
    except (DevstackError, UsageError) as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
