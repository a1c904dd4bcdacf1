"""How many commands of what size an iSCSI session keeps in flight: a sweep against tgtd.

``python -m benchmarks.iscsi_tuning [--size 1G] [--rounds 3]`` boots a dev stack, fills a
memory source with random data, and copies it onto a thin LUN and back into memory for each
(queue depth, transfer size) pair, in rounds whose order rotates. Each copy runs in this
process; its wall time and the process's CPU time (every thread: the pump's included) are
measured around it. Prints one line per pair: the medians of writing and of reading, in
seconds and CPU-seconds per GiB. The defaults in ``asyncopy.access.iscsi`` were chosen from it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from asyncopy.access.iscsi import IscsiOptions, parse_iscsi
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.core.sizes import parse_size
from asyncopy.sinks.iscsi import open_iscsi_sink
from asyncopy.sources.iscsi import open_iscsi_source
from asyncopy.testing import MemoryVolume
from devtools import devstack

GiB = 1 << 30
DEPTHS = (4, 8, 16, 32)
TRANSFERS = (256 << 10, 1 << 20, 4 << 20)
Pair = tuple[int, int]


def measure(job: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of one trio run of ``job``."""
    before, started = os.times(), time.perf_counter()
    trio.run(job)
    wall, after = time.perf_counter() - started, os.times()
    return wall, (after.user - before.user) + (after.system - before.system)


def sweep(stack: devstack.Stack, size: int, rounds: int) -> dict[Pair, list[tuple[float, ...]]]:
    lun = devstack.add_lun(stack, "tuning", size)
    spec = parse_iscsi(lun.url.removeprefix("iscsi:"))
    content = MemoryVolume(os.urandom(size))
    pairs = [(depth, transfer) for depth in DEPTHS for transfer in TRANSFERS]
    found: dict[Pair, list[tuple[float, ...]]] = {pair: [] for pair in pairs}
    try:
        for round_ in range(rounds):
            shift = round_ * len(pairs) // rounds
            for depth, transfer in pairs[shift:] + pairs[:shift]:
                options = IscsiOptions(queue_depth=depth, transfer_size=transfer)

                async def write(options: IscsiOptions = options) -> None:
                    async with open_iscsi_sink(spec, options=options) as sink:
                        await copy(content, sink, CopyOptions())

                async def read(options: IscsiOptions = options) -> None:
                    async with open_iscsi_source(spec, options) as source:
                        await copy(source, MemoryVolume(bytes(size)), CopyOptions())

                found[(depth, transfer)].append((*measure(write), *measure(read)))
    finally:
        devstack.remove_lun(stack, lun)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="bytes copied each way (default 1G)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    size = parse_size(args.size, "size")
    with tempfile.TemporaryDirectory(prefix="asyncopy-tuning-") as directory:
        stack = devstack.up(Path(directory), osd_bytes=256 << 20)
        try:
            results = sweep(stack, size, args.rounds)
        finally:
            devstack.down(Path(directory))
    per_gib = GiB / size
    print("depth transfer | write s  CPU-s/GiB | read s  CPU-s/GiB")
    for (depth, transfer), runs in results.items():
        w, wc, r, rc = (statistics.median(column) for column in zip(*runs, strict=True))
        print(
            f"{depth:5} {transfer >> 10:6}K | {w:7.2f} {wc * per_gib:10.2f} "
            f"| {r:6.2f} {rc * per_gib:10.2f}"
        )


if __name__ == "__main__":
    main()
