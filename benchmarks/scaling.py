"""The rbd -> rbd scaling extra: dense copies at two sizes, and the floor librados sets.

The start-up of a copy (interpreter, imports, connecting) is paid once whatever the size, so a
copier's CPU per GiB at one size mixes the two; the slope between two sizes leaves it out.
That slope is set beside the floor: what librados alone spends to write and then read the
same bytes (``rbd bench`` 4 MiB sequential, 8 threads, on the larger size), the client's CPU
of both summed per GiB.

``Bench.rbd_scaling`` (``benchmarks/bench.py``) runs it with these pieces:

1. The floor first, while the pool holds nothing else: ``--repeats`` rounds of ``rbd bench
   --io-type write`` then ``read`` on one image of the larger size, removed after.
2. Two dense images (every 4 MiB object random bytes), made once, and the manifest of each.
3. ``--repeats`` rounds; in each, for each size, asyncopy ``copy`` at its defaults, ``qemu-img
   convert -m 8 -W`` and ``-m 16 -W`` and ``rbd cp``, in an order that rotates from round to
   round, each onto a new image that is checked against the manifest and removed, the
   cluster then left to settle (as on the paths).

At the defaults the cluster holds at most 512 MiB + 2 x 2.5 GiB (both sources and one copy).
The runs are grouped ``scaling`` (their ``layout`` the size's label) and ``floor``; the report
folds them (``report.scaling_section``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncopy.core.sizes import human
from benchmarks.measure import Run, Timing, own_seconds
from benchmarks.report import FLOOR_TOOLS
from benchmarks.scenarios import (
    ASYNCOPY,
    OBJECT,
    Endpoint,
    Role,
    Tool,
    blocks,
    rbd_endpoint,
    write_image,
    write_manifest,
)

MiB, GiB = 1 << 20, 1 << 30
FLOOR_THREADS = 8


@dataclass(frozen=True, slots=True)
class ScalingSizes:
    """The two dense volume sizes the slope is taken between."""

    small: int
    large: int

    @property
    def held(self) -> int:
        """The most the cluster holds meanwhile: both sources and a copy of the larger."""
        return self.small + 2 * self.large


FULL_SCALING = ScalingSizes(512 * MiB, 2560 * MiB)
QUICK_SCALING = ScalingSizes(32 * MiB, 96 * MiB)


def label(size: int) -> str:
    return f"{human(size)} dense"


def copiers(src: Endpoint, dst: Endpoint, conf: str) -> list[Tool]:
    """asyncopy at its defaults and the three peers of the scaling table, asyncopy first."""
    if src.image is None or dst.image is None:
        raise ValueError(f"the scaling table copies images, not {src.kind} -> {dst.kind}")
    qemu = ("qemu-img", "convert", "-f", "raw", "-O", "raw")
    rbd = ("rbd", "-c", conf, "--no-progress")
    return [
        Tool("asyncopy", Role.ASYNCOPY, (*ASYNCOPY, "copy", src.uri, dst.uri)),
        *(
            Tool(
                f"qemu-img convert -m {n} -W",
                Role.PEER,
                (*qemu, "-m", str(n), "-W", src.uri, dst.uri),
            )
            for n in (8, 16)
        ),
        Tool("rbd cp", Role.PEER, (*rbd, "cp", src.image, dst.image)),
    ]


def dense_source(conf: str, pool: str, work: Path, size: int) -> tuple[Endpoint, Path]:
    """A new dense image of ``size`` bytes in ``pool``, and the manifest of its bytes."""
    name = image_name(size)
    count, seed = size // OBJECT, zlib.crc32(name.encode())
    manifest = work / f"{name}.manifest.json"
    write_image(conf, pool, name, size, blocks(size, count, seed))
    write_manifest(manifest, size, blocks(size, count, seed))
    return rbd_endpoint(conf, pool, name), manifest


def image_name(size: int) -> str:
    return f"scaling-{size // MiB}m"


def floor_runs(
    timed: Callable[[Sequence[str], str], Timing],
    conf: str,
    image: str,
    size: int,
    round_number: int,
) -> Iterator[Run]:
    """One round of the floor on an existing ``image``: ``rbd bench`` write, then read."""
    argv = ["rbd", "-c", conf, "bench", "--io-threads", str(FLOOR_THREADS), "--io-size", "4M"]
    argv += ["--io-total", str(size), "--io-pattern", "seq", image, "--io-type"]
    for name, kind in zip(FLOOR_TOOLS, ("write", "read"), strict=True):
        timing = timed([*argv, kind], f"{name} (floor)")
        yield Run(
            group="floor",
            layout=label(size),
            path="-",
            tool=name,
            role="ceiling",
            round=round_number,
            size=size,
            seconds=own_seconds(name, timing, size),
            peak_rss=timing.peak_rss,
            wall_seconds=timing.seconds,
            cpu_seconds=timing.cpu_seconds,
            daemon_cpu_seconds=timing.daemon_cpu_seconds,
        )
