"""The demo: a sparse image copied to a loop device and back, verified, with a table.

Everything lives in a temporary directory and on loop devices that are detached at the end,
also when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import trio

from asyncopy.api import copy_sync, verify_uris
from asyncopy.engine import CopyOptions, CopyResult
from asyncopy.errors import AsyncopyError
from asyncopy.loopdev import loop_device
from asyncopy.sizes import human, parse_size
from asyncopy.testing import make_sparse_image


def allocated(path: str) -> str:
    if path.startswith("/dev/"):
        return "device"
    return human(os.stat(path).st_blocks * 512)


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
        steps = [
            ("file -> loop device", str(image), device),
            ("loop device -> new file", device, str(back)),
        ]
        print("\n| step | size | dst allocated | time | throughput | skipped / zeroed | verified |")
        print("|---|---|---|---|---|---|---|")
        for step, src, dst in steps:
            print(row(step, dst, copy_sync(src, dst, options)), flush=True)
        differing = trio.run(verify_uris, str(image), str(back), options.chunk_size, 8)
        print(f"\nsource allocated {allocated(str(image))}; asyncopy verify source vs round trip:")
        print("identical" if not differing else f"DIFFERENT at {differing}")
    return 1 if differing else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AsyncopyError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("demo: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
