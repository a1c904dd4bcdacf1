"""Cinder's own generic migration, RBD -> NFS -> RBD, run as cinder-volume runs it.

``python -m benchmarks.cinder_migration --ceph-conf PATH --pool POOL --workdir DIR [--manager
stock|asyncopy] [--size-gib 1] [--bps-limit N] [--interrupt]``: one process, monkey-patched by
eventlet first (as ``cinder-volume``), configures Cinder (a sqlite database in DIR, synced as
``cinder-manage db sync`` does; oslo.messaging's fake transport; ``enabled_backends =
ceph,nfs``) and starts one ``cinder.service.Service`` per backend as ``cinder/cmd/volume.py``
does (``init_host`` runs). There is no scheduler: the source backend's
``VolumeManager.migrate_volume`` is called with what the scheduler would pass, with
``force_host_copy`` so that the generic path (``_migrate_volume_generic`` ->
``_copy_volume_data``) runs. ``--manager asyncopy`` adds the one line an operator writes,
``[DEFAULT] volume_manager = asyncopy.cinder.manager.VolumeManager``; nothing else differs.

The NFS backend is Cinder's ``NfsDriver`` over a local directory: os-brick's
``RemoteFsClient`` does not mount a share whose mount point (``nfs_mount_point_base/<md5 of
the share>``) /proc/mounts lists already, so a bind mount of DIR/export there stands in for
the export. Temporary files of this process and its children go to DIR/tmp (``TMPDIR``), so
that what the copies leave behind is told apart from what other processes do.

A volume is created through the RBD backend's manager, scattered data is written into it with
librbd, and it is migrated there and back while a green thread polls its metadata for
``migration_progress``. The last line on stdout is one JSON object: per direction the wall
seconds of ``migrate_volume``, the migration status, the new host, whether the destination's
xxh3-128 digest (every byte) equals the original's, the allocated bytes of source and
destination, the progress values seen; then what is left behind. On every path the volumes
are deleted through Cinder, the services stopped and the bind mount undone. Cinder's log is
DIR/cinder-volume.log; the report also holds the figures asyncopy's manager logged per copy.

``--bps-limit N`` sets both backends' ``volume_copy_bps_limit``. ``--interrupt`` runs only the
first migration, in a green thread killed once the progress metadata shows the copy under way
(the way a stopping service ends its green threads), and reports what is left attached or
running right after: the copy child, the source image's watchers, the progress metadata.
"""

from __future__ import annotations

from cinder import monkey_patch

monkey_patch.patch()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

warnings.simplefilter("ignore")

import eventlet  # noqa: E402
import rados  # noqa: E402
import rbd  # noqa: E402
import xxhash  # noqa: E402
from oslo_config import cfg  # noqa: E402

from benchmarks.cinder_runs import mounts_under  # noqa: E402
from devtools.devstack import client_conf  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
HOST = "migration"
BACKENDS = ("ceph", "nfs")
SHARE = "127.0.0.1:/export/cinder-migration"  # never mounted: a bind mount stands in
PROGRESS_KEY = "migration_progress"
POLL_SECONDS = 0.05
SETTLE_SECONDS = 60.0  # for the deletion that Cinder casts at the end of a migration
RUNS = 30
DATA_BYTES = 12 * MiB
READ_SIZE = 4 * MiB
TEMP_PREFIXES = ("asyncopy-", "brickrbd_")  # asyncopy's keyrings, os-brick's ceph.conf files
CGROUP = f"asyncopy-harness-{os.getpid()}"  # the blkio cgroup Cinder's throttle creates
COPY_LINE = re.compile(
    r"asyncopy copied volume (?P<src>\S+) to (?P<dest>\S+): (?P<total>\d+) bytes in "
    r"(?P<seconds>[\d.]+) s \((?P<read>\d+) read, (?P<written>\d+) written, "
    r"(?P<zeroed>\d+) zeroed, (?P<skipped>\d+) skipped\), "
    r"verified (?P<verified>\w+), rate limit (?P<limit>\w+) B/s"
)
MANAGERS = {
    "stock": "cinder.volume.manager.VolumeManager",
    "asyncopy": "asyncopy.cinder.manager.VolumeManager",
}

# NfsDriver.do_setup runs ``mount.nfs`` once, with no arguments and its exit status ignored,
# only to see that the command exists. Where nfs-common is not installed, this stand-in
# answers that probe. The share is bind-mounted beforehand, so nothing mounts through it; if
# anything ever tries, it fails loudly.
MOUNT_NFS_STUB = """#!/bin/sh
if [ "$#" -eq 0 ]; then
    echo "usage: mount.nfs remotetarget dir [-o nfsoptions] (a stand-in: never mounts)" >&2
    exit 1
fi
echo "mount.nfs stand-in: refusing to mount $*: the share must be bind-mounted" >&2
exit 32
"""


@dataclass
class Direction:
    """One migration's figures."""

    source: str
    destination: str
    expected_host: str = ""
    seconds: float = 0.0
    migration_status: str | None = None
    host: str | None = None
    digest_equal: bool = False
    source_allocated: int = 0
    destination_allocated: int = 0
    polls: int = 0
    progress_seen: bool = False
    progress_samples: list[str] = field(default_factory=list)
    progress_after: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Work:
    """Where everything of one run lives under DIR."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "cinder.conf"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def mount_base(self) -> Path:
        return self.root / "mnt"

    @property
    def share_mount(self) -> Path:
        digest = hashlib.md5(SHARE.encode(), usedforsecurity=False).hexdigest()
        return self.mount_base / digest

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def bin(self) -> Path:
        return self.root / "bin"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cinder_migration")
    parser.add_argument("--ceph-conf", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--workdir", required=True, type=Path, help="absent or empty")
    parser.add_argument("--manager", choices=sorted(MANAGERS), default="stock")
    parser.add_argument("--size-gib", type=int, default=1)
    parser.add_argument("--bps-limit", type=int, default=0, help="volume_copy_bps_limit")
    parser.add_argument("--interrupt", action="store_true", help="kill the first migration")
    args = parser.parse_args(argv)
    if args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"{args.workdir}: not empty")
    return args


def cinder_conf(work: Work, ceph_conf: str, pool: str, manager: str, bps_limit: int) -> str:
    """cinder.conf for both backends. rbd_user stays unset: the cluster has no auth, and with
    a user set os-brick's RBD connector looks for that user's keyring in /etc/ceph."""
    manager_line = "" if manager == "stock" else f"volume_manager = {MANAGERS[manager]}\n"
    throttle = f"volume_copy_bps_limit = {bps_limit}\nvolume_copy_blkio_cgroup_name = {CGROUP}\n"
    throttle = throttle if bps_limit else ""
    return f"""[DEFAULT]
host = {HOST}
state_path = {work.root / "state"}
transport_url = fake:/
enabled_backends = {",".join(BACKENDS)}
log_file = {work.root / "cinder-volume.log"}
debug = true
{manager_line}
[database]
connection = sqlite:///{work.root / "cinder.sqlite"}

[oslo_concurrency]
lock_path = {work.root / "locks"}

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_ceph_conf = {ceph_conf}
rbd_pool = {pool}
{throttle}
[nfs]
volume_driver = cinder.volume.drivers.nfs.NfsDriver
volume_backend_name = nfs
nfs_shares_config = {work.root / "nfs_shares"}
nfs_mount_point_base = {work.mount_base}
nfs_sparsed_volumes = true
{throttle}
[privsep_osbrick]
helper_command = {privsep_helper(work)}

[cinder_sys_admin]
helper_command = {privsep_helper(work)}
"""


def privsep_helper(work: Work) -> str:
    """The privsep daemons' command: this environment's privsep-helper, without sudo.

    Unset, oslo.privsep runs ``sudo privsep-helper``, and sudo's secure PATH does not reach a
    virtualenv; this process is root already, so the helper is run as it is.
    """
    return f"{Path(sys.executable).parent / 'privsep-helper'} --config-file {work.conf}"


def prepare(work: Work, ceph_conf: str, pool: str, manager: str, bps_limit: int) -> None:
    """Write the configuration and the share list; the mount.nfs stand-in if needed."""
    for directory in (work.export, work.share_mount, work.tmp, work.bin):
        directory.mkdir(parents=True, exist_ok=True)
    for name in ("state", "locks"):
        (work.root / name).mkdir(exist_ok=True)
    (work.root / "nfs_shares").write_text(SHARE + "\n")
    work.conf.write_text(cinder_conf(work, ceph_conf, pool, manager, bps_limit))
    if shutil.which("mount.nfs") is None:
        stub = work.bin / "mount.nfs"
        stub.write_text(MOUNT_NFS_STUB)
        stub.chmod(0o755)
        os.environ["PATH"] = f"{work.bin}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["TMPDIR"] = str(work.tmp)
    tempfile.tempdir = str(work.tmp)


@contextlib.contextmanager
def bind_mount(source: Path, target: Path) -> Iterator[None]:
    """``mount --bind``, undone on the way out whatever happens."""
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=False, capture_output=True)


# -- what is measured, outside Cinder ------------------------------------------------------


@contextlib.contextmanager
def rbd_ioctx(ceph_conf: str, pool: str) -> Iterator[Any]:
    cluster = rados.Rados(conffile=ceph_conf, conf=client_conf(30))
    try:
        cluster.connect(timeout=30)
        with cluster.open_ioctx(pool) as ioctx:
            yield ioctx
    finally:
        cluster.shutdown()


@contextlib.contextmanager
def rbd_image(ceph_conf: str, pool: str, name: str) -> Iterator[Any]:
    with rbd_ioctx(ceph_conf, pool) as ioctx, rbd.Image(ioctx, name) as image:
        yield image


def write_scattered(image: Any, size: int, seed: int = 7) -> None:
    """DATA_BYTES of random bytes in RUNS runs at the starts of random objects, the last
    object written whole (so the volume's last 4 KiB hold data).

    librbd's diff_iterate reports a written object from its start to the end of its last
    write (an OSD object has no holes that librbd sees): with every run at an object's start,
    the extents it reports are the bytes written, and RBD and file allocations compare.
    """
    rng = random.Random(seed)
    object_size = int(image.stat()["obj_size"])
    last = size // object_size - 1
    image.write(rng.randbytes(object_size), last * object_size)
    run = (DATA_BYTES - object_size) // (RUNS - 1) // 4096 * 4096
    for index in sorted(rng.sample(range(last), RUNS - 1)):
        image.write(rng.randbytes(run), index * object_size)


def digest_reads(read: Callable[[int, int], bytes], size: int) -> str:
    """xxh3-128 over ``size`` bytes read in READ_SIZE pieces."""
    hasher = xxhash.xxh3_128()
    for offset in range(0, size, READ_SIZE):
        length = min(READ_SIZE, size - offset)
        chunk = read(offset, length)
        if len(chunk) != length:
            raise RuntimeError(f"short read at {offset}: {len(chunk)} of {length} bytes")
        hasher.update(chunk)
    return str(hasher.hexdigest())


class Backends:
    """A volume's bytes and allocation on either backend, and what else is on them."""

    def __init__(self, work: Work, ceph_conf: str, pool: str, size: int) -> None:
        self.work, self.ceph_conf, self.pool, self.size = work, ceph_conf, pool, size

    def digest(self, backend: str, name: str) -> str:
        if backend == "ceph":
            with rbd_image(self.ceph_conf, self.pool, name) as image:
                return digest_reads(lambda offset, length: image.read(offset, length), self.size)
        with open(self.work.export / name, "rb") as handle:
            fd = handle.fileno()
            return digest_reads(lambda offset, length: os.pread(fd, length, offset), self.size)

    def allocated(self, backend: str, name: str) -> int:
        """Bytes in diff_iterate's extents for RBD; st_blocks for a file."""
        if backend == "nfs":
            return os.stat(self.work.export / name).st_blocks * 512
        extents: list[int] = []
        with rbd_image(self.ceph_conf, self.pool, name) as image:
            image.diff_iterate(
                0, image.size(), None, lambda _o, length, exists: extents.append(length * exists)
            )
        return sum(extents)

    def images(self) -> set[str]:
        with rbd_ioctx(self.ceph_conf, self.pool) as ioctx:
            return set(rbd.RBD().list(ioctx))

    def watchers(self, name: str) -> list[str]:
        """The clients holding an RBD image open (this one, only to ask, not counted)."""
        with rbd_image(self.ceph_conf, self.pool, name) as image:
            return [str(watcher["addr"]) for watcher in image.watchers_list()][:-1]

    def share_files(self) -> set[str]:
        return {entry.name for entry in self.work.export.iterdir()}


def child_processes() -> list[str]:
    """pid and command line of each live child of this process."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.append(f"{entry} {cmdline.decode(errors='replace').strip()}")
    return children


def temp_files(directory: str, prefixes: tuple[str, ...] = ("",)) -> set[str]:
    return {name for name in os.listdir(directory) if name.startswith(prefixes)}


def copy_figures(log: Path) -> list[dict[str, Any]]:
    """The one line asyncopy's manager logs per copy, parsed."""
    if not log.exists():
        return []
    return [match.groupdict() for match in COPY_LINE.finditer(log.read_text(errors="replace"))]


def remove_cgroup() -> None:
    """The blkio cgroup Cinder's throttle created for this run, if it did."""
    if Path("/sys/fs/cgroup/blkio", CGROUP).is_dir():
        subprocess.run(["cgdelete", f"blkio:/{CGROUP}"], check=False, capture_output=True)


# -- Cinder ----------------------------------------------------------------------------------


class Cinder:
    """The two volume services of one cinder-volume process, and what the run asks of them."""

    def __init__(self) -> None:
        from cinder import context, objects

        self.objects: Any = objects
        self.services: dict[str, Any] = {}
        self.ctxt: Any = context.RequestContext(
            user_id="migration-user", project_id="migration-project", is_admin=True
        )

    @classmethod
    def configure(cls, conf_file: Path) -> Cinder:
        """What cinder/cmd/volume.py's main does before it launches services, then what
        ``cinder-manage db sync`` does."""
        import os_brick
        from cinder import objects
        from cinder.common import config  # noqa: F401  (registers Cinder's options)
        from cinder.db import migration
        from oslo_log import log as logging

        objects.register_all()
        cfg.CONF(["--config-file", str(conf_file)], project="cinder")
        logging.setup(cfg.CONF, "cinder")
        os_brick.setup(cfg.CONF)
        migration.db_sync()
        return cls()

    def start(self) -> None:
        """One Service per enabled backend, as cinder/cmd/volume.py's _launch_service."""
        from cinder import service
        from cinder.common import constants

        for backend in cfg.CONF.enabled_backends:
            server = service.Service.create(
                host=f"{cfg.CONF.host}@{backend}",
                service_name=backend,
                binary=constants.VOLUME_BINARY,
                coordination=True,
                cluster=None,
            )
            self.services[backend] = server
            server.start()

    def stop(self) -> None:
        for server in reversed(self.services.values()):
            with contextlib.suppress(Exception):
                server.stop()
                server.wait()
        self.services.clear()

    def manager_classes(self) -> dict[str, str]:
        return {
            backend: f"{type(server.manager).__module__}.{type(server.manager).__name__}"
            for backend, server in self.services.items()
        }

    def manager(self, backend: str) -> Any:
        return self.services[backend].manager

    def pool(self, backend: str) -> tuple[str, dict[str, Any]]:
        """``HOST@BACKEND#POOL`` and that pool's capabilities, as the scheduler holds them (a
        driver without pools has one, named after its volume_backend_name)."""
        stats = dict(self.manager(backend).driver.get_volume_stats(refresh=True))
        pools = stats.pop("pools", None) or [{"pool_name": stats["volume_backend_name"]}]
        pool = dict(pools[0])
        return f"{cfg.CONF.host}@{backend}#{pool['pool_name']}", {**stats, **pool}

    def create_volume(self, backend: str, size_gib: int) -> Any:
        """The record the API and scheduler would make, then the manager's create_volume."""
        from cinder.objects import fields
        from cinder.volume import volume_types

        host, _ = self.pool(backend)
        volume = self.objects.Volume(
            context=self.ctxt,
            size=size_gib,
            host=host,
            availability_zone=self.manager(backend).availability_zone,
            status="creating",
            attach_status=fields.VolumeAttachStatus.DETACHED,
            volume_type_id=volume_types.get_default_volume_type(self.ctxt)["id"],
            user_id=self.ctxt.user_id,
            project_id=self.ctxt.project_id,
            display_name="cinder-migration",
        )
        volume.create()
        self.manager(backend).create_volume(self.ctxt, volume, allow_reschedule=False)
        volume.refresh()
        if volume.status != "available":
            raise RuntimeError(f"volume {volume.id} is {volume.status} after create_volume")
        return volume

    def migrate(self, volume: Any, source: str, destination: str) -> str:
        """The API's bookkeeping (without it the volume's status ends as None), then the
        source manager's migrate_volume as the scheduler calls it; returns the host asked."""
        host, capabilities = self.pool(destination)
        volume.update({"migration_status": "starting", "previous_status": volume.status})
        volume.save()
        self.manager(source).migrate_volume(
            self.ctxt,
            volume,
            {"host": host, "cluster_name": None, "capabilities": capabilities},
            force_host_copy=True,
            new_type_id=None,
        )
        return host

    def other_volumes(self, volume_id: str) -> list[str]:
        """Volume records, not deleted, other than ``volume_id``."""
        volumes = self.objects.VolumeList.get_all(self.ctxt, filters={"deleted": False})
        return [f"{other.id} {other.status}" for other in volumes if other.id != volume_id]

    def settle(self, volume_id: str) -> list[str]:
        """Wait for the deletion a migration casts last (the record that now names the old
        copy); what is still there after SETTLE_SECONDS."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while (others := self.other_volumes(volume_id)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return others

    def metadata(self, volume_id: str) -> dict[str, str]:
        from cinder.db import api as db

        return dict(db.volume_metadata_get(self.ctxt, volume_id))

    def attachments_not_detached(self) -> list[str]:
        from cinder.db import api as db

        rows = db.volume_attachment_get_all(self.ctxt)
        return [f"{row.id} {row.attach_status}" for row in rows if row.attach_status != "detached"]

    def delete_all(self) -> list[str]:
        """Delete every volume record left, each through its backend's manager; failures."""
        from cinder.volume import volume_utils

        failures = []
        for volume in self.objects.VolumeList.get_all(self.ctxt, filters={"deleted": False}):
            backend = volume_utils.extract_host(volume.host, "backend").split("@", 1)[1]
            try:
                self.manager(backend).delete_volume(self.ctxt, volume)
            except Exception as exc:
                failures.append(f"{volume.id}: {type(exc).__name__}: {exc}")
        return failures


class ProgressPoller:
    """A green thread reading a volume's metadata every POLL_SECONDS (``threading``
    and ``time.sleep`` are eventlet's here, as everywhere in cinder-volume)."""

    def __init__(self, cinder: Cinder, volume_id: str) -> None:
        self.cinder, self.volume_id = cinder, volume_id
        self.samples: list[str] = []
        self.polls = 0
        self.error: str | None = None
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                value = self.cinder.metadata(self.volume_id).get(PROGRESS_KEY)
            except Exception as exc:
                self.error = f"polling metadata: {type(exc).__name__}: {exc}"
                return
            self.polls += 1
            if value is not None and (not self.samples or self.samples[-1] != value):
                self.samples.append(value)
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        self.running = False
        self.thread.join()


# -- the run ---------------------------------------------------------------------------------


def migrate_once(
    cinder: Cinder, backends: Backends, volume: Any, source: str, destination: str, digest: str
) -> Direction:
    result = Direction(source=source, destination=destination)
    result.source_allocated = backends.allocated(source, volume.name)
    poller = ProgressPoller(cinder, volume.id)
    started = time.monotonic()
    try:
        result.expected_host = cinder.migrate(volume, source, destination)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.seconds = round(time.monotonic() - started, 3)
        poller.stop()
    result.polls, result.progress_samples = poller.polls, poller.samples
    result.progress_seen = bool(poller.samples)
    result.error = result.error or poller.error
    left = cinder.settle(volume.id)
    if left:
        result.error = f"{result.error or ''} temporary volumes left: {left}".strip()
    volume.refresh()
    result.migration_status, result.host = volume.migration_status, volume.host
    result.progress_after = cinder.metadata(volume.id).get(PROGRESS_KEY)
    if result.error is None:
        result.digest_equal = backends.digest(destination, volume.name) == digest
        result.destination_allocated = backends.allocated(destination, volume.name)
    return result


def interrupt_once(
    cinder: Cinder, backends: Backends, volume: Any, source: str, destination: str
) -> dict[str, Any]:
    """Kill a migration's green thread once its copy is under way; what is left right after."""
    migrating = eventlet.spawn(cinder.migrate, volume, source, destination)
    deadline = time.monotonic() + SETTLE_SECONDS
    while PROGRESS_KEY not in cinder.metadata(volume.id):
        if migrating.dead or time.monotonic() > deadline:
            return {"error": "the migration ended before its copy was seen under way"}
        time.sleep(POLL_SECONDS)
    started = time.monotonic()
    migrating.kill()  # GreenletExit raised where it waits; its cleanup may yield, so:
    with contextlib.suppress(BaseException):
        migrating.wait()
    return {
        "error": None,
        "kill_seconds": round(time.monotonic() - started, 3),
        "copy_children": [c for c in child_processes() if "asyncopy.cinder.child" in c],
        "source_watchers": backends.watchers(volume.name),
        "attachments": cinder.attachments_not_detached(),
        "progress_after": cinder.metadata(volume.id).get(PROGRESS_KEY),
    }


@dataclass
class Before:
    """What was there before the run: told apart from what it leaves."""

    rbd_images: set[str]
    system_temp_files: set[str]
    share_files: set[str] = field(default_factory=set)
    temp_files: set[str] = field(default_factory=set)


def migrate_both(
    cinder: Cinder, backends: Backends, volume: Any, digest: str
) -> list[dict[str, Any]]:
    """RBD -> NFS, then back unless that failed."""
    directions: list[dict[str, Any]] = []
    for source, destination in (("ceph", "nfs"), ("nfs", "ceph")):
        done = migrate_once(cinder, backends, volume, source, destination, digest)
        directions.append(asdict(done))
        if done.error is not None:
            break
    return directions


def leftovers(
    cinder: Cinder, backends: Backends, work: Work, volume: Any, before: Before
) -> dict[str, list[str]]:
    """What the migrations left behind, apart from the volume itself."""
    system_temp = temp_files(tempfile.gettempdir(), TEMP_PREFIXES)
    return {
        "rbd_images": sorted(backends.images() - before.rbd_images - {volume.name}),
        "share_files": sorted(backends.share_files() - before.share_files - {volume.name}),
        "volumes": cinder.other_volumes(volume.id),
        "attachments": cinder.attachments_not_detached(),
        "mounts": [m for m in mounts_under(work.root) if m != str(work.share_mount)],
        "child_processes": child_processes(),
        "temp_files": sorted(temp_files(str(work.tmp)) - before.temp_files),
        "system_temp_files": sorted(system_temp - before.system_temp_files),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Work(args.workdir.resolve())
    system_temp = temp_files(tempfile.gettempdir(), TEMP_PREFIXES)
    prepare(work, args.ceph_conf, args.pool, args.manager, args.bps_limit)
    size = args.size_gib * GiB
    backends = Backends(work, args.ceph_conf, args.pool, size)
    before = Before(rbd_images=backends.images(), system_temp_files=system_temp)
    report: dict[str, Any] = {"manager": args.manager, "size": size, "bps_limit": args.bps_limit}
    with bind_mount(work.export, work.share_mount):
        cinder = Cinder.configure(work.conf)
        try:
            cinder.start()
            report["managers"] = cinder.manager_classes()
            before.share_files = backends.share_files()  # with the NFS driver's marker file
            before.temp_files = temp_files(str(work.tmp))
            volume = cinder.create_volume("ceph", args.size_gib)
            report["volume"] = volume.id
            with rbd_image(args.ceph_conf, args.pool, volume.name) as image:
                write_scattered(image, size)
            digest = backends.digest("ceph", volume.name)
            if args.interrupt:
                report["interrupted"] = interrupt_once(cinder, backends, volume, "ceph", "nfs")
            else:
                report["directions"] = migrate_both(cinder, backends, volume, digest)
                report["leftovers"] = leftovers(cinder, backends, work, volume, before)
            report["copies"] = copy_figures(work.root / "cinder-volume.log")
        finally:
            report["delete_failures"] = cinder.delete_all()
            cinder.stop()
            remove_cgroup()
    report["after_cleanup"] = {
        "rbd_images": sorted(backends.images() - before.rbd_images),
        "share_files": sorted(backends.share_files() - before.share_files),
        "mounts": mounts_under(work.root),
        "child_processes": child_processes(),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like an exception, so that the cleanup runs (volumes, services, mount).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    report = run(args)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
