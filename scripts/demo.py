"""The demo: a sparse Cinder volume migrated RBD -> iSCSI LUN -> RBD, and RBD -> a device
attached through os-brick -> RBD, every copy verified, with a table.

1. Boot the dev stack (a single-node Ceph cluster with a memstore OSD of 5 x the volume size
   plus 256 MiB, and tgtd) on loopback, all of it in a temporary directory.
2. Make the source: a sparse file (``--size``, default 1 GiB) with 50% of its 4 MiB blocks
   written with random bytes, scattered, copied into a new RBD volume (which stays thin).
3. Copy, each with ``CopyOptions(verify=True)`` (the destination is re-read and checked):
   the RBD volume to a new thin tgtd LUN, the LUN to a new RBD volume; then the volume to a
   loop device attached through os-brick's LOCAL connector from a ``brick:conn.json``
   ``connection_info`` (the device is prefilled with non-zero bytes: it is not known to read
   zeros, so holes must be zeroed), and that device to another new RBD volume.
4. Print a row per copy, then compare the original volume with each final one as ``asyncopy
   verify`` does; exit 1 if any differs.
5. Run Cinder's own ``migrate_volume`` (generic path) RBD -> NFS -> RBD twice
   (``benchmarks/cinder_migration.py``): as Cinder ships, and with the one ``volume_manager``
   line that puts asyncopy's manager in its place; a line per direction, time and allocation.

Every resource is an ExitStack callback (loop device detached, LUN removed, dev stack stopped,
directory removed), run at the end, after an error (one line, exit 2) and after Ctrl-C
(exit 130); a second Ctrl-C does not stop the teardown.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from asyncopy.api import copy_uri, verify_uris
from asyncopy.api import run_interruptibly as run
from asyncopy.core.engine import CopyOptions, CopyResult
from asyncopy.core.sizes import human, parse_size
from asyncopy.errors import AsyncopyError, UsageError
from benchmarks.cinder_runs import MANAGERS, migrate_there_and_back
from devtools import devstack
from devtools.images import make_sparse_image
from devtools.loopdev import loop_device

MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--size", default="1G", help="volume size (default 1G)")
    size = parse_size(parser.parse_args().size)
    if size <= 0 or size % MIB:
        raise UsageError(f"--size {size}: must be a positive multiple of 1M")
    with ExitStack() as cleanup:
        try:
            return demo(cleanup, size)
        finally:  # the teardown runs to its end, whatever the keyboard says
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def demo(cleanup: ExitStack, size: int) -> int:
    options = CopyOptions(verify=True)
    work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="asyncopy-demo-")))
    cleanup.callback(devstack.down, work / "stack")
    stack = devstack.up(work / "stack", osd_bytes=5 * size + 256 * MIB)  # stock Cinder: thick
    print(f"dev stack up: Ceph on {stack.mon_host}, tgtd on {stack.iscsi_portal}", flush=True)

    def rbd(name: str) -> str:
        return f"rbd:{stack.pool}/{name}:conf={stack.ceph_conf}"

    image = work / "volume.img"
    data = make_sparse_image(str(image), size, 0.5)
    run(partial(copy_uri, str(image), rbd("volume"), options))
    image.unlink()
    print(f"rbd/volume: {human(size)}, {human(data)} of random data in scattered 4 MiB objects")

    lun = devstack.add_lun(stack, "volume", size)
    cleanup.callback(remove_lun, stack, lun)
    backing = work / "device.img"
    with open(backing, "wb") as out:  # stale bytes: the device does not read zeros
        for _ in range(size // MIB):
            out.write(b"\xa5" * MIB)
    device = cleanup.enter_context(loop_device(backing))
    conn = work / "conn.json"
    conn.write_text(json.dumps({"driver_volume_type": "local", "data": {"device_path": device}}))
    brick = f"brick:{conn}"

    steps = [
        ("RBD -> iSCSI LUN", rbd("volume"), lun.url, lun.backing),
        ("iSCSI LUN -> new RBD", lun.url, rbd("volume-via-iscsi"), None),
        (f"RBD -> {device} (os-brick)", rbd("volume"), brick, "device"),
        (f"{device} (os-brick) -> new RBD", brick, rbd("volume-via-brick"), None),
    ]
    print("\n| step | size | dst allocated | time | throughput | skipped / zeroed | verified |")
    print("|---|---|---|---|---|---|---|")
    for step, src, dst, where in steps:
        result = run(partial(copy_uri, src, dst, options))
        print(row(step, result, allocated(dst, where, stack.ceph_conf)), flush=True)

    print("\nasyncopy verify:")
    differing = False
    for name in ("volume-via-iscsi", "volume-via-brick"):
        ranges = run(
            partial(verify_uris, rbd("volume"), rbd(name), options.chunk_size, options.workers)
        )
        differing = differing or bool(ranges)
        print(f"  rbd/volume vs rbd/{name}: {'DIFFERENT' if ranges else 'identical'}")
    return 1 if differing or not cinder_migrations(stack, work) else 0


def cinder_migrations(stack: devstack.Stack, work: Path) -> bool:
    """Cinder's own migrate_volume RBD -> NFS -> RBD, stock and with asyncopy's manager
    (``benchmarks/cinder_migration.py``); one line per direction. True if all went well."""
    print("\nCinder's migrate_volume (generic path), a 1 GiB volume holding 12 MiB:")
    print("| direction | stock Cinder | with asyncopy's volume_manager |")
    print("|---|---|---|")
    reports = {
        manager: migrate_there_and_back(stack.ceph_conf, stack.pool, work / manager, manager)
        for manager in MANAGERS
    }  # each raises unless both directions succeeded with every byte intact
    for index, name in enumerate(("RBD -> NFS", "NFS -> RBD")):
        cells = []
        for manager in MANAGERS:
            done = reports[manager]["directions"][index]
            cells.append(
                f"{done['seconds']:.2f} s, {human(done['destination_allocated'])} allocated"
            )
        print(f"| {name} | {' | '.join(cells)} |", flush=True)
    return True


def remove_lun(stack: devstack.Stack, lun: devstack.Lun, patience: float = 10.0) -> None:
    """``devstack.remove_lun``, retried: after an interrupted copy, tgtd refuses to delete a
    LUN ("still active") until the commands already sent to it have completed."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return devstack.remove_lun(stack, lun)
        except devstack.DevstackError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def allocated(dst: str, where: str | None, conf: str) -> str:
    """``rbd du`` of an RBD image, a LUN's backing file's blocks, or "device"."""
    if where == "device":
        return where
    if where is not None:
        return human(os.stat(where).st_blocks * 512)
    image = dst.removeprefix("rbd:").partition(":")[0]
    du = ["rbd", "-c", conf, "du", image, "--format", "json"]
    done = subprocess.run(du, capture_output=True, text=True, check=True, timeout=60)
    return human(int(json.loads(done.stdout)["images"][0]["used_size"]))


def row(step: str, result: CopyResult, used: str) -> str:
    rate = human(result.bytes_total / result.seconds)
    handled = f"{human(result.bytes_skipped)} / {human(result.bytes_zeroed)}"
    verified = "yes" if result.verified else "no"
    return (
        f"| {step} | {human(result.bytes_total)} | {used} | {result.seconds:.2f} s "
        f"| {rate}/s | {handled} | {verified} |"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("demo: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    except (AsyncopyError, devstack.DevstackError, OSError, subprocess.SubprocessError) as exc:
        print(f"demo: error: {' / '.join(str(exc).splitlines())}", file=sys.stderr)
        sys.exit(2)
