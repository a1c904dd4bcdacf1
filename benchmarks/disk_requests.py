"""What a copy asks of the disk: how many requests of what size reach the block device.

``python -m benchmarks.disk_requests --path DIR [--rounds 3] [--cleanup CMD] -- CMD...``
runs each command ``CMD`` (split as a shell would, never run by one) in turn, ``--rounds``
times interleaved, each after the page cache is dropped and each followed by a ``sync`` of
the filesystem holding ``DIR`` (counted, as ``make bench`` counts it), then ``--cleanup``
(not counted). For each run it reads the counters of the block device holding ``DIR``
(``/sys/dev/block/MAJ:MIN/stat``) before and after, and prints the wall time and the reads
and writes that device completed: how many, of what mean size, and their summed time in the
device's queue. Other work on the same device (an OSD's) is counted too: run it on an
otherwise idle machine, and compare commands that do the same work.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import drop_caches

SECTOR = 512


@dataclass(frozen=True, slots=True)
class Requests:
    """Requests one device completed over a span, one direction."""

    count: int
    size: int  # bytes
    queued_ms: int

    @property
    def mean(self) -> int:
        return self.size // self.count if self.count else 0


@dataclass(frozen=True, slots=True)
class Span:
    seconds: float
    reads: Requests
    writes: Requests


def stat_file(path: str) -> Path:
    """The kernel's I/O counters of the block device (or partition) holding ``path``."""
    device = os.stat(path).st_dev
    return Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat")


def counters(stat: Path) -> list[int]:
    return [int(field) for field in stat.read_text().split()]


def delta(before: Sequence[int], after: Sequence[int]) -> tuple[Requests, Requests]:
    """Reads and writes between two readings of a ``stat`` file (Documentation/block/stat)."""
    diff = [new - old for old, new in zip(before, after, strict=False)]
    reads = Requests(diff[0], diff[2] * SECTOR, diff[3])
    writes = Requests(diff[4], diff[6] * SECTOR, diff[7])
    return reads, writes


def one(command: str, stat: Path, path: str) -> Span:
    drop_caches()
    before, started = counters(stat), time.monotonic()
    subprocess.run(shlex.split(command), check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync", "-f", path], check=True)
    seconds, after = time.monotonic() - started, counters(stat)
    return Span(seconds, *delta(before, after))


def describe(spans: Sequence[Span]) -> str:
    """Medians over the rounds: seconds, then reads and writes as count x mean size."""

    def side(pick: str) -> str:
        got = [getattr(span, pick) for span in spans]
        count = statistics.median(r.count for r in got)
        mean = statistics.median(r.mean for r in got) / 1024
        queued = statistics.median(r.queued_ms for r in got) / 1000
        return f"{pick} {count:.0f} x {mean:.0f} KiB ({queued:.1f} s queued)"

    seconds = statistics.median(span.seconds for span in spans)
    return f"{seconds:6.2f} s  {side('reads')}  {side('writes')}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.disk_requests")
    parser.add_argument("--path", required=True, help="a path on the device to watch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cleanup", help="command run after every run, not counted")
    parser.add_argument("commands", nargs="+", help="commands to compare")
    args = parser.parse_args(argv)
    stat = stat_file(args.path)
    found: dict[str, list[Span]] = {command: [] for command in args.commands}
    for _ in range(args.rounds):
        for command in args.commands:
            found[command].append(one(command, stat, args.path))
            if args.cleanup:
                subprocess.run(shlex.split(args.cleanup), check=True)
    for command, spans in found.items():
        print(f"{describe(spans)}  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
