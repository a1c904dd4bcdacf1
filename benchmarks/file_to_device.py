"""File -> loop device: time, bytes skipped or zeroed, and peak RSS of each run.

A sparse image (default 2 GiB, 50% of its 4 MiB blocks written, scattered) is copied onto a
loop device, interleaved over ``--repeats`` rounds: asyncopy onto a dirty device (holes must
be zeroed), with ``--verify``, onto a zeroed device with ``--target-is-zero``, and ``dd`` with
O_DIRECT as a reference point. Every asyncopy output is checked with ``asyncopy verify``.
Page caches are dropped before each run. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from asyncopy.loopdev import loop_device
from asyncopy.sizes import human, parse_size
from asyncopy.testing import make_sparse_image

ASYNCOPY = [sys.executable, "-m", "asyncopy"]


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_child(args: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, stdout) of one command.

    RSS comes from GNU time: a child's own ru_maxrss would include the high-water mark of
    the (large) Python parent it was forked from.
    """
    drop_caches()
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *args], capture_output=True, text=True, check=False
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return seconds, int(done.stderr.splitlines()[-1]) * 1024, done.stdout


def zero_backing(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        out.truncate(size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="2G")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()
    size = parse_size(args.size)
    results: dict[str, list[dict[str, float | int]]] = {}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="asyncopy-bench-")))
        image, backing = work / "volume.img", work / "device.img"
        data = make_sparse_image(str(image), size, 0.5)
        zero_backing(backing, size)
        device = stack.enter_context(loop_device(backing))
        cases = {
            "asyncopy (dirty device)": [*ASYNCOPY, "copy", str(image), device, "--json"],
            "asyncopy --verify": [*ASYNCOPY, "copy", str(image), device, "--json", "--verify"],
            "asyncopy --target-is-zero": [
                *ASYNCOPY,
                "copy",
                str(image),
                device,
                "--json",
                "--target-is-zero",
            ],
            "dd bs=4M iflag=direct oflag=direct": [
                "dd",
                f"if={image}",
                f"of={device}",
                "bs=4M",
                "iflag=direct",
                "oflag=direct",
                "status=none",
            ],
        }
        for _ in range(args.repeats):
            for name, command in cases.items():
                if "target-is-zero" in name:
                    zero_backing(backing, size)  # the assertion must be true
                else:
                    with open(backing, "r+b") as dirty:  # stale bytes: must not survive
                        dirty.write(b"\xa5" * min(size, 64 << 20))
                seconds, rss, out = run_child(command)
                figures: dict[str, float | int] = {"seconds": seconds, "peak_rss": rss}
                if out.strip():
                    report = json.loads(out)
                    figures.update(skipped=report["bytes_skipped"], zeroed=report["bytes_zeroed"])
                    check = subprocess.run([*ASYNCOPY, "verify", str(image), device], check=False)
                    if check.returncode != 0:
                        raise SystemExit(f"{name}: output differs from the source")
                results.setdefault(name, []).append(figures)
    print(f"\n{human(size)} image, {human(data)} of data; {platform.node()}, {os.cpu_count()} cpus")
    print("\n| run | median s (min-max) | MiB/s | skipped | zeroed | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        times = [float(r["seconds"]) for r in runs]
        median = statistics.median(times)
        last = runs[-1]
        print(
            f"| {name} | {median:.2f} ({min(times):.2f}-{max(times):.2f}) "
            f"| {size / median / (1 << 20):.0f} | {human(last.get('skipped', 0))} "
            f"| {human(last.get('zeroed', 0))} | {human(max(int(r['peak_rss']) for r in runs))} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"size": size, "data": data, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
