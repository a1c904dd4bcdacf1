"""RBD -> RBD, RBD -> file, RBD -> iSCSI and iSCSI -> RBD: asyncopy beside ``rbd cp``,
``rbd export`` and ``qemu-img convert``.

Boots a private dev stack (Ceph and tgtd), writes a sparse source image (default 2 GiB, 50% of its
4 MiB objects, scattered, random bytes) and two thin LUNs, then runs every command of a path in
turn, round after round (A B C, B C A, C A B, ...: no tool always goes first, and the cluster
settles between runs), and reports the median with min-max. Each output is checked with
``qemu-img compare`` before it is removed; a wrong copy stops the benchmark. File outputs are
synced to disk inside the timed run for every tool (asyncopy fsyncs on its own; the peers do
not), and page caches are dropped before each run. Commands are timed as an operator runs
them, process start included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypeVar

import rados
import rbd

from asyncopy import devstack
from asyncopy.sizes import human, parse_size

ASYNCOPY = [sys.executable, "-m", "asyncopy"]
SETTLE = 2.0  # seconds between runs: the OSD frees a removed image's objects meanwhile
T = TypeVar("T")
OBJECT = 4 << 20


def make_source(conf: str, pool: str, size: int, share: float, seed: int = 1) -> int:
    """The source image: ``share`` of its objects written with random bytes; bytes written."""
    rng = random.Random(seed)
    count = -(-size // OBJECT)
    chosen = rng.sample(range(count), round(count * share))
    cluster = rados.Rados(conffile=conf, conf=devstack.client_conf(60))
    cluster.connect()
    try:
        with cluster.open_ioctx(pool) as ioctx:
            rbd.RBD().create(ioctx, "src", size)
            with rbd.Image(ioctx, "src") as image:
                for index in chosen:
                    offset = index * OBJECT
                    image.write(rng.randbytes(min(OBJECT, size - offset)), offset)
    finally:
        cluster.shutdown()
    return sum(min(OBJECT, size - i * OBJECT) for i in chosen)


def memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(command: list[str], out_file: Path | None) -> float:
    drop_caches()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0 and out_file is not None:
        done = subprocess.run(["sync", str(out_file)], capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="2G")
    parser.add_argument("--share", type=float, default=0.5, help="share of objects written")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="asyncopy-bench-") as tmp:
        work = Path(tmp)
        stack = devstack.up(work / "stack", osd_bytes=3 * size + (1 << 30))
        try:
            data = make_source(stack.ceph_conf, stack.pool, size, args.share)
            luns = make_luns(stack, size)
            results = run_rounds(stack, work, luns, args.repeats)
        finally:
            devstack.down(work / "stack")
    report(size, data, results)
    if args.json:
        args.json.write_text(json.dumps({"size": size, "data": data, "results": results}))
    return 0


def make_luns(stack: devstack.Stack, size: int) -> dict[str, str]:
    """A thin LUN holding the source's bytes (for iSCSI -> RBD) and an empty one (RBD -> iSCSI)."""
    src, dst = devstack.add_lun(stack, "src", size), devstack.add_lun(stack, "dst", size)
    image = f"rbd:{stack.pool}/src:conf={stack.ceph_conf}"
    subprocess.run([*ASYNCOPY, "copy", image, src.url], check=True, capture_output=True)
    return {"src": src.url, "dst": dst.url}


def cases(
    stack: devstack.Stack, out: Path, luns: dict[str, str]
) -> dict[str, dict[str, list[str]]]:
    conf = stack.ceph_conf
    src, dst = f"rbd:{stack.pool}/src:conf={conf}", f"rbd:{stack.pool}/dst:conf={conf}"
    qemu = ["qemu-img", "convert", "-f", "raw", "-O", "raw", "-m", "16", "-W"]
    rbd_cli = ["rbd", "-c", conf, "--no-progress"]
    return {
        "rbd -> rbd": {
            "asyncopy": [*ASYNCOPY, "copy", src, dst],
            "rbd cp": [*rbd_cli, "cp", f"{stack.pool}/src", f"{stack.pool}/dst"],
            "qemu-img convert -m 16 -W": [*qemu, src, dst],
        },
        "rbd -> file": {
            "asyncopy": [*ASYNCOPY, "copy", src, str(out)],
            "rbd export": [*rbd_cli, "export", f"{stack.pool}/src", str(out)],
            "qemu-img convert -m 16 -W": [*qemu, src, str(out)],
        },
        "rbd -> iscsi": {
            "asyncopy": [*ASYNCOPY, "copy", src, luns["dst"]],
            "qemu-img convert -n -m 16 -W": [*qemu, "-n", src, luns["dst"]],
        },
        "iscsi -> rbd": {
            "asyncopy": [*ASYNCOPY, "copy", luns["src"], dst],
            "qemu-img convert -m 16 -W": [*qemu, luns["src"], dst],
        },
    }


def run_rounds(
    stack: devstack.Stack, work: Path, luns: dict[str, str], repeats: int
) -> dict[str, dict[str, list[dict[str, float]]]]:
    out = work / "out.img"
    src = f"rbd:{stack.pool}/src:conf={stack.ceph_conf}"
    dst = f"rbd:{stack.pool}/dst:conf={stack.ceph_conf}"
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for round_number in range(repeats):
        for path, commands in cases(stack, out, luns).items():
            to_file, to_lun = path.endswith("file"), path.endswith("iscsi")
            for tool, command in rotated(list(commands.items()), round_number):
                seconds = timed(command, out if to_file else None)
                target = str(out) if to_file else luns["dst"] if to_lun else dst
                origin = luns["src"] if path.startswith("iscsi") else src
                check = subprocess.run(
                    ["qemu-img", "compare", "-f", "raw", "-F", "raw", origin, target],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if check.returncode != 0:
                    raise SystemExit(f"{path} {tool}: output differs: {check.stdout}{check.stderr}")
                used = -1.0 if to_lun else allocated(stack, out if to_file else None)
                results.setdefault(path, {}).setdefault(tool, []).append(
                    {"seconds": seconds, "allocated": used}
                )
                if not to_lun:
                    remove(stack, out if to_file else None)
                time.sleep(SETTLE)
    return results


def rotated(items: list[T], by: int) -> list[T]:
    """Each round starts with another tool: none always runs first after a path's setup."""
    by %= len(items)
    return items[by:] + items[:by]


def allocated(stack: devstack.Stack, out: Path | None) -> float:
    if out is not None:
        return float(os.stat(out).st_blocks * 512)
    done = subprocess.run(
        ["rbd", "-c", stack.ceph_conf, "du", f"{stack.pool}/dst", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout)["images"][0]["used_size"])


def remove(stack: devstack.Stack, out: Path | None) -> None:
    if out is not None:
        out.unlink()
        return
    subprocess.run(
        ["rbd", "-c", stack.ceph_conf, "--no-progress", "rm", f"{stack.pool}/dst"],
        capture_output=True,
        check=True,
    )


def report(size: int, data: int, results: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    print(
        f"\n{human(size)} image, {human(data)} of data in 4 MiB objects; memstore OSD; "
        f"{os.cpu_count()} cpus, {human(memory())} RAM; {time.strftime('%Y-%m-%d')}"
    )
    print("\n| path | tool | median s (min-max) | vs best peer | allocated |")
    print("|---|---|---|---|---|")
    for path, tools in results.items():
        medians = {
            tool: statistics.median(r["seconds"] for r in runs) for tool, runs in tools.items()
        }
        best_peer = min(seconds for tool, seconds in medians.items() if tool != "asyncopy")
        for tool, runs in tools.items():
            times = [r["seconds"] for r in runs]
            ratio = f"{medians[tool] / best_peer:.2f}x"
            print(
                f"| {path} | {tool} | {medians[tool]:.2f} ({min(times):.2f}-{max(times):.2f}) "
                f"| {ratio} | {shown(runs[-1]['allocated'])} |"
            )


def shown(allocated: float) -> str:
    return "n/a (LUN)" if allocated < 0 else human(int(allocated))


if __name__ == "__main__":
    sys.exit(main())
