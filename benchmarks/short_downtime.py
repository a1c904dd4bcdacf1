"""The short-downtime migration of the README, measured: a full copy of @base while the volume
is in use, then only what changed up to @final.

``python -m benchmarks.short_downtime [--size 1G] [--changed 64M] [--rounds 3]`` boots a dev
stack, makes a dense image of ``size`` bytes with @base, writes ``changed`` bytes in 1 MiB
pieces scattered over the head, takes @final, and times, each round on a new destination
image: ``asyncopy copy @base --snapshot-destination`` (step 1), ``asyncopy copy @final
--since base --snapshot-destination`` (step 2, the downtime), ``asyncopy verify @final
DST@final`` (after it: both snapshots are immutable), and beside them a
full ``asyncopy copy @final`` (the downtime without increments) and the same two steps with
``rbd export-diff [--from-snap base] @SNAP - | rbd import-diff - DST``. Prints the medians
of wall and CPU seconds and the bytes asyncopy read.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from asyncopy.core.sizes import human, parse_size
from benchmarks.measure import run, timed
from devtools import devstack
from devtools.images import make_sparse_image

ASYNCOPY = (sys.executable, "-m", "asyncopy", "copy", "--json")
VERIFY = (sys.executable, "-m", "asyncopy", "verify")
PIECE = 1 << 20


class Volume:
    def __init__(self, stack: devstack.Stack) -> None:
        self.stack = stack

    def uri(self, name: str, snap: str | None = None) -> str:
        at = f"@{snap}" if snap else ""
        return f"rbd:{self.stack.pool}/{name}{at}:conf={self.stack.ceph_conf}"

    def rbd(self, *args: str) -> str:
        return run(["rbd", "-c", self.stack.ceph_conf, "--no-progress", *args], what=args[0])

    def spec(self, name: str, snap: str | None = None) -> str:
        return f"{self.stack.pool}/{name}" + (f"@{snap}" if snap else "")

    def remove(self, name: str) -> None:
        self.rbd("snap", "purge", self.spec(name))
        self.rbd("rm", self.spec(name))


def prepare(volume: Volume, work: Path, size: int, changed: int) -> None:
    source = work / "volume.img"
    make_sparse_image(str(source), size, 1.0)
    volume.rbd("import", str(source), volume.spec("volume"))
    source.unlink()
    volume.rbd("snap", "create", volume.spec("volume", "base"))
    rng = random.Random(5)
    pieces = rng.sample(range(size // PIECE), changed // PIECE)
    import rados
    import rbd

    with (
        rados.Rados(conffile=volume.stack.ceph_conf) as cluster,
        cluster.open_ioctx(volume.stack.pool) as ioctx,
        rbd.Image(ioctx, "volume") as image,
    ):
        for index in pieces:
            image.write(rng.randbytes(PIECE), index * PIECE)
    volume.rbd("snap", "create", volume.spec("volume", "final"))


def step(argv: Sequence[str], what: str) -> tuple[float, float, int]:
    timing = timed(argv, what=what)
    read = json.loads(timing.stdout)["bytes_read"] if tuple(argv[:4]) == ASYNCOPY[:4] else 0
    return timing.seconds, timing.cpu_seconds, read


def one_round(volume: Volume, turn: int) -> dict[str, tuple[float, float, int]]:
    """One round; each destination is removed once measured (the OSD keeps all in memory)."""
    dst, full, peer = f"dst-{turn}", f"full-{turn}", f"peer-{turn}"
    found = {
        "step 1: asyncopy copy @base": step(
            [*ASYNCOPY, volume.uri("volume", "base"), volume.uri(dst), "--snapshot-destination"],
            "step 1",
        ),
        "step 2: asyncopy copy @final --since base": step(
            [
                *ASYNCOPY,
                volume.uri("volume", "final"),
                volume.uri(dst),
                "--since",
                "base",
                "--snapshot-destination",
            ],
            "step 2",
        ),
        "after: asyncopy verify @final DST@final": step(
            [*VERIFY, volume.uri("volume", "final"), volume.uri(dst, "final")], "verify"
        ),
    }
    volume.remove(dst)
    # The same step 2 without taking @final on the destination (librbd's snapshot creation
    # is part of the figure above, as it is of rbd import-diff's).
    run(
        [*ASYNCOPY, volume.uri("volume", "base"), volume.uri(dst), "--snapshot-destination"],
        what="step 1 again",
    )
    found["step 2 without --snapshot-destination"] = step(
        [*ASYNCOPY, volume.uri("volume", "final"), volume.uri(dst), "--since", "base"], "step 2"
    )
    volume.remove(dst)
    found["instead: asyncopy copy @final (full)"] = step(
        [*ASYNCOPY, volume.uri("volume", "final"), volume.uri(full)], "full copy"
    )
    volume.remove(full)
    volume.rbd("create", "--size", "1M", volume.spec(peer))  # resized by import-diff
    conf = volume.stack.ceph_conf

    def diff(since: str, to: str) -> list[str]:
        export = f"rbd -c {conf} export-diff --no-progress {since}{volume.spec('volume', to)}"
        return [
            "sh",
            "-c",
            f"{export} - | rbd -c {conf} import-diff --no-progress - {volume.spec(peer)}",
        ]

    found["peer step 1: rbd export-diff @base | import-diff"] = step(diff("", "base"), "peer 1")
    found["peer step 2: rbd export-diff @base..@final | import-diff"] = step(
        diff("--from-snap base ", "final"), "peer 2"
    )
    volume.remove(peer)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="volume size (default 1G)")
    parser.add_argument("--changed", default="64M", help="bytes written between (default 64M)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args()
    size, changed = parse_size(args.size, "size"), parse_size(args.changed, "changed")
    with tempfile.TemporaryDirectory(prefix="asyncopy-downtime-") as directory:
        work = Path(directory)
        stack = devstack.up(work / "stack", osd_bytes=4 * size + changed + (1 << 30))
        try:
            volume = Volume(stack)
            prepare(volume, work, size, changed)
            rounds = [one_round(volume, turn) for turn in range(args.rounds)]
        finally:
            devstack.down(work / "stack")
    print(f"{human(size)} volume, {human(changed)} written between @base and @final")
    print(f"{'':52} | wall s | CPU-s | read")
    for what in rounds[0]:
        wall, cpu, read = (statistics.median(r[what][i] for r in rounds) for i in range(3))
        shown = human(read) if read else "-"
        print(f"{what:52} | {wall:6.2f} | {cpu:5.2f} | {shown}")


if __name__ == "__main__":
    main()
