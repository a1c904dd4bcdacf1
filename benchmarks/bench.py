"""``make bench``: asyncopy beside its peers on every path, the ceiling, and the extras.

``python -m benchmarks.bench [--size 2G] [--repeats 3] [--out DIR] [--markdown PATH]
[--quick] [--paths rbd-rbd,...] [--layouts 100,50,1] [--no-extras] [--render RESULTS_JSON]``

1. Boot a private dev stack (a single-node Ceph cluster with a memstore OSD, and tgtd) in a
   temporary directory on loopback; make the destinations once: the RBD image ``dst`` (made
   by each run, removed after it), a file, a loop device over a file and a thin LUN.
2. The ceiling: ``rbd bench`` writes and reads, ``dd`` onto and from the loop device.
3. For each layout (100%, 50% and 1% of the 4 MiB objects hold random bytes), make the sources
   once: a sparse file, the RBD image ``src`` with the same bytes, a loop device over the file
   and a thin LUN filled by ``asyncopy copy``, and the manifest of those bytes. Then
   ``--repeats`` rounds: in each, every path runs asyncopy and its peers in an order that
   rotates from round to round. Before each run the page caches are dropped and a device or
   LUN destination gets stale bytes (a copy must overwrite or zero them). After it, the
   output is checked with ``asyncopy verify --manifest`` against the digests of the bytes
   the benchmark wrote (not read back by asyncopy; it reads only the output: half the reads
   of a compare), its allocation read, and it is removed; after an RBD image the cluster
   settles. Each run gives its wall time, peak RSS and CPU (user + sys of the command and
   its children), and the CPU the stack's daemons (ceph-mon, ceph-osd, tgtd) spent
   meanwhile. The sources, and the extras' outputs, are checked with ``qemu-img compare``.
   A wrong copy or a failing command stops everything with one line.
4. The extras: ``copy --verify`` against the copy alone (rows of the main table), ``asyncopy
   verify`` against ``qemu-img compare``, a thin 64 GiB image against a dense 256 MiB one,
   asyncopy's peak RSS at 1, 4 and 16 GiB (each image holding the same 128 MiB), and dense
   rbd -> new rbd at 512 MiB and 2.5 GiB beside ``qemu-img convert -m 8 -W``, ``-m 16 -W``
   and ``rbd cp``, with each tool's CPU slope between the sizes against the floor (``rbd
   bench`` write + read, ``benchmarks/scaling.py``). On the dense layout's sources (or the
   first layout's), asyncopy's self-tuning in-flight window against ``--depth`` 4, 8, 16 and
   32 on rbd -> rbd, file -> rbd, rbd -> iscsi, iscsi -> rbd and rbd -> file (``--quick``:
   4 and 16), with the depth the window reached (``benchmarks/sweep.py``).
5. ``results.json`` and the plots in ``--out``, the Markdown report at ``--markdown``; the
   targets table on stdout. Everything is torn down at the end, after an error and on Ctrl-C.

Kept near 20 minutes at the defaults: Cinder's ``copy_volume`` runs on the 50% layout only
and ``dd`` not on the 1% one (both copy every byte of any layout, so their times hardly move),
and the cluster settles 0.5 s after each RBD output is removed. ``--quick`` runs the 50%
layout only, at 64 MiB, once, with small extras: every path and peer once. The depth sweep
adds about 12 minutes at the defaults (75 copies of 2 GiB: five paths, tuned and four fixed
depths, three rounds; estimated from the last run's medians and per-run checks).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asyncopy.core.engine import DEFAULT_MAX_INFLIGHT
from asyncopy.core.sizes import human, parse_size
from asyncopy.errors import AsyncopyError
from benchmarks import report, scaling, sweep
from benchmarks.cinder_runs import MANAGERS, migrate_there_and_back
from benchmarks.measure import (
    BenchError,
    Run,
    Timing,
    check_identical,
    check_manifest,
    file_allocated,
    machine,
    own_seconds,
    poison,
    rbd_allocated,
)
from benchmarks.measure import run as run_command
from benchmarks.measure import timed as timed_command
from benchmarks.report import layout_name, per_gib
from benchmarks.scaling import FULL_SCALING, QUICK_SCALING, ScalingSizes
from benchmarks.scenarios import (
    ASYNCOPY,
    LAYOUTS,
    NOT_APPLICABLE,
    OBJECT,
    ROUTES,
    TRIMMED,
    VERIFY_ROUTES,
    Endpoint,
    Layout,
    Role,
    Route,
    Tool,
    blocks,
    local_endpoint,
    lun_endpoint,
    rbd_endpoint,
    tools,
    write_file,
    write_image,
    write_manifest,
)
from devtools import devstack
from devtools.loopdev import loop_device

MiB, GiB = 1 << 20, 1 << 30
HERE = Path(__file__).resolve().parent
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ExtraSizes:
    """Volume sizes of the extras: sparse scaling, and peak RSS against the volume size."""

    thin: int
    thin_data: int
    dense: int
    rss: tuple[int, ...]
    rss_data: int  # in each RSS image: the same data, so that only the volume size changes


FULL_EXTRAS = ExtraSizes(
    64 * GiB, 256 * MiB, 256 * MiB, (1 * GiB, 4 * GiB, 16 * GiB), 2 * DEFAULT_MAX_INFLIGHT
)
QUICK_EXTRAS = ExtraSizes(4 * GiB, 16 * MiB, 16 * MiB, (256 * MiB, 1 * GiB, 4 * GiB), 32 * MiB)


@dataclass(frozen=True, slots=True)
class Settings:
    size: int
    repeats: int
    quick: bool
    out: Path
    markdown: Path
    routes: tuple[Route, ...]
    layouts: tuple[Layout, ...]
    extras: bool
    settle: float
    sizes: ExtraSizes
    command: str
    scaling: ScalingSizes = FULL_SCALING
    depths: tuple[int, ...] = sweep.FULL_DEPTHS
    render: Path | None = None

    @property
    def extras_layout(self) -> Layout:
        """The layout of the --verify extras: 50% if it is run, else the first."""
        return next((lay for lay in self.layouts if lay.id == "50"), self.layouts[0])

    @property
    def sweep_layout(self) -> Layout:
        """The layout of the depth sweep: dense if it is run, else the first."""
        return next((lay for lay in self.layouts if lay.id == "100"), self.layouts[0])

    @property
    def osd_bytes(self) -> int:
        """Room for a source and a thick destination, or the extras' largest set, and slack."""
        rss = len(self.sizes.rss) * self.sizes.rss_data
        extras = 2 * max(self.sizes.thin_data + self.sizes.dense, rss)
        if self.extras:
            extras = max(extras, self.scaling.held)
        return max(2 * self.size, extras) + 2 * GiB


def parse_args(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.partition("\n\n")[0]
    )
    parser.add_argument("--size", help="volume size of the paths (default 2G; --quick: 64M)")
    parser.add_argument("--repeats", type=int, help="rounds, at least 3 (default 3; --quick: 1)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results.json, plots")
    parser.add_argument("--markdown", type=Path, default=HERE / "RESULTS.md", help="the report")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small, one round")
    parser.add_argument("--paths", help="comma-separated: " + ",".join(r.id for r in ROUTES))
    parser.add_argument("--layouts", help="comma-separated: " + ",".join(x.id for x in LAYOUTS))
    parser.add_argument("--no-extras", action="store_true", help="only the paths and ceiling")
    parser.add_argument(
        "--render", type=Path, metavar="RESULTS_JSON", help="only write the report of a past run"
    )
    args = parser.parse_args(argv)
    size = parse_size(args.size or ("64M" if args.quick else "2G"))
    repeats = args.repeats if args.repeats is not None else 1 if args.quick else 3
    if size <= 0 or size % OBJECT:
        raise BenchError(f"--size {args.size}: must be a positive multiple of 4M")
    if repeats < (1 if args.quick else 3):
        raise BenchError(f"--repeats {repeats}: at least 3 (1 with --quick)")
    default_layouts = "50" if args.quick else ",".join(x.id for x in LAYOUTS)
    settings = Settings(
        size=size,
        repeats=repeats,
        quick=args.quick,
        out=args.out,
        markdown=args.markdown,
        routes=pick(ROUTES, args.paths, "--paths", lambda route: route.id),
        layouts=pick(LAYOUTS, args.layouts or default_layouts, "--layouts", lambda x: x.id),
        extras=not args.no_extras,
        settle=0.2 if args.quick else 0.5,
        sizes=QUICK_EXTRAS if args.quick else FULL_EXTRAS,
        scaling=QUICK_SCALING if args.quick else FULL_SCALING,
        depths=sweep.QUICK_DEPTHS if args.quick else sweep.FULL_DEPTHS,
        command=shlex.join(["python", "-m", "benchmarks.bench", *argv]),
        render=args.render,
    )
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if settings.osd_bytes > ram // 2:
        raise BenchError(
            f"--size {args.size}: the memstore OSD would need {human(settings.osd_bytes)} "
            f"of this machine's {human(ram)} of RAM"
        )
    return settings


def pick(
    items: Sequence[T], wanted: str | None, option: str, key: Callable[[T], str]
) -> tuple[T, ...]:
    """The items whose id is listed in ``wanted`` (all if None), in their own order."""
    if wanted is None:
        return tuple(items)
    names = {name.strip().rstrip("%") for name in wanted.split(",") if name.strip()}
    known = {key(item) for item in items}
    if not names or names - known:
        unknown = ", ".join(sorted(names - known)) or "nothing"
        raise BenchError(f"{option}: unknown {unknown}; choose from {', '.join(sorted(known))}")
    return tuple(item for item in items if key(item) in names)


def rotated(items: Sequence[T], by: int) -> list[T]:
    """Each round starts with another tool: none always runs first after a path's setup."""
    by %= len(items)
    return [*items[by:], *items[:by]]


STARTED = time.monotonic()


def log(message: str) -> None:
    elapsed = int(time.monotonic() - STARTED)
    print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Case:
    """Where runs go: a path between two endpoints, and how its outputs are checked.

    ``manifest`` holds the digests of the source's bytes for ``asyncopy verify --manifest``;
    without one, ``qemu-img compare`` checks outputs against ``reference``.
    """

    group: str
    layout: str
    path: str
    src: Endpoint
    dst: Endpoint
    reference: str
    source_allocated: int | None
    size: int
    manifest: str | None = None


@dataclass(frozen=True, slots=True)
class Image:
    """A source image of the extras: its label in the report, size and allocation."""

    label: str
    end: Endpoint
    size: int
    allocated: int


class Bench:
    """One benchmark: the stack, the destinations, and every run measured so far."""

    def __init__(self, settings: Settings, work: Path, stack: devstack.Stack) -> None:
        self.s = settings
        self.work = work
        self.stack = stack
        self.conf, self.pool = stack.ceph_conf, stack.pool
        self.runs: list[Run] = []
        self.sources: dict[str, dict[str, int]] = {}
        self.dst: dict[str, Endpoint] = {}
        self.cinder: list[dict[str, Any]] = []

    def timed(self, argv: Sequence[str], what: str, sync: str | None = None) -> Timing:
        """A timed run, with the CPU the stack's daemons spent meanwhile."""
        return timed_command(argv, what=what, sync=sync, daemons=self.stack.daemons)

    def rbd(self, name: str) -> Endpoint:
        return rbd_endpoint(self.conf, self.pool, name)

    def rbd_cli(self, *args: str) -> None:
        run_command(["rbd", "-c", self.conf, "--no-progress", *args], what=f"rbd {args[0]}")

    def remove_if_made(self, image: str) -> None:
        """``rbd rm`` of an image a failed step may not have created: an image that is not
        there must not hide, behind its own error, why the step failed."""
        info = ["rbd", "-c", self.conf, "info", image]
        if subprocess.run(info, capture_output=True, check=False).returncode == 0:
            self.rbd_cli("rm", image)

    def everything(self, cleanup: ExitStack) -> None:
        self.make_destinations(cleanup)
        self.ceiling()
        for layout in self.s.layouts:
            self.layout(layout)
        if self.s.extras:
            self.sparse_scaling()
            self.rss_scaling()
            self.rbd_scaling()
        self.cinder_migrations()

    def make_destinations(self, cleanup: ExitStack) -> None:
        """Made once: the image name, a file, a loop device over a file, a thin LUN."""
        backing = self.work / "dst-loop.img"
        with open(backing, "xb") as out:
            out.truncate(self.s.size)
        device = cleanup.enter_context(loop_device(backing))
        self.dst["rbd"] = self.rbd("dst")
        self.dst["file"] = local_endpoint("file", str(self.work / "out.img"))
        self.dst["loop"] = local_endpoint("loop", device)
        if any(route.dst == "iscsi" for route in self.s.routes):
            lun = devstack.add_lun(self.stack, "dst", self.s.size)
            cleanup.callback(devstack.remove_lun, self.stack, lun)
            self.dst["iscsi"] = lun_endpoint(lun.url, lun.backing)

    # -- the paths ------------------------------------------------------------------------

    def layout(self, layout: Layout) -> None:
        """Make the layout's sources, run every path's tools round by round, remove them."""
        extras_here = self.s.extras and layout == self.s.extras_layout
        with ExitStack() as made:
            sources, manifest = self.make_sources(layout, made, extras_here)
            for round_number in range(self.s.repeats):
                for route in self.s.routes:
                    src, dst = sources[route.src], self.dst[route.dst]
                    case = Case(
                        group="main",
                        layout=layout.id,
                        path=route.title,
                        src=src,
                        dst=dst,
                        reference=sources["file"].uri,
                        source_allocated=self.sources[layout.id].get(route.src),
                        size=self.s.size,
                        manifest=manifest,
                    )
                    found = tools(
                        route,
                        src,
                        dst,
                        self.conf,
                        with_verify=extras_here and route.id in VERIFY_ROUTES,
                        skip=layout.skip,
                    )
                    for tool in rotated(found, round_number):
                        self.one(case, tool, round_number)
            if extras_here:
                self.verify_against_compare(layout, sources["rbd"])
            if self.s.extras and layout == self.s.sweep_layout:
                self.depth_sweep(layout, sources, manifest)

    def make_sources(
        self, layout: Layout, made: ExitStack, with_rbd: bool
    ) -> tuple[dict[str, Endpoint], str]:
        """The layout's sources, all with the same bytes, checked against the file; and the
        manifest of those bytes."""
        kinds = {route.src for route in self.s.routes} | ({"rbd"} if with_rbd else set())
        size, count = self.s.size, layout.objects(self.s.size)
        seed = zlib.crc32(layout.id.encode())
        path = self.work / f"src-{layout.id}.img"
        manifest = self.work / f"src-{layout.id}.manifest.json"
        log(f"layout {layout.title}: {human(count * OBJECT)} of data in {human(size)}")
        made.callback(path.unlink, missing_ok=True)
        write_file(path, size, blocks(size, count, seed))
        write_manifest(manifest, size, blocks(size, count, seed))
        sources = {"file": local_endpoint("file", str(path))}
        allocated = {"file": file_allocated(str(path)), "loop": file_allocated(str(path))}
        what = f"making the sources of layout {layout.title}"
        if "rbd" in kinds:
            made.callback(self.remove_if_made, f"{self.pool}/src")
            write_image(self.conf, self.pool, "src", size, blocks(size, count, seed))
            sources["rbd"] = self.rbd("src")
            check_identical(str(path), sources["rbd"].uri, what=what)
            allocated["rbd"] = rbd_allocated(self.conf, f"{self.pool}/src")
        if "loop" in kinds:
            device = made.enter_context(loop_device(path, read_only=True))
            sources["loop"] = local_endpoint("loop", device)
        if "iscsi" in kinds:
            lun = devstack.add_lun(self.stack, f"src-{layout.id}", size)
            made.callback(devstack.remove_lun, self.stack, lun)
            run_command([*ASYNCOPY, "copy", str(path), lun.url], what=what)
            check_identical(str(path), lun.url, what=what)
            sources["iscsi"] = lun_endpoint(lun.url, lun.backing)
            allocated["iscsi"] = file_allocated(lun.backing)
        self.sources[layout.id] = {"data": count * OBJECT, **allocated}
        return sources, str(manifest)

    def one(self, case: Case, tool: Tool, round_number: int) -> None:
        """One timed run: prepare the destination, time, check, measure, remove, settle.

        The output is checked by ``asyncopy verify --manifest`` against the digests of the
        bytes the benchmark wrote (it reads only the output) or, without a manifest, by
        ``qemu-img compare`` against the source.
        """
        what = f"{tool.name} on {case.path} ({layout_name(case.layout)})"
        dst = case.dst
        self.prepare(dst, tool, case.size)
        timing = self.timed(tool.argv, what, sync=dst.sync)
        seconds = timing.seconds
        if tool.role is Role.CINDER:
            seconds = float(json.loads(timing.stdout)["seconds"])
        depth = None
        if tool.role is Role.ASYNCOPY and "--json" in tool.argv:
            depth = int(json.loads(timing.stdout)["depth"])
        if case.manifest is None:
            check_identical(case.reference, dst.uri, what=what)
        else:
            check_manifest(case.manifest, dst.uri, what=what)
        allocated = self.allocated(dst)
        self.discard(dst)
        self.runs.append(
            Run(
                group=case.group,
                layout=case.layout,
                path=case.path,
                tool=tool.name,
                role=str(tool.role),
                round=round_number,
                size=case.size,
                seconds=seconds,
                peak_rss=timing.peak_rss,
                allocated=allocated,
                source_allocated=case.source_allocated,
                verified=True,
                wall_seconds=timing.seconds,
                cpu_seconds=timing.cpu_seconds,
                daemon_cpu_seconds=timing.daemon_cpu_seconds,
                depth=depth,
            )
        )
        daemons = sum(timing.daemon_cpu_seconds.values())
        cpu = f"CPU {timing.cpu_seconds:.2f} s (daemons {daemons:.2f} s)"
        log(f"{case.group} {what} round {round_number + 1}: {seconds:.2f} s, {cpu}")
        if dst.image is not None:  # the OSD frees the removed image's objects meanwhile
            time.sleep(self.s.settle)

    def prepare(self, dst: Endpoint, tool: Tool, size: int) -> None:
        """A device or LUN gets stale bytes; Cinder gets the destination it needs made."""
        if dst.exists and dst.sync is not None:
            poison(dst.sync, size)
        elif tool.precreate and dst.image is not None:
            self.rbd_cli("create", "--size", f"{size // MiB}M", dst.image)
        elif tool.precreate and dst.local is not None:
            with open(dst.local, "xb") as out:
                out.truncate(size)

    def allocated(self, dst: Endpoint) -> int | None:
        if dst.image is not None:
            return rbd_allocated(self.conf, dst.image)
        if dst.kind == "file" and dst.local is not None:
            return file_allocated(dst.local)
        return None  # a device or a LUN: its allocation is not the copy's

    def discard(self, dst: Endpoint) -> None:
        if dst.image is not None:
            self.rbd_cli("rm", dst.image)
        elif dst.kind == "file" and dst.local is not None:
            os.unlink(dst.local)

    # -- the ceiling and the extras -------------------------------------------------------

    def ceiling(self) -> None:
        """What the stack moves at best: ``rbd bench`` and ``dd`` with O_DIRECT on the device."""
        size, image, device = self.s.size, f"{self.pool}/bench", self.dst["loop"].uri
        self.rbd_cli("create", "--size", f"{size // MiB}M", image)
        bench = ["rbd", "-c", self.conf, "bench", "--io-threads", "16", "--io-size", "4M"]
        bench += ["--io-total", str(size), "--io-pattern", "seq", image, "--io-type"]
        dd_write = ["dd", "if=/dev/zero", f"of={device}", "bs=4M", "oflag=direct"]
        dd_write.append(f"count={size // OBJECT}")
        dd_read = ["dd", f"if={device}", "of=/dev/null", "bs=4M", "iflag=direct"]
        cases = [
            ("rbd bench write", [*bench, "write"]),
            ("rbd bench read", [*bench, "read"]),
            ("dd write (loop device)", dd_write),
            ("dd read (loop device)", dd_read),
        ]
        for round_number in range(self.s.repeats):
            for name, argv in cases:  # in this order: each read follows its write
                timing = self.timed(argv, f"{name} (ceiling)")
                seconds = own_seconds(name, timing, size)
                self.runs.append(
                    Run(
                        group="ceiling",
                        layout="-",
                        path="-",
                        tool=name,
                        role="ceiling",
                        round=round_number,
                        size=size,
                        seconds=seconds,
                        peak_rss=timing.peak_rss,
                        wall_seconds=timing.seconds,
                        cpu_seconds=timing.cpu_seconds,
                        daemon_cpu_seconds=timing.daemon_cpu_seconds,
                    )
                )
                log(f"ceiling round {round_number + 1}: {name} {size / seconds / MiB:.0f} MiB/s")
                time.sleep(self.s.settle)
        self.rbd_cli("rm", image)

    def verify_against_compare(self, layout: Layout, src: Endpoint) -> None:
        """``asyncopy verify`` and ``qemu-img compare`` on one pair: the source and a copy."""
        copy = self.rbd("copy")
        assert src.image is not None
        assert copy.image is not None
        self.rbd_cli("cp", src.image, copy.image)
        compare = ("qemu-img", "compare", "-f", "raw", "-F", "raw", src.uri, copy.uri)
        checks = [
            ("asyncopy verify", (*ASYNCOPY, "verify", src.uri, copy.uri)),
            ("qemu-img compare", compare),
        ]
        for round_number in range(self.s.repeats):
            for name, argv in rotated(checks, round_number):
                what = f"{name} of rbd src and its copy ({layout_name(layout.id)})"
                timing = self.timed(argv, what)
                self.runs.append(
                    Run(
                        group="verify",
                        layout=layout.id,
                        path="rbd vs rbd copy",
                        tool=name,
                        role="check",
                        round=round_number,
                        size=self.s.size,
                        seconds=timing.seconds,
                        peak_rss=timing.peak_rss,
                        verified=True,
                        wall_seconds=timing.seconds,
                        cpu_seconds=timing.cpu_seconds,
                        daemon_cpu_seconds=timing.daemon_cpu_seconds,
                    )
                )
                log(f"verify {what} round {round_number + 1}: {timing.seconds:.2f} s")
                time.sleep(self.s.settle)
        self.rbd_cli("rm", copy.image)

    def depth_sweep(self, layout: Layout, sources: dict[str, Endpoint], manifest: str) -> None:
        """asyncopy tuned and at fixed depths on the swept paths (``benchmarks/sweep.py``)."""
        cases = [
            Case(
                group=report.SWEEP_GROUP,
                layout=layout.id,
                path=route.title,
                src=sources[route.src],
                dst=self.dst[route.dst],
                reference=sources["file"].uri,
                source_allocated=self.sources[layout.id].get(route.src),
                size=self.s.size,
                manifest=manifest,
            )
            for route in sweep.routes(self.s.routes)
        ]
        for round_number in range(self.s.repeats):
            for case in cases:
                found = sweep.copiers(case.src, case.dst, self.s.depths)
                for tool in rotated(found, round_number):
                    self.one(case, tool, round_number)

    def images(self, wanted: Sequence[tuple[str, int, int]], made: ExitStack) -> list[Image]:
        """Images (label, size, objects of data) written through librbd; removed after."""
        found = []
        for number, (label, size, count) in enumerate(wanted):
            name = f"extra-{number}"
            made.callback(self.remove_if_made, f"{self.pool}/{name}")
            data = blocks(size, count, zlib.crc32(label.encode()))
            write_image(self.conf, self.pool, name, size, data)
            used = rbd_allocated(self.conf, f"{self.pool}/{name}")
            found.append(Image(label, self.rbd(name), size, used))
        return found

    def asyncopy_rounds(self, group: str, images: list[Image]) -> None:
        """asyncopy rbd -> rbd of each image, interleaved round by round."""
        dst = self.dst["rbd"]
        for round_number in range(self.s.repeats):
            for image in rotated(images, round_number):
                argv = (*ASYNCOPY, "copy", image.end.uri, dst.uri)
                case = Case(
                    group=group,
                    layout=image.label,
                    path="rbd -> rbd",
                    src=image.end,
                    dst=dst,
                    reference=image.end.uri,
                    source_allocated=image.allocated,
                    size=image.size,
                )
                self.one(case, Tool("asyncopy", Role.ASYNCOPY, argv), round_number)

    def sparse_scaling(self) -> None:
        """A large thin image against a small dense one holding as much data."""
        sizes = self.s.sizes
        thin = f"{human(sizes.thin)} holding {human(sizes.thin_data)}"
        wanted = [
            (thin, sizes.thin, sizes.thin_data // OBJECT),
            (f"{human(sizes.dense)} dense", sizes.dense, sizes.dense // OBJECT),
        ]
        with ExitStack() as made:
            self.asyncopy_rounds("sparse", self.images(wanted, made))

    def rss_scaling(self) -> None:
        """asyncopy's peak RSS on thin images of growing size holding the same data: twice
        the in-flight budget, enough to fill the pipeline (12.5% of 1 GiB, 0.8% of 16 GiB)."""
        sizes = self.s.sizes
        wanted = [(human(size), size, sizes.rss_data // OBJECT) for size in sizes.rss]
        with ExitStack() as made:
            self.asyncopy_rounds("rss", self.images(wanted, made))

    def rbd_scaling(self) -> None:
        """Dense rbd -> new rbd at two sizes, asyncopy against its peers, and the floor:
        ``rbd bench`` first, on the empty pool (``benchmarks/scaling.py``)."""
        sizes = self.s.scaling
        floor = f"{self.pool}/floor"
        with ExitStack() as made:
            made.callback(self.remove_if_made, floor)
            self.rbd_cli("create", "--size", f"{sizes.large // MiB}M", floor)
            for round_number in range(self.s.repeats):
                for run in scaling.floor_runs(
                    self.timed, self.conf, floor, sizes.large, round_number
                ):
                    self.runs.append(run)
                    cpu = per_gib(run.cpu_seconds or 0.0, run.size)
                    log(f"floor round {round_number + 1}: {run.tool} {cpu:.2f} CPU-s/GiB")
                    time.sleep(self.s.settle)
        with ExitStack() as made:
            cases = [self.dense_case(size, made) for size in (sizes.small, sizes.large)]
            for round_number in range(self.s.repeats):
                for case in cases:
                    found = scaling.copiers(case.src, case.dst, self.conf)
                    for tool in rotated(found, round_number):
                        self.one(case, tool, round_number)

    def dense_case(self, size: int, made: ExitStack) -> Case:
        """A dense source image of the scaling table, copied onto a new ``dst`` by each run."""
        name = scaling.image_name(size)
        log(f"scaling: writing a {scaling.label(size)} image")
        made.callback(self.remove_if_made, f"{self.pool}/{name}")
        src, manifest = scaling.dense_source(self.conf, self.pool, self.work, size)
        made.callback(manifest.unlink, missing_ok=True)
        return Case(
            group="scaling",
            layout=scaling.label(size),
            path=report.SCALING_PATH,
            src=src,
            dst=self.dst["rbd"],
            reference=src.uri,
            source_allocated=rbd_allocated(self.conf, f"{self.pool}/{name}"),
            size=size,
            manifest=str(manifest),
        )

    def cinder_migrations(self) -> None:
        """Cinder's own migrate_volume RBD -> NFS -> RBD, stock and with asyncopy's manager,
        interleaved over the rounds; a failed or corrupt migration stops the benchmark."""
        for round_number in range(self.s.repeats):
            for manager in rotated(MANAGERS, round_number):
                log(f"cinder migrate_volume, {manager} manager, round {round_number + 1}")
                workdir = self.work / f"cinder-{manager}-{round_number}"
                try:
                    found = migrate_there_and_back(self.conf, self.pool, workdir, manager)
                except subprocess.SubprocessError as exc:
                    raise BenchError(str(exc)) from exc
                for done in found["directions"]:
                    self.cinder.append(
                        {
                            "manager": manager,
                            "round": round_number,
                            "direction": f"{done['source']} -> {done['destination']}",
                            "seconds": done["seconds"],
                            "source_allocated": done["source_allocated"],
                            "destination_allocated": done["destination_allocated"],
                        }
                    )
                time.sleep(self.s.settle)

    def results(self, started: datetime) -> report.Results:
        settings = {
            "size": self.s.size,
            "repeats": self.s.repeats,
            "quick": self.s.quick,
            "layouts": [layout.id for layout in self.s.layouts],
            "paths": [route.id for route in self.s.routes],
            "extras": self.s.extras,
            "settle_seconds": self.s.settle,
            "osd_bytes": self.s.osd_bytes,
        }
        not_applicable = [
            {"path": route.title, "tool": tool, "why": why}
            for route in self.s.routes
            if "iscsi" in (route.src, route.dst)
            for tool, why in NOT_APPLICABLE.items()
        ]
        trimmed = [
            {"path": f"every path, {layout_name(layout.id)}", "tool": tool, "why": TRIMMED}
            for layout in self.s.layouts
            for tool in layout.skip
        ]
        return report.Results(
            date=started.strftime("%Y-%m-%d %H:%M UTC"),
            command=self.s.command,
            machine=machine(),
            settings=settings,
            layouts={layout.id: layout.title for layout in self.s.layouts},
            sources=self.sources,
            runs=self.runs,
            not_applicable=not_applicable + trimmed,
            seconds=(datetime.now(UTC) - started).total_seconds(),
            cinder_migrations=self.cinder,
        )


def benchmark(settings: Settings) -> report.Results:
    """Boot the stack, measure everything, tear it all down (also after an error or Ctrl-C)."""
    started = datetime.now(UTC)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with ExitStack() as cleanup:
            try:
                work = Path(
                    cleanup.enter_context(tempfile.TemporaryDirectory(prefix="asyncopy-bench-"))
                )
                cleanup.callback(devstack.down, work / "stack")
                stack = devstack.up(work / "stack", osd_bytes=settings.osd_bytes)
                log(f"dev stack up: Ceph on {stack.mon_host}, tgtd on {stack.iscsi_portal}")
                bench = Bench(settings, work, stack)
                bench.everything(cleanup)
                return bench.results(started)
            finally:  # the teardown runs to its end, whatever the keyboard says
                signal.signal(signal.SIGINT, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_args(arguments)
    except (BenchError, AsyncopyError, devstack.DevstackError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2  # bad input: nothing started
    try:
        if settings.render is not None:
            results = report.Results.load(settings.render)
        else:
            results = benchmark(settings)
        targets = report.write(results, settings.out, settings.markdown)
    except (BenchError, AsyncopyError, devstack.DevstackError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; the dev stack was torn down", file=sys.stderr)
        return 130
    print(report.targets_table(targets))
    print(f"\nreport {settings.markdown}, results {settings.out / 'results.json'}")
    print(f"measured in {results.seconds / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
