"""The report: medians, ratios and targets from the runs; then JSON, Markdown and plots.

The pure part comes first and is tested with hand-made runs: a tool's median (min-max) on a
path, the best peer (the lowest median among the peers; Cinder's ``copy_volume`` is reported
with its own ratio, never as the best peer), and the targets, each met or not with its figure:

- every path: asyncopy's median <= 0.8x the best peer's, and <= 0.3x Cinder's;
- ``asyncopy verify`` no slower than ``qemu-img compare`` on the same pair, and ``copy
  --verify`` costing no more over the copy alone than that separate ``qemu-img compare``;
- a 64 GiB thin image copied in <= 2x the time of a dense one holding as much data;
- asyncopy's peak RSS <= 64 MiB + its in-flight budget, and flat across volume sizes;
- no asyncopy destination more allocated than its source.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from asyncopy.engine import DEFAULT_MAX_INFLIGHT
from asyncopy.sizes import human
from benchmarks.measure import Run

MiB = 1 << 20
PEER_LIMIT = 0.8
CINDER_LIMIT = 0.3
SPARSE_LIMIT = 2.0
RSS_LIMIT = 64 * MiB + DEFAULT_MAX_INFLIGHT
RSS_FLATNESS = 1.10
ALLOCATION_SLACK = 1 * MiB  # file-system metadata of a file destination (extent blocks)
ASYNCOPY_ROLES = ("asyncopy", "asyncopy --verify")


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
    )


def best_peer(candidates: Iterable[Row]) -> Row | None:
    """The peer with the lowest median; Cinder and asyncopy's own rows are no peers."""
    peers = [row for row in candidates if row.role == "peer"]
    return min(peers, key=lambda row: row.seconds.median, default=None)


@dataclass(frozen=True, slots=True)
class PathSummary:
    """asyncopy on one path and layout against its best peer and Cinder."""

    layout: str
    path: str
    asyncopy: Row
    best_peer: Row | None
    cinder: Row | None

    @property
    def ratio_best(self) -> float | None:
        return ratio(self.asyncopy, self.best_peer)

    @property
    def ratio_cinder(self) -> float | None:
        return ratio(self.asyncopy, self.cinder)


def ratio(mine: Row, other: Row | None) -> float | None:
    return None if other is None else mine.seconds.median / other.seconds.median


def path_summaries(all_rows: Sequence[Row]) -> list[PathSummary]:
    found = []
    for row in all_rows:
        if row.group == "main" and row.role == "asyncopy":
            same = [r for r in all_rows if (r.group, r.layout, r.path) == ("main", *key(row))]
            cinder = next((r for r in same if r.role == "cinder"), None)
            found.append(PathSummary(row.layout, row.path, row, best_peer(same), cinder))
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
        *verify_targets(all_rows),
        *sparse_targets(all_rows),
        *rss_targets(all_rows, runs),
        *allocation_targets(runs),
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


def rss_targets(all_rows: Sequence[Row], runs: Sequence[Run]) -> list[Target]:
    found = []
    measured = [run for run in runs if is_asyncopy(run) and run.peak_rss is not None]
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
    markdown.parent.mkdir(parents=True, exist_ok=True)
    document = {
        **asdict(results),
        "rows": [asdict(row) for row in all_rows],
        "paths": [path_json(summary) for summary in path_summaries(all_rows)],
        "targets": [asdict(goal) for goal in goals],
    }
    (out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    drawn = draw(results, all_rows, plots)
    links = {name: os.path.relpath(path, markdown.parent) for name, path in drawn.items()}
    markdown.write_text(render(results, all_rows, goals, links))
    return goals


def path_json(summary: PathSummary) -> dict[str, Any]:
    return {
        "layout": summary.layout,
        "path": summary.path,
        "asyncopy": summary.asyncopy.seconds.median,
        "best_peer": summary.best_peer.tool if summary.best_peer else None,
        "best_peer_seconds": summary.best_peer.seconds.median if summary.best_peer else None,
        "ratio_best_peer": summary.ratio_best,
        "cinder_seconds": summary.cinder.seconds.median if summary.cinder else None,
        "ratio_cinder": summary.ratio_cinder,
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


def spread(value: Stats) -> str:
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
removed and the cluster left to settle before the next run."""


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
    lines += header(
        "path", "asyncopy s", "best peer", "asyncopy / best peer", "Cinder s", "asyncopy / Cinder"
    )
    for summary in path_summaries(all_rows):
        if summary.layout != layout:
            continue
        best, cinder = summary.best_peer, summary.cinder
        lines.append(
            f"| {summary.path} | {spread(summary.asyncopy.seconds)} "
            f"| {f'{md(best.tool)} {spread(best.seconds)}' if best else 'none'} "
            f"| {format_ratio(summary.ratio_best)} "
            f"| {spread(cinder.seconds) if cinder else 'n/a'} "
            f"| {format_ratio(summary.ratio_cinder)} |"
        )
    lines += [
        "",
        *header(
            "path",
            "tool",
            "median (min-max) s",
            "MiB/s",
            "vs best peer",
            "peak RSS",
            "allocated (source)",
        ),
    ]
    for row in all_rows:
        if row.group != "main" or row.layout != layout:
            continue
        best = best_peer(r for r in all_rows if (r.group, *key(r)) == ("main", *key(row)))
        lines.append(
            f"| {row.path} | {md(row.tool)} | {spread(row.seconds)} | {row.mib_s:.0f} "
            f"| {format_ratio(ratio(row, best))} | {size_or_na(row.peak_rss, 'none')} "
            f"| {allocation(row)} |"
        )
    plot = links.get(f"throughput-{layout}")
    if plot:
        lines += ["", f"![throughput, {title}]({plot})"]
    return "\n".join(lines)


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
        "/dev/null); each tool's own rate, process start left out.",
        "",
        "| tool | median (min-max) s | MiB/s |",
        "|---|---|---|",
    ]
    for row in all_rows:
        if row.group == "ceiling":
            lines.append(f"| {row.tool} | {spread(row.seconds)} | {row.mib_s:.0f} |")
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
    lines = ["| volume | tool | median (min-max) s | peak RSS | allocated (source) |"]
    lines.append("|---|---|---|---|---|")
    for row in chosen:
        lines.append(
            f"| {layout_name(row.layout)} | {row.tool} | {spread(row.seconds)} "
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
    """The PNG plots: throughput per path and tool for each layout, and RSS against size."""
    import matplotlib

    matplotlib.use("Agg")
    drawn = {}
    for layout, title in results.layouts.items():
        chosen = [r for r in all_rows if r.group == "main" and r.layout == layout]
        if chosen:
            drawn[f"throughput-{layout}"] = throughput_plot(
                chosen, title, plots / f"throughput-{layout}.png"
            )
    scaled = [r for r in all_rows if r.group == "rss" and r.peak_rss]
    if scaled:
        drawn["rss"] = rss_plot(scaled, plots / "rss.png")
    return drawn


def throughput_plot(chosen: Sequence[Row], title: str, path: Path) -> Path:
    """Grouped bars: a group per path, a bar per tool (MiB/s of the median)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    paths = list(dict.fromkeys(row.path for row in chosen))
    widest = max(sum(1 for r in chosen if r.path == p) for p in paths)
    width = 0.8 / widest
    figure, axes = plt.subplots(figsize=(max(8, 1.6 * len(paths)), 4.5))
    colors = dict(FAMILIES)
    for x, name in enumerate(paths):
        tools = [r for r in chosen if r.path == name]
        for i, row in enumerate(tools):
            left = x - 0.4 + width * (i + 0.5)
            axes.bar(left, row.mib_s, width, color=colors.get(family(row.tool), "black"))
    handles = [Patch(color=shade, label=label) for label, shade in FAMILIES]
    used = {family(row.tool) for row in chosen}
    axes.legend(handles=[h for h in handles if h.get_label() in used], fontsize=7, ncols=2)
    axes.set_xticks(range(len(paths)), paths, rotation=20)
    axes.set_ylabel("MiB/s (volume size / median time)")
    axes.set_title(f"Throughput, {title}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


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
