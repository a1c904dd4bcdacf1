"""The demo: a sparse image copied to a loop device and back, and through Ceph RBD to a file
and back, every copy verified, with a table.

Everything lives in a temporary directory: the loop devices are detached and the private
dev stack (a single-node Ceph cluster on loopback) is stopped at the end, also when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import trio

from asyncopy import devstack
from asyncopy.api import copy_sync, verify_uris
from asyncopy.engine import CopyOptions, CopyResult
from asyncopy.errors import AsyncopyError
from asyncopy.loopdev import loop_device
from asyncopy.sizes import human, parse_size
from asyncopy.testing import make_sparse_image


def allocated(path: str) -> str:
    if path.startswith("rbd:"):
        return human(rbd_used(path))
    if path.startswith("/dev/"):
        return "device"
    return human(os.stat(path).st_blocks * 512)


def rbd_used(uri: str) -> int:
    """``rbd du``'s used bytes of an ``rbd:POOL/IMAGE:conf=PATH`` image."""
    image, _, conf = uri.removeprefix("rbd:").partition(":conf=")
    done = subprocess.run(
        ["rbd", "-c", conf, "du", image, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(json.loads(done.stdout)["images"][0]["used_size"])


def row(step: str, dst: str, result: CopyResult) -> str:
    rate = result.bytes_total / result.seconds
    handled = f"{human(result.bytes_skipped)} / {human(result.bytes_zeroed)}"
    return (
        f"| {step} | {human(result.bytes_total)} | {allocated(dst)} | {result.seconds:.2f} s "
        f"| {human(rate)}/s | {handled} | {'yes' if result.verified else 'no'} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="1G", help="image size (default 1G)")
    args = parser.parse_args()
    size = parse_size(args.size)
    options = CopyOptions(verify=True)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncopy-demo-")))
        image, back = work / "volume.img", work / "back.img"
        data = make_sparse_image(str(image), size, 0.5)
        print(f"built {image.name}: {human(size)}, {human(data)} of data in 4 MiB blocks")
        backing = work / "device.img"
        with open(backing, "wb") as out:  # a device that is not known to read zeros
            out.truncate(size)
            out.write(b"\xa5" * min(size, 64 << 20))
        device = stack.enter_context(loop_device(backing))
        print(f"attached {device}")
        ceph = devstack.up(work / "stack", osd_bytes=3 * size + (256 << 20), iscsi=False)
        stack.callback(devstack.down, work / "stack")
        print(f"booted a single-node Ceph cluster on {ceph.mon_host}")
        volume, volume_back = (
            f"rbd:{ceph.pool}/{name}:conf={ceph.ceph_conf}" for name in ("volume", "volume-back")
        )
        from_rbd = work / "from-rbd.img"
        steps = [
            ("file -> loop device", str(image), device),
            ("loop device -> new file", device, str(back)),
            ("file -> new RBD image", str(image), volume),
            ("RBD image -> new file", volume, str(from_rbd)),
            ("file -> new RBD image", str(from_rbd), volume_back),
        ]
        print("\n| step | size | dst allocated | time | throughput | skipped / zeroed | verified |")
        print("|---|---|---|---|---|---|---|")
        for step, src, dst in steps:
            print(row(step, dst, copy_sync(src, dst, options)), flush=True)
        print(f"\nsource allocated {allocated(str(image))}; asyncopy verify:")
        differing = False
        for a, b in [(str(image), str(back)), (volume, volume_back)]:
            ranges = trio.run(verify_uris, a, b, options.chunk_size, 8)
            differing = differing or bool(ranges)
            shown = "identical" if not ranges else f"DIFFERENT at {ranges}"
            print(f"  {short(a)} vs {short(b)}: {shown}")
    return 1 if differing else 0


def short(spec: str) -> str:
    """An endpoint as the table shows it: an image name or a file name."""
    if spec.startswith("rbd:"):
        return spec.partition(":conf=")[0]
    return Path(spec).name


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AsyncopyError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("demo: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
