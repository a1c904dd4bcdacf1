"""The report: medians, ratios and targets from the runs; then JSON, Markdown and plots.

The pure part comes first and is tested with hand-made runs: a tool's median (min-max) on a
path of each figure (wall time, the copier's CPU seconds per GiB of the volume, the whole
stack's, and peak RSS), the best peer in each (the lowest among the peers: the ratios of one
path may name different peers; Cinder's ``copy_volume`` is reported with its own ratio of
wall time, never as the best peer), and the targets, each met or not with its figure:

- every path: asyncopy's median <= 0.8x the best peer's, and <= 0.3x Cinder's;
- ``asyncopy verify`` no slower than ``qemu-img compare`` on the same pair, and ``copy
  --verify`` costing no more over the copy alone than that separate ``qemu-img compare``;
- a 64 GiB thin image copied in <= 2x the time of a dense one holding as much data;
- asyncopy's peak RSS <= 64 MiB + its in-flight budget, and flat across volume sizes;
- no asyncopy destination more allocated than its source;
- dense rbd -> new rbd at two sizes: asyncopy's wall <= 1.0x the best peer's at each size, and
  its CPU slope (CPU-s per GiB between the sizes, start-up left out) <= 1.0x the best peer's;
  every slope is also given against the floor, librados' own write + read per GiB;
- the depth sweep: on each swept path, asyncopy's self-tuning window <= 1.05x the median wall
  time of the best fixed ``--depth`` (its fixed-depth runs, whose budget is raised to fit the
  depth, are left out of the peak RSS target).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from asyncopy.core.engine import DEFAULT_MAX_INFLIGHT
from asyncopy.core.sizes import human
from benchmarks.measure import Run

MiB, GiB = 1 << 20, 1 << 30
PEER_LIMIT = 0.8
CINDER_LIMIT = 0.3
CPU_LIMIT = 0.8  # the copier's CPU per GiB against the peer that spends the least
CPU_PATHS = {
    "rbd -> rbd",
    "rbd -> file",
    "file -> rbd",
    "rbd -> iscsi",
    "iscsi -> rbd",
    "rbd -> loop",
    "loop -> rbd",
}
CPU_LAYOUTS = ("100", "50")
SPARSE_LIMIT = 2.0
RSS_LIMIT = 64 * MiB + DEFAULT_MAX_INFLIGHT
RSS_FLATNESS = 1.10
ALLOCATION_SLACK = 1 * MiB  # file-system metadata of a file destination (extent blocks)
ASYNCOPY_ROLES = ("asyncopy", "asyncopy --verify")
SCALING_PATH = "rbd -> rbd"
SCALING_LIMIT = 1.0  # asyncopy against the best peer, in wall time and in CPU slope
FLOOR_TOOLS = ("rbd bench write", "rbd bench read")
SWEEP_GROUP = "sweep"
SWEEP_TUNED = "asyncopy"  # the sweep's run at the defaults; the others fix --depth
SWEEP_LIMIT = 1.05  # the tuned window against the best fixed depth, in wall time


@dataclass(frozen=True, slots=True)
class Stats:
    median: float
    low: float
    high: float
    count: int


def stats(values: Sequence[float]) -> Stats:
    return Stats(statistics.median(values), min(values), max(values), len(values))


@dataclass(frozen=True, slots=True)
class Row:
    """One tool on one path, layout and group: its runs folded into figures."""

    group: str
    layout: str
    path: str
    tool: str
    role: str
    size: int
    seconds: Stats
    peak_rss: int | None  # the highest of its runs
    allocated: int | None  # the highest of its runs
    source_allocated: int | None
    cpu: Stats | None = None  # the copier's CPU seconds per GiB of the volume
    stack_cpu: Stats | None = None  # the copier's and the dev stack's daemons', per GiB
    depth: Stats | None = None  # the most chunks asyncopy's window let in flight

    @property
    def mib_s(self) -> float:
        """Volume bytes per second (as qemu-img counts: holes included), in MiB."""
        return self.size / self.seconds.median / MiB


def rows(runs: Iterable[Run]) -> list[Row]:
    """A row per (group, layout, path, tool), in the order the tools first ran."""
    grouped: dict[tuple[str, str, str, str], list[Run]] = {}
    for run in runs:
        grouped.setdefault((run.group, run.layout, run.path, run.tool), []).append(run)
    return [fold(same) for same in grouped.values()]


def fold(runs: Sequence[Run]) -> Row:
    first = runs[0]
    rss = [run.peak_rss for run in runs if run.peak_rss is not None]
    used = [run.allocated for run in runs if run.allocated is not None]
    cpu = [per_gib(run.cpu_seconds, run.size) for run in runs if run.cpu_seconds is not None]
    stack = [per_gib(s, run.size) for run in runs if (s := run.stack_cpu_seconds) is not None]
    depth = [float(run.depth) for run in runs if run.depth is not None]
    return Row(
        first.group,
        first.layout,
        first.path,
        first.tool,
        first.role,
        first.size,
        stats([run.seconds for run in runs]),
        max(rss) if rss else None,
        max(used) if used else None,
        first.source_allocated,
        stats(cpu) if cpu else None,
        stats(stack) if stack else None,
        stats(depth) if depth else None,
    )


def per_gib(seconds: float, size: int) -> float:
    """Seconds per GiB of a volume of ``size`` bytes (holes included, as for MiB/s)."""
    return seconds * GiB / size


@dataclass(frozen=True, slots=True)
class Metric:
    """A figure of a row, lower is better: its key in results.json, names and cell format."""

    key: str
    title: str  # with its unit, for a column of values
    short: str  # for a column of ratios
    value: Callable[[Row], float | None]
    cell: Callable[[float], str]


def wall_median(row: Row) -> float:
    return row.seconds.median


def cpu_median(row: Row) -> float | None:
    return None if row.cpu is None else row.cpu.median


def stack_cpu_median(row: Row) -> float | None:
    return None if row.stack_cpu is None else row.stack_cpu.median


def peak_rss(row: Row) -> float | None:
    return None if row.peak_rss is None else float(row.peak_rss)


def two_places(value: float) -> str:
    return f"{value:.2f}"


def size_cell(value: float) -> str:
    return human(int(value))


WALL = Metric("seconds", "s", "wall", wall_median, two_places)
CPU = Metric("cpu_per_gib", "CPU-s/GiB", "CPU", cpu_median, two_places)
STACK_CPU = Metric(
    "stack_cpu_per_gib", "stack CPU-s/GiB", "stack CPU", stack_cpu_median, two_places
)
RSS = Metric("peak_rss", "peak RSS", "RSS", peak_rss, size_cell)
METRICS = (WALL, CPU, STACK_CPU, RSS)


def best_peer(candidates: Iterable[Row], metric: Metric = WALL) -> Row | None:
    """The peer lowest in ``metric``; Cinder and asyncopy's own rows are no peers."""
    peers = [row for row in candidates if row.role == "peer" and metric.value(row) is not None]
    return min(peers, key=lambda row: metric.value(row) or 0.0, default=None)


def ratio(mine: Row, other: Row | None, metric: Metric = WALL) -> float | None:
    """``mine`` over ``other`` in ``metric``; None where either lacks it."""
    ours, theirs = metric.value(mine), None if other is None else metric.value(other)
    return None if ours is None or not theirs else ours / theirs


@dataclass(frozen=True, slots=True)
class PathSummary:
    """asyncopy on one path and layout against its best peers and Cinder."""

    layout: str
    path: str
    asyncopy: Row
    same: tuple[Row, ...]  # every row of this path and layout, asyncopy's included

    def best(self, metric: Metric = WALL) -> Row | None:
        return best_peer(self.same, metric)

    def ratio_to_best(self, metric: Metric = WALL) -> float | None:
        return ratio(self.asyncopy, self.best(metric), metric)

    @property
    def best_peer(self) -> Row | None:
        return self.best(WALL)

    @property
    def cinder(self) -> Row | None:
        return next((row for row in self.same if row.role == "cinder"), None)

    @property
    def ratio_best(self) -> float | None:
        return self.ratio_to_best(WALL)

    @property
    def ratio_cinder(self) -> float | None:
        return ratio(self.asyncopy, self.cinder)


def path_summaries(all_rows: Sequence[Row]) -> list[PathSummary]:
    found = []
    for row in all_rows:
        if row.group == "main" and row.role == "asyncopy":
            same = tuple(r for r in all_rows if (r.group, r.layout, r.path) == ("main", *key(row)))
            found.append(PathSummary(row.layout, row.path, row, same))
    return found


def key(row: Row) -> tuple[str, str]:
    return row.layout, row.path


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    figure: str
    limit: str
    met: bool
    value: float | None = None


def targets(all_rows: Sequence[Row], runs: Sequence[Run]) -> list[Target]:
    """Every target that the runs measured, in the order of the report."""
    return [
        *path_targets(all_rows),
        *cpu_targets(all_rows),
        *verify_targets(all_rows),
        *sparse_targets(all_rows),
        *rss_targets(all_rows, runs),
        *allocation_targets(runs),
        *scaling_targets(all_rows),
        *sweep_targets(all_rows),
    ]


def where(row: Row) -> str:
    return f"{row.path}, {layout_name(row.layout)}"


def layout_name(layout: str) -> str:
    return f"{layout}%" if layout.isdigit() else layout


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def path_targets(all_rows: Sequence[Row]) -> list[Target]:
    found = []
    for summary in path_summaries(all_rows):
        mine = summary.asyncopy
        for other, limit, label in (
            (summary.best_peer, PEER_LIMIT, "best peer"),
            (summary.cinder, CINDER_LIMIT, "Cinder copy_volume"),
        ):
            value = ratio(mine, other)
            if other is None or value is None:
                continue
            figure = (
                f"{value:.2f}x: {seconds(mine.seconds.median)} vs {other.tool} "
                f"{seconds(other.seconds.median)}"
            )
            name = f"{where(mine)}: asyncopy <= {limit:.1f}x {label}"
            found.append(Target(name, figure, f"<= {limit:.2f}x", value <= limit, value))
    return found


def cpu_targets(all_rows: Sequence[Row]) -> list[Target]:
    """The copier's CPU per GiB against the thriftiest peer's, where the CPU matters most."""
    found = []
    for summary in path_summaries(all_rows):
        if summary.path not in CPU_PATHS or summary.layout not in CPU_LAYOUTS:
            continue
        mine, best = summary.asyncopy, summary.best(CPU)
        value = summary.ratio_to_best(CPU)
        if best is None or best.cpu is None or mine.cpu is None or value is None:
            continue
        figure = (
            f"{value:.2f}x: {mine.cpu.median:.2f} vs {best.tool} {best.cpu.median:.2f} CPU-s/GiB"
        )
        name = f"{where(mine)}: asyncopy CPU <= {CPU_LIMIT:.1f}x the best peer's"
        found.append(Target(name, figure, f"<= {CPU_LIMIT:.2f}x", value <= CPU_LIMIT, value))
    return found


def verify_targets(all_rows: Sequence[Row]) -> list[Target]:
    found = []
    checks = {(r.layout, r.tool): r for r in all_rows if r.group == "verify"}
    for (layout, tool), mine in checks.items():
        compare = checks.get((layout, "qemu-img compare"))
        if tool != "asyncopy verify" or compare is None:
            continue
        value = mine.seconds.median / compare.seconds.median
        figure = (
            f"{value:.2f}x: {seconds(mine.seconds.median)} vs qemu-img compare "
            f"{seconds(compare.seconds.median)}"
        )
        name = (
            f"{mine.path}, {layout_name(layout)}: asyncopy verify no slower than qemu-img compare"
        )
        found.append(Target(name, figure, "<= 1.00x", value <= 1.0, value))
    for overhead in verify_overheads(all_rows):
        compare = checks.get((overhead.layout, "qemu-img compare"))
        if compare is None:
            continue
        limit = compare.seconds.median
        figure = (
            f"{overhead.seconds:+.2f} s ({overhead.percent:+.0f}%) over the copy alone; "
            f"qemu-img compare {seconds(limit)}"
        )
        name = (
            f"{overhead.path}, {layout_name(overhead.layout)}: copy --verify costs no more "
            "than a separate qemu-img compare"
        )
        found.append(
            Target(name, figure, f"<= +{limit:.2f} s", overhead.seconds <= limit, overhead.seconds)
        )
    return found


@dataclass(frozen=True, slots=True)
class Overhead:
    """``copy --verify`` against the copy alone on one path."""

    layout: str
    path: str
    copy: float
    verified: float

    @property
    def seconds(self) -> float:
        return self.verified - self.copy

    @property
    def percent(self) -> float:
        return 100 * self.seconds / self.copy


def verify_overheads(all_rows: Sequence[Row]) -> list[Overhead]:
    main = {(r.layout, r.path, r.role): r for r in all_rows if r.group == "main"}
    return [
        Overhead(
            r.layout, r.path, main[(r.layout, r.path, "asyncopy")].seconds.median, r.seconds.median
        )
        for r in all_rows
        if r.group == "main"
        and r.role == "asyncopy --verify"
        and (r.layout, r.path, "asyncopy") in main
    ]


def sparse_targets(all_rows: Sequence[Row]) -> list[Target]:
    pair = sorted((r for r in all_rows if r.group == "sparse"), key=lambda r: r.size)
    if len(pair) != 2:
        return []
    dense, thin = pair
    value = thin.seconds.median / dense.seconds.median
    figure = (
        f"{value:.2f}x: {thin.layout} {seconds(thin.seconds.median)} vs {dense.layout} "
        f"{seconds(dense.seconds.median)}"
    )
    name = f"rbd -> rbd: {thin.layout} <= {SPARSE_LIMIT:.0f}x {dense.layout}"
    return [Target(name, figure, f"<= {SPARSE_LIMIT:.2f}x", value <= SPARSE_LIMIT, value)]


def is_asyncopy(run: Run) -> bool:
    return run.role in ASYNCOPY_ROLES or run.tool == "asyncopy verify"


def raised_budget(run: Run) -> bool:
    """A fixed-depth run of the sweep: its in-flight budget is raised to fit the depth."""
    return run.group == SWEEP_GROUP and run.tool != SWEEP_TUNED


def rss_targets(all_rows: Sequence[Row], runs: Sequence[Run]) -> list[Target]:
    found = []
    measured = [
        run
        for run in runs
        if is_asyncopy(run) and run.peak_rss is not None and not raised_budget(run)
    ]
    if measured:
        worst = max(measured, key=lambda run: run.peak_rss or 0)
        peak = worst.peak_rss or 0
        figure = f"{human(peak)} ({worst.tool}, {worst.path}, {layout_name(worst.layout)})"
        name = f"asyncopy peak RSS <= 64 MiB + in-flight budget {human(DEFAULT_MAX_INFLIGHT)}"
        found.append(Target(name, figure, f"<= {human(RSS_LIMIT)}", peak <= RSS_LIMIT, float(peak)))
    scaled = sorted((r for r in all_rows if r.group == "rss" and r.peak_rss), key=lambda r: r.size)
    if len(scaled) >= 2:
        small, large = scaled[0], scaled[-1]
        value = (large.peak_rss or 0) / (small.peak_rss or 1)
        figure = (
            f"{value:.2f}x: {human(large.peak_rss or 0)} at {large.layout} vs "
            f"{human(small.peak_rss or 0)} at {small.layout}"
        )
        name = f"asyncopy peak RSS flat: {large.layout} within 10% of {small.layout}"
        found.append(Target(name, figure, f"<= {RSS_FLATNESS:.2f}x", value <= RSS_FLATNESS, value))
    return found


def allocation_targets(runs: Sequence[Run]) -> list[Target]:
    measured = [
        run
        for run in runs
        if is_asyncopy(run) and run.allocated is not None and run.source_allocated is not None
    ]
    if not measured:
        return []
    over = [run for run in measured if excess(run) > ALLOCATION_SLACK]
    worst = max(measured, key=excess)
    figure = (
        f"{len(over)} of {len(measured)} runs over; largest excess {human(max(0, excess(worst)))} "
        f"({worst.path}, {layout_name(worst.layout)})"
    )
    name = "asyncopy destination never more allocated than its source"
    return [
        Target(name, figure, f"excess <= {human(ALLOCATION_SLACK)}", not over, float(len(over)))
    ]


def excess(run: Run) -> int:
    return (run.allocated or 0) - (run.source_allocated or 0)


@dataclass(frozen=True, slots=True)
class Slope:
    """A tool's CPU per GiB between two sizes: the start-up, paid at both, cancels."""

    tool: str
    role: str
    small: Row
    large: Row

    @property
    def cpu_per_gib(self) -> float:
        spent = cpu_seconds(self.large) - cpu_seconds(self.small)
        return spent * GiB / (self.large.size - self.small.size)


def cpu_seconds(row: Row) -> float:
    """The median CPU-s of a row's runs (all of one size: its per-GiB median, scaled back)."""
    return 0.0 if row.cpu is None else row.cpu.median * row.size / GiB


@dataclass(frozen=True, slots=True)
class Scaling:
    """The dense rbd -> rbd copies at two or more sizes, and the floor's runs."""

    rows: tuple[Row, ...]
    floor: tuple[Row, ...]

    @property
    def sizes(self) -> list[int]:
        return sorted({row.size for row in self.rows})

    def at(self, size: int) -> list[Row]:
        return [row for row in self.rows if row.size == size]

    def asyncopy(self, size: int) -> Row | None:
        return next((row for row in self.at(size) if row.role == "asyncopy"), None)

    def slopes(self) -> list[Slope]:
        """Each tool measured at the smallest and the largest size, in the order it ran."""
        small, large = self.sizes[0], self.sizes[-1]
        ends = {(row.tool, row.size): row for row in self.rows}
        return [
            Slope(row.tool, row.role, row, ends[(row.tool, large)])
            for row in self.at(small)
            if small < large and (row.tool, large) in ends and row.cpu is not None
        ]

    def best_slope(self) -> Slope | None:
        peers = [slope for slope in self.slopes() if slope.role == "peer"]
        return min(peers, key=lambda slope: slope.cpu_per_gib, default=None)

    @property
    def floor_cpu(self) -> float | None:
        """The client's CPU-s per GiB of ``rbd bench`` write and read, summed (medians)."""
        spent = [cpu_median(row) for row in self.floor]
        found = [value for value in spent if value is not None]
        return sum(found) if found and len(found) == len(spent) else None


def scaling(all_rows: Sequence[Row]) -> Scaling | None:
    chosen = tuple(row for row in all_rows if row.group == "scaling")
    floor = tuple(row for row in all_rows if row.group == "floor")
    return Scaling(chosen, floor) if chosen else None


def scaling_targets(all_rows: Sequence[Row]) -> list[Target]:
    table = scaling(all_rows)
    if table is None:
        return []
    found = []
    for size in table.sizes:
        mine, best = table.asyncopy(size), best_peer(table.at(size))
        value = None if mine is None else ratio(mine, best)
        if mine is None or best is None or value is None:
            continue
        figure = (
            f"{value:.2f}x: {seconds(mine.seconds.median)} vs {best.tool} "
            f"{seconds(best.seconds.median)}"
        )
        name = f"{SCALING_PATH}, {mine.layout}: asyncopy <= {SCALING_LIMIT:.1f}x best peer"
        found.append(
            Target(name, figure, f"<= {SCALING_LIMIT:.2f}x", value <= SCALING_LIMIT, value)
        )
    mine_slope = next((s for s in table.slopes() if s.role == "asyncopy"), None)
    best_slope = table.best_slope()
    if mine_slope is not None and best_slope is not None and best_slope.cpu_per_gib > 0:
        value = mine_slope.cpu_per_gib / best_slope.cpu_per_gib
        figure = (
            f"{value:.2f}x: {mine_slope.cpu_per_gib:.2f} vs {best_slope.tool} "
            f"{best_slope.cpu_per_gib:.2f} CPU-s/GiB"
        )
        name = (
            f"{SCALING_PATH}, dense {human(mine_slope.small.size)} to "
            f"{human(mine_slope.large.size)}: asyncopy CPU slope <= {SCALING_LIMIT:.1f}x "
            "the best peer's"
        )
        found.append(
            Target(name, figure, f"<= {SCALING_LIMIT:.2f}x", value <= SCALING_LIMIT, value)
        )
    return found


def scaling_json(table: Scaling) -> dict[str, Any]:
    """Per size and tool the medians and asyncopy's ratios; per tool the slope."""
    floor = table.floor_cpu
    best = table.best_slope()
    rows = []
    for size in table.sizes:
        same = table.at(size)
        for row in same:
            rows.append(
                {
                    "size": size,
                    "volume": row.layout,
                    "tool": row.tool,
                    "role": row.role,
                    "seconds": row.seconds.median,
                    "cpu_seconds": cpu_seconds(row),
                    "peak_rss": row.peak_rss,
                    "best_peer_seconds": best_tool(same, WALL),
                    "ratio_best_peer_seconds": ratio(row, best_peer(same, WALL), WALL),
                    "best_peer_cpu": best_tool(same, CPU),
                    "ratio_best_peer_cpu": ratio(row, best_peer(same, CPU), CPU),
                }
            )
    slopes = [
        {
            "tool": slope.tool,
            "role": slope.role,
            "cpu_per_gib": slope.cpu_per_gib,
            "ratio_floor": slope.cpu_per_gib / floor if floor else None,
            "ratio_best_peer": (
                slope.cpu_per_gib / best.cpu_per_gib if best and best.cpu_per_gib > 0 else None
            ),
        }
        for slope in table.slopes()
    ]
    return {
        "sizes": table.sizes,
        "floor_cpu_per_gib": floor,
        "floor": {row.tool: cpu_median(row) for row in table.floor},
        "rows": rows,
        "slopes": slopes,
        "best_peer_slope": best.tool if best else None,
    }


@dataclass(frozen=True, slots=True)
class Sweep:
    """One path of the depth sweep: asyncopy tuned, and at each fixed depth."""

    path: str
    tuned: Row
    fixed: tuple[Row, ...]  # by depth, as they first ran

    @property
    def best(self) -> Row:
        """The fixed depth lowest in median wall time."""
        return min(self.fixed, key=wall_median)

    @property
    def ratio(self) -> float:
        return self.tuned.seconds.median / self.best.seconds.median

    @property
    def reached(self) -> Stats | None:
        return self.tuned.depth


def sweeps(all_rows: Sequence[Row]) -> list[Sweep]:
    """Per swept path, in the order they ran; a path without a fixed depth is left out."""
    found = []
    chosen = [row for row in all_rows if row.group == SWEEP_GROUP]
    for tuned in (row for row in chosen if row.tool == SWEEP_TUNED):
        fixed = tuple(r for r in chosen if r.path == tuned.path and r.tool != SWEEP_TUNED)
        if fixed:
            found.append(Sweep(tuned.path, tuned, fixed))
    return found


def sweep_targets(all_rows: Sequence[Row]) -> list[Target]:
    found = []
    for item in sweeps(all_rows):
        best = item.best
        figure = (
            f"{item.ratio:.2f}x: {seconds(item.tuned.seconds.median)} vs {best.tool} "
            f"{seconds(best.seconds.median)}"
        )
        name = f"{item.path}: tuned window within 5% of the best fixed depth"
        limit = f"<= {SWEEP_LIMIT:.2f}x"
        found.append(Target(name, figure, limit, item.ratio <= SWEEP_LIMIT, item.ratio))
    return found


def sweep_json(found: Sequence[Sweep]) -> list[dict[str, Any]]:
    """Per path the medians of each run, the best fixed depth, the ratio, the depth reached."""
    return [
        {
            "path": item.path,
            "layout": item.tuned.layout,
            "runs": [
                {
                    "tool": row.tool,
                    "seconds": row.seconds.median,
                    "cpu_seconds": cpu_seconds(row),
                    "peak_rss": row.peak_rss,
                }
                for row in (*item.fixed, item.tuned)
            ],
            "best_fixed": item.best.tool,
            "best_fixed_seconds": item.best.seconds.median,
            "tuned_seconds": item.tuned.seconds.median,
            "ratio_best_fixed": item.ratio,
            "depth_reached": None if item.reached is None else asdict(item.reached),
        }
        for item in found
    ]


def best_tool(same: Sequence[Row], metric: Metric) -> str | None:
    best = best_peer(same, metric)
    return None if best is None else best.tool


# -- writing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """Everything a benchmark measured, and where and how."""

    date: str
    command: str
    machine: dict[str, str]
    settings: dict[str, Any]
    layouts: dict[str, str]
    sources: dict[str, dict[str, int]]
    runs: list[Run]
    not_applicable: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    # Cinder's migrate_volume: manager, round, direction, seconds, source/destination allocated
    cinder_migrations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Results:
        """The results a run wrote to ``results.json`` (to render its report again)."""
        document = json.loads(path.read_text())
        names = {item.name for item in fields(cls)}
        raw = {name: value for name, value in document.items() if name in names}
        return cls(**{**raw, "runs": [Run(**run) for run in raw["runs"]]})


def write(results: Results, out: Path, markdown: Path) -> list[Target]:
    """``results.json`` and the plots in ``out``, the report at ``markdown``; the targets.

    The JSON goes first: a report that fails to render loses no measurement.
    """
    all_rows = rows(results.runs)
    goals = targets(all_rows, results.runs)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for stale in plots.glob("*.png"):  # the plots of this run only, none of an earlier one
        stale.unlink()
    markdown.parent.mkdir(parents=True, exist_ok=True)
    document = {
        **asdict(results),
        "rows": [asdict(row) for row in all_rows],
        "paths": [path_json(summary) for summary in path_summaries(all_rows)],
        "targets": [asdict(goal) for goal in goals],
    }
    table = scaling(all_rows)
    if table is not None:
        document["scaling"] = scaling_json(table)
    swept = sweeps(all_rows)
    if swept:
        document["sweep"] = sweep_json(swept)
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    drawn = draw(results, all_rows, plots)
    links = {name: os.path.relpath(path, markdown.parent) for name, path in drawn.items()}
    markdown.write_text(render(results, all_rows, goals, links))
    return goals


def path_json(summary: PathSummary) -> dict[str, Any]:
    """A path's medians: wall time at the top, and every figure under ``metrics``."""
    return {
        "layout": summary.layout,
        "path": summary.path,
        "asyncopy": summary.asyncopy.seconds.median,
        "best_peer": summary.best_peer.tool if summary.best_peer else None,
        "best_peer_seconds": summary.best_peer.seconds.median if summary.best_peer else None,
        "ratio_best_peer": summary.ratio_best,
        "cinder_seconds": summary.cinder.seconds.median if summary.cinder else None,
        "ratio_cinder": summary.ratio_cinder,
        "metrics": {metric.key: metric_json(summary, metric) for metric in METRICS},
    }


def metric_json(summary: PathSummary, metric: Metric) -> dict[str, Any]:
    best = summary.best(metric)
    return {
        "asyncopy": metric.value(summary.asyncopy),
        "best_peer": best.tool if best else None,
        "best_peer_value": metric.value(best) if best else None,
        "ratio_best_peer": summary.ratio_to_best(metric),
    }


def targets_table(goals: Sequence[Target]) -> str:
    lines = header("target", "figure", "limit", "met")
    for goal in goals:
        met = "yes" if goal.met else "NO"
        lines.append(f"| {md(goal.name)} | {md(goal.figure)} | {goal.limit} | {met} |")
    lines.append(f"\n{sum(goal.met for goal in goals)} of {len(goals)} targets met.")
    return "\n".join(lines)


def md(text: str) -> str:
    """Text for a Markdown table cell: a tool's pipe is no column break."""
    return text.replace("|", "\\|")


def spread(value: Stats | None) -> str:
    if value is None:
        return "n/a"
    return f"{value.median:.2f} ({value.low:.2f}-{value.high:.2f})"


def size_or_na(value: int | None, why: str) -> str:
    return f"n/a ({why})" if value is None else human(value)


def render(
    results: Results, all_rows: Sequence[Row], goals: Sequence[Target], links: dict[str, str]
) -> str:
    size = int(results.settings["size"])
    parts = [
        "# asyncopy benchmark",
        f"{results.date}: {human(size)} volumes, {results.settings['repeats']} interleaved "
        f"round(s), {results.seconds / 60:.1f} minutes in all.",
        f"Reproduce: `make bench` (this run: `{results.command}`).",
        machine_table(results.machine),
        METHOD,
        "## Targets\n\n" + targets_table(goals),
    ]
    for layout, title in results.layouts.items():
        parts.append(layout_section(layout, title, all_rows, results, links))
    parts.append(ceiling_section(all_rows))
    parts.append(extras_section(all_rows, links))
    table = scaling(all_rows)
    if table is not None:
        parts.append(scaling_section(table))
    swept = sweeps(all_rows)
    if swept:
        parts.append(sweep_section(swept))
    if results.cinder_migrations:
        parts.append(cinder_section(results.cinder_migrations))
    if results.not_applicable:
        lines = [
            f"- {item['tool']} on {item['path']}: {item['why']}." for item in results.not_applicable
        ]
        parts.append("## Not measured\n\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


METHOD = """## How it was measured

A private dev stack on loopback: a single-node Ceph cluster whose OSD is a memstore (RAM) and a
tgtd iSCSI target with file-backed thin LUNs; files and loop-device backings on the local disk.
Each layout's sources (an RBD image, a sparse file, a loop device over it, a thin LUN) hold the
same random bytes in 4 MiB objects. In each round every tool of a path runs once, in an order
that rotates from round to round; page caches are dropped before each run, a device or LUN
destination first gets stale bytes (a copy must overwrite or zero them), and file, device and
LUN outputs are synced inside the timed span. Commands are timed as an operator runs them,
process start included; Cinder's `copy_volume` is timed inside its process (opening, copying,
closing, fsync), as a running cinder-volume pays no start-up. Every output is checked before
it is removed, with `asyncopy verify --manifest` against the digests of the bytes the
benchmark wrote (the sources themselves, and the extras' outputs, with `qemu-img compare`);
a mismatch stops the benchmark. MiB/s is the volume's size over the median time. Peak RSS
from GNU time; allocation from `rbd du` (images) and `st_blocks` (files); an RBD output is
removed and the cluster left to settle before the next run.

CPU, per GiB of the volume (holes included) and as medians over the rounds: the copier's is
the user + sys time of its process, its threads and the children it waits for, and of the
sync of its output, from the kernel's rusage of the timed process; the stack's adds what the
dev stack's daemons (ceph-mon, ceph-osd, tgtd) spent over the same span, from their
`/proc/PID/stat` (10 ms ticks), i.e. the work a tool makes the cluster and the target do.
Kernel threads (loop-device workers, writeback) are in neither figure, and on loopback the
softirq cost of receiving can be charged to the sender. Cinder's CPU includes its
interpreter start and imports, which its time leaves out. Each figure's best peer is the
peer lowest in that figure, so the ratios of one path may name different peers."""


def machine_table(machine: dict[str, str]) -> str:
    lines = ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in machine.items()]
    return "\n".join(lines)


def layout_section(
    layout: str, title: str, all_rows: Sequence[Row], results: Results, links: dict[str, str]
) -> str:
    source = results.sources.get(layout, {})
    lines = [f"## Paths: {title}", ""]
    if "data" in source:
        size = human(int(results.settings["size"]))
        lines += [f"{human(source['data'])} of data in each {size} source.", ""]
    lines += [
        "Medians (peak RSS: the highest run); each figure's best peer is the peer lowest in it.",
        "",
        *header(*summary_columns()),
    ]
    for summary in path_summaries(all_rows):
        if summary.layout == layout:
            lines.append(summary_line(summary))
    lines += ["", *header(*tool_columns())]
    for row in all_rows:
        if row.group == "main" and row.layout == layout:
            same = [r for r in all_rows if (r.group, *key(r)) == ("main", *key(row))]
            lines.append(tool_line(row, same))
    plot = links.get(f"paths-{layout}")
    if plot:
        lines += ["", f"![wall time, CPU and peak RSS, {title}]({plot})"]
    return "\n".join(lines)


def summary_columns() -> list[str]:
    """The path, then asyncopy, its best peer and the ratio in each figure, then Cinder."""
    columns = ["path"]
    for metric in METRICS:
        columns += [
            f"asyncopy {metric.title}",
            f"best peer {metric.title}",
            f"{metric.short} ratio",
        ]
    return [*columns, "Cinder s", "asyncopy / Cinder"]


def summary_line(summary: PathSummary) -> str:
    cells = [summary.path]
    for metric in METRICS:
        best = summary.best(metric)
        cells += [
            value_cell(summary.asyncopy, metric),
            f"{md(best.tool)} {value_cell(best, metric)}" if best else "none",
            format_ratio(summary.ratio_to_best(metric)),
        ]
    cinder = summary.cinder
    cells += [value_cell(cinder, WALL) if cinder else "n/a", format_ratio(summary.ratio_cinder)]
    return "| " + " | ".join(cells) + " |"


def tool_columns() -> list[str]:
    return [
        "path",
        "tool",
        "median (min-max) s",
        "MiB/s",
        "wall vs best peer",
        "CPU-s/GiB",
        "CPU vs best peer",
        "stack CPU-s/GiB",
        "stack CPU vs best peer",
        "peak RSS",
        "RSS vs best peer",
        "allocated (source)",
    ]


def tool_line(row: Row, same: Sequence[Row]) -> str:
    """One tool on a path: every figure with its spread, each against that figure's best."""
    versus = {
        metric.key: format_ratio(ratio(row, best_peer(same, metric), metric)) for metric in METRICS
    }
    cells = [
        row.path,
        md(row.tool),
        spread(row.seconds),
        f"{row.mib_s:.0f}",
        versus[WALL.key],
        spread(row.cpu),
        versus[CPU.key],
        spread(row.stack_cpu),
        versus[STACK_CPU.key],
        size_or_na(row.peak_rss, "none"),
        versus[RSS.key],
        allocation(row),
    ]
    return "| " + " | ".join(cells) + " |"


def value_cell(row: Row, metric: Metric) -> str:
    value = metric.value(row)
    return "n/a" if value is None else metric.cell(value)


def header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def allocation(row: Row) -> str:
    if row.allocated is None:
        return "n/a (device or LUN)" if row.group == "main" else "-"
    source = size_or_na(row.source_allocated, "unknown")
    return f"{human(row.allocated)} ({source})"


def ceiling_section(all_rows: Sequence[Row]) -> str:
    lines = [
        "## Ceiling",
        "",
        "What the stack moves at best: `rbd bench --io-threads 16 --io-size 4M --io-pattern seq`"
        " on the dev stack, and `dd bs=4M` with O_DIRECT on a loop device (from /dev/zero, to "
        "/dev/null); each tool's own rate, process start left out (its CPU includes it).",
        "",
        *header("tool", "median (min-max) s", "MiB/s", "CPU-s/GiB", "stack CPU-s/GiB", "peak RSS"),
    ]
    for row in all_rows:
        if row.group == "ceiling":
            lines.append(
                f"| {row.tool} | {spread(row.seconds)} | {row.mib_s:.0f} | {spread(row.cpu)} "
                f"| {spread(row.stack_cpu)} | {size_or_na(row.peak_rss, 'none')} |"
            )
    return "\n".join(lines)


def cinder_section(migrations: Sequence[dict[str, Any]]) -> str:
    """Cinder's own migrate_volume, stock against the one volume_manager line, per direction."""
    lines = [
        "## Cinder's migrate_volume",
        "",
        "Cinder 29's generic migration of a 1 GiB volume holding 12 MiB between two "
        "cinder-volume services (RBDDriver, NfsDriver), `python -m "
        "benchmarks.cinder_migration`; wall time of `migrate_volume`, median (min-max).",
        "",
        "| direction | stock s | stock allocated | asyncopy s | asyncopy allocated | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for direction in dict.fromkeys(item["direction"] for item in migrations):
        cells: list[str] = []
        medians: list[float] = []
        for manager in ("stock", "asyncopy"):
            runs = [
                item
                for item in migrations
                if item["direction"] == direction and item["manager"] == manager
            ]
            timing = stats([float(item["seconds"]) for item in runs])
            medians.append(timing.median)
            cells += [spread(timing), human(max(item["destination_allocated"] for item in runs))]
        cells.append(format_ratio(medians[1] / medians[0] if medians[0] else None))
        lines.append(f"| {md(direction)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def timing_cells(label: str, row: Row) -> list[str]:
    """A row's label, tool, wall, CPU-s and peak RSS cells, as the extras' tables show them."""
    cpu = "n/a" if row.cpu is None else spread(scaled(row.cpu, row.size / GiB))
    return [label, md(row.tool), spread(row.seconds), cpu, size_or_na(row.peak_rss, "none")]


def scaling_section(table: Scaling) -> str:
    """The dense rbd -> new rbd copies per size and tool, then each tool's CPU slope."""
    lines = [
        "## rbd -> rbd scaling (dense)",
        "",
        "Dense images (every 4 MiB object random bytes) copied onto a new image: asyncopy "
        "`copy` at its defaults, `qemu-img convert -f raw -O raw -m 8 -W` and `-m 16 -W`, "
        "`rbd cp`; medians (min-max) of the interleaved rounds, process start included; "
        "CPU is the copier's user + sys. Ratios are against the best peer in that figure.",
        "",
        *header("volume", "tool", "wall s", "CPU-s", "peak RSS", "wall ratio", "CPU ratio"),
    ]
    for size in table.sizes:
        same = table.at(size)
        for row in same:
            cells = [
                *timing_cells(row.layout, row),
                format_ratio(ratio(row, best_peer(same, WALL), WALL)),
                format_ratio(ratio(row, best_peer(same, CPU), CPU)),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    floor = table.floor_cpu
    sizes = table.sizes
    lines += [
        "",
        f"CPU-s per GiB between {human(sizes[0])} and {human(sizes[-1])} (the slope of the "
        "median CPU-s: the start-up cancels), against the best peer's slope and the floor.",
        "",
        *header("tool", "CPU-s/GiB slope", "vs best peer", "vs floor"),
    ]
    best = table.best_slope()
    for slope in table.slopes():
        versus = slope.cpu_per_gib / best.cpu_per_gib if best and best.cpu_per_gib > 0 else None
        cells = [
            md(slope.tool),
            f"{slope.cpu_per_gib:.2f}",
            format_ratio(versus),
            format_ratio(slope.cpu_per_gib / floor if floor else None),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    parts = [f"{row.tool} {spread(row.cpu)}" for row in table.floor]
    if floor is not None and table.floor:
        volume = human(table.floor[0].size)
        lines += [
            "",
            f"The floor, librados alone: `rbd bench` 4 MiB sequential, 8 threads, {volume}, the "
            f"client's CPU-s/GiB: {' + '.join(parts)} = {floor:.2f} (medians).",
        ]
    return "\n".join(lines)


def sweep_section(found: Sequence[Sweep]) -> str:
    """Per path each fixed depth and the tuned window, the best fixed depth, the ratio."""
    layout = layout_name(found[0].tuned.layout)
    lines = [
        "## In-flight window against a depth sweep",
        "",
        f"asyncopy `copy` on the {layout} layout's sources at its defaults (the window tunes "
        "how many chunks are in flight) and with `--depth D` (the budget `--max-inflight` "
        "raised to D x 4 MiB x 2, so that it does not cap the depth); medians (min-max) of "
        "the interleaved rounds, process start included; CPU is the copier's user + sys. "
        'Ratios are against the best fixed depth in wall time; "depth reached" is the most '
        "chunks the tuned window let in flight.",
        "",
        *header("path", "run", "wall s", "CPU-s", "peak RSS", "vs best fixed"),
    ]
    for item in found:
        for row in (*item.fixed, item.tuned):
            ratio_to_best = format_ratio(row.seconds.median / item.best.seconds.median)
            lines.append("| " + " | ".join([*timing_cells(item.path, row), ratio_to_best]) + " |")
    lines += ["", *header("path", "best fixed depth", "tuned / best", "depth reached")]
    for item in found:
        depth = item.reached
        reached = "n/a" if depth is None else f"{depth.median:g} ({depth.low:g}-{depth.high:g})"
        cells = [item.path, md(item.best.tool), format_ratio(item.ratio), reached]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaled(value: Stats, factor: float) -> Stats:
    return Stats(value.median * factor, value.low * factor, value.high * factor, value.count)


def extras_section(all_rows: Sequence[Row], links: dict[str, str]) -> str:
    lines = ["## Extras", "", "### copy --verify against the copy alone", ""]
    lines += ["| path | copy s | copy --verify s | overhead |", "|---|---|---|---|"]
    for item in verify_overheads(all_rows):
        lines.append(
            f"| {item.path}, {layout_name(item.layout)} | {item.copy:.2f} | {item.verified:.2f} "
            f"| {item.seconds:+.2f} s ({item.percent:+.0f}%) |"
        )
    lines += ["", "### asyncopy verify against qemu-img compare (an RBD image and its copy)", ""]
    lines += extra_table([r for r in all_rows if r.group == "verify"])
    lines += ["", "### Sparse scaling: asyncopy rbd -> rbd", ""]
    lines += extra_table([r for r in all_rows if r.group == "sparse"])
    lines += ["", "### Peak RSS against volume size: asyncopy rbd -> rbd of thin images", ""]
    lines += ["Each image holds the same data (the allocation column): only the size changes.", ""]
    lines += extra_table([r for r in all_rows if r.group == "rss"])
    plot = links.get("rss")
    if plot:
        lines += ["", f"![peak RSS against volume size]({plot})"]
    return "\n".join(lines)


def extra_table(chosen: Sequence[Row]) -> list[str]:
    if not chosen:
        return ["Not measured in this run."]
    lines = header(
        "volume",
        "tool",
        "median (min-max) s",
        "CPU-s/GiB",
        "stack CPU-s/GiB",
        "peak RSS",
        "allocated (source)",
    )
    for row in chosen:
        lines.append(
            f"| {layout_name(row.layout)} | {row.tool} | {spread(row.seconds)} "
            f"| {spread(row.cpu)} | {spread(row.stack_cpu)} "
            f"| {size_or_na(row.peak_rss, 'none')} | {allocation(row)} |"
        )
    return lines


# -- plots --------------------------------------------------------------------------------

FAMILIES = (  # (legend label, colour): one per kind of tool, in legend order
    ("asyncopy", "tab:blue"),
    ("asyncopy --verify", "lightsteelblue"),
    ("qemu-img convert [-n]", "tab:orange"),
    ("qemu-img convert [-n] -m 16 -W", "tab:red"),
    ("rbd cp, export or import", "tab:green"),
    ("rbd export - | rbd import -", "yellowgreen"),
    ("dd bs=4M iflag=direct oflag=direct", "tab:purple"),
    ("cinder copy_volume", "tab:gray"),
)


def family(tool: str) -> str:
    """A tool's legend label: the -n of an existing destination and the rbd verbs fold."""
    if tool.startswith("qemu-img convert"):
        return "qemu-img convert [-n]" + (" -m 16 -W" if "-m 16" in tool else "")
    if tool in ("rbd cp", "rbd export", "rbd import"):
        return "rbd cp, export or import"
    return tool


def draw(results: Results, all_rows: Sequence[Row], plots: Path) -> dict[str, Path]:
    """The PNG plots: every figure per path and tool for each layout, and RSS against size."""
    import matplotlib

    matplotlib.use("Agg")
    drawn = {}
    for layout, title in results.layouts.items():
        chosen = [r for r in all_rows if r.group == "main" and r.layout == layout]
        if chosen:
            drawn[f"paths-{layout}"] = paths_plot(chosen, title, plots / f"paths-{layout}.png")
    scaled = [r for r in all_rows if r.group == "rss" and r.peak_rss]
    if scaled:
        drawn["rss"] = rss_plot(scaled, plots / "rss.png")
    return drawn


PANELS = (  # (metric, axis label, scale of its values)
    (WALL, "wall time, s (median)", 1.0),
    (CPU, "copier CPU-s per GiB (median; Cinder's with its start)", 1.0),
    (STACK_CPU, "stack CPU-s per GiB (median)", 1.0),
    (RSS, "peak RSS, MiB", 1 / MiB),
)


def paths_plot(chosen: Sequence[Row], title: str, path: Path) -> Path:
    """A panel per figure, side by side; in each, a group of bars per path, a bar per tool."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    paths = list(dict.fromkeys(row.path for row in chosen))
    figure, grid = plt.subplots(2, 2, figsize=(max(12, 1.9 * len(paths)), 9), squeeze=False)
    for axes, (metric, label, scale) in zip(grid.flat, PANELS, strict=True):
        bars(axes, chosen, paths, metric, scale)
        axes.set_ylabel(label)
    handles = [Patch(color=shade, label=label) for label, shade in FAMILIES]
    used = {family(row.tool) for row in chosen}
    shown = [h for h in handles if h.get_label() in used]
    figure.legend(handles=shown, loc="lower center", fontsize=8, ncols=len(shown))
    figure.suptitle(f"Wall time, CPU and peak RSS, {title}")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def bars(
    axes: Any, chosen: Sequence[Row], paths: Sequence[str], metric: Metric, scale: float
) -> None:
    """Grouped bars of one figure: a group per path, a bar per tool (none where unmeasured)."""
    widest = max(sum(1 for r in chosen if r.path == p) for p in paths)
    width = 0.8 / widest
    colors = dict(FAMILIES)
    for x, name in enumerate(paths):
        for i, row in enumerate(r for r in chosen if r.path == name):
            value = metric.value(row)
            if value is not None:
                left = x - 0.4 + width * (i + 0.5)
                color = colors.get(family(row.tool), "black")
                axes.bar(left, value * scale, width, color=color)
    axes.set_xticks(range(len(paths)), paths, rotation=20, fontsize=8)
    axes.set_ylim(bottom=0)


def rss_plot(scaled: Sequence[Row], path: Path) -> Path:
    import matplotlib.pyplot as plt

    ordered = sorted(scaled, key=lambda r: r.size)
    figure, axes = plt.subplots(figsize=(6, 4))
    sizes = [row.size / (1 << 30) for row in ordered]
    axes.plot(
        sizes, [(row.peak_rss or 0) / MiB for row in ordered], "o-", label="asyncopy rbd -> rbd"
    )
    axes.axhline(
        RSS_LIMIT / MiB, color="tab:red", linestyle="--", label="target: 64 MiB + in-flight budget"
    )
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, [human(row.size) for row in ordered])
    axes.minorticks_off()
    axes.set_xlabel(f"volume size (thin, each holding {human(ordered[0].source_allocated or 0)})")
    axes.set_ylabel("peak RSS, MiB")
    axes.set_ylim(bottom=0)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
