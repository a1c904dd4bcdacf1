"""What keeping a journal (``copy --journal``) costs: the same copies with and without one.

``python -m benchmarks.journal_cost [--size 2G] [--rounds 5]`` boots a dev stack, makes a
dense source file and image of ``size`` bytes, and times ``asyncopy copy`` with and without
``--journal`` on rbd -> rbd, rbd -> file and file -> rbd (each destination new), in rounds
whose order alternates, caches dropped before each (GNU time, as ``make bench``). Prints the
medians of wall and CPU seconds and the journaled copy's ratios: the target is at most 1.02.

Then what a resume's check of its destination costs: for each path, ``--resume`` of a
finished journal (every chunk is read back from DST and compared with the journal's digest;
nothing is left to copy) against the same with ``--trust-destination`` (nothing read), in
alternating order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from asyncopy.core.sizes import parse_size
from benchmarks.measure import run, timed
from devtools import devstack
from devtools.images import make_sparse_image

ASYNCOPY = (sys.executable, "-m", "asyncopy", "copy")
PATHS = ("rbd-rbd", "rbd-file", "file-rbd")


def endpoints(path: str, stack: devstack.Stack, work: Path, turn: int) -> tuple[str, str]:
    """(SRC, DST) of ``path``, DST a new name for ``turn``."""
    image = f"rbd:{stack.pool}/{{}}:conf={stack.ceph_conf}"
    src = image.format("source") if path.startswith("rbd") else str(work / "source.img")
    dst = image.format(f"dst-{turn}") if path.endswith("rbd") else str(work / f"dst-{turn}.img")
    return src, dst


def remove(dst: str, stack: devstack.Stack) -> None:
    if dst.startswith("rbd:"):
        name = dst.split("/", 1)[1].split(":", 1)[0]
        run(["rbd", "-c", stack.ceph_conf, "rm", "--no-progress", f"{stack.pool}/{name}"], what=dst)
    else:
        Path(dst).unlink()


def measure(
    stack: devstack.Stack, work: Path, rounds: int, paths: Sequence[str]
) -> dict[tuple[str, bool], list[tuple[float, float]]]:
    found: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    turn = 0
    for round_ in range(rounds):
        for path in paths:
            for journaled in (round_ % 2 == 0, round_ % 2 == 1):
                turn += 1
                src, dst = endpoints(path, stack, work, turn)
                extra = ["--journal", str(work / f"{turn}.journal")] if journaled else []
                timing = timed([*ASYNCOPY, src, dst, *extra], what=f"{path} {extra}")
                found.setdefault((path, journaled), []).append((timing.seconds, timing.cpu_seconds))
                shown = f"{timing.seconds:.2f} s, {timing.cpu_seconds:.2f} CPU-s"
                print(f"{path} journal={journaled}: {shown}", file=sys.stderr)
                remove(dst, stack)
    return found


def measure_resume(
    stack: devstack.Stack, work: Path, rounds: int, paths: Sequence[str]
) -> dict[tuple[str, bool], list[tuple[float, float]]]:
    found: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for path in paths:
        src, dst = endpoints(path, stack, work, 0)
        journal = work / f"{path}.journal"
        run([*ASYNCOPY, src, dst, "--journal", str(journal)], what=f"{path} journaled")
        resume = [*ASYNCOPY, src, dst, "--resume", str(journal), "--trust-source"]
        for round_ in range(rounds):
            for trusted in (round_ % 2 == 0, round_ % 2 == 1):
                argv = [*resume, "--trust-destination"] if trusted else resume
                timing = timed(argv, what=f"{path} resume")
                found.setdefault((path, trusted), []).append((timing.seconds, timing.cpu_seconds))
        remove(dst, stack)
    return found


def report(
    found: dict[tuple[str, bool], list[tuple[float, float]]], paths: Sequence[str], names: str
) -> None:
    print(f"path     | {names} | wall ratio  CPU ratio")
    for path in paths:
        plain = [statistics.median(column) for column in zip(*found[(path, False)], strict=True)]
        kept = [statistics.median(column) for column in zip(*found[(path, True)], strict=True)]
        print(
            f"{path:8} | {plain[0]:7.2f} {plain[1]:6.2f} | {kept[0]:9.2f} {kept[1]:6.2f} "
            f"| {kept[0] / plain[0]:10.3f} {kept[1] / plain[1]:10.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="bytes per copy (default 2G)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="comma-separated: " + ",".join(PATHS)
    )
    args = parser.parse_args()
    size = parse_size(args.size, "size")
    paths = [path for path in args.paths.split(",") if path in PATHS]
    with tempfile.TemporaryDirectory(prefix="asyncopy-journal-") as directory:
        work = Path(directory)
        stack = devstack.up(work / "stack", osd_bytes=3 * size + (1 << 30))
        try:
            source = work / "source.img"
            make_sparse_image(str(source), size, 1.0)
            image = f"{stack.pool}/source"
            run(
                ["rbd", "-c", stack.ceph_conf, "import", "--no-progress", str(source), image],
                what="the source image",
            )
            found = measure(stack, work, args.rounds, paths)
            resumed = measure_resume(stack, work, args.rounds, paths)
        finally:
            devstack.down(work / "stack")
    report(found, paths, "plain s  CPU-s | journal s  CPU-s")
    print("resume of a finished journal: read back, against --trust-destination (the ratio)")
    report(resumed, paths, "check s  CPU-s |   trust s  CPU-s")


if __name__ == "__main__":
    main()
