"""The benchmark harness: a quick run against the real stack, and its report's arithmetic."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import disk_requests, report
from benchmarks.bench import pick, rotated
from benchmarks.measure import BenchError, Run, check_identical, check_manifest, timed
from benchmarks.scenarios import (
    LAYOUTS,
    OBJECT,
    Route,
    blocks,
    local_endpoint,
    rbd_endpoint,
    tools,
    write_file,
    write_manifest,
)
from devtools.daemons import Daemon

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
DAEMONS = {"ceph-mon", "ceph-osd", "tgtd"}
SUMMARY_COLUMNS = [
    "path",
    "asyncopy s",
    "best peer s",
    "wall ratio",
    "asyncopy CPU-s/GiB",
    "best peer CPU-s/GiB",
    "CPU ratio",
    "asyncopy stack CPU-s/GiB",
    "best peer stack CPU-s/GiB",
    "stack CPU ratio",
    "asyncopy peak RSS",
    "best peer peak RSS",
    "RSS ratio",
    "Cinder s",
    "asyncopy / Cinder",
]

PEERS = {
    "rbd -> rbd": {
        "qemu-img convert",
        "qemu-img convert -m 16 -W",
        "rbd cp",
        "rbd export - | rbd import -",
        "cinder copy_volume",
    },
    "rbd -> file": {
        "qemu-img convert",
        "qemu-img convert -m 16 -W",
        "rbd export",
        "cinder copy_volume",
    },
    "file -> rbd": {
        "qemu-img convert",
        "qemu-img convert -m 16 -W",
        "rbd import",
        "cinder copy_volume",
    },
    "rbd -> iscsi": {"qemu-img convert -n", "qemu-img convert -n -m 16 -W"},
    "iscsi -> rbd": {"qemu-img convert", "qemu-img convert -m 16 -W"},
    "rbd -> loop": {"qemu-img convert -n", "qemu-img convert -n -m 16 -W", "cinder copy_volume"},
    "loop -> rbd": {
        "qemu-img convert",
        "qemu-img convert -m 16 -W",
        "rbd import",
        "cinder copy_volume",
    },
    "file -> loop": {
        "qemu-img convert -n",
        "qemu-img convert -n -m 16 -W",
        "dd bs=4M iflag=direct oflag=direct",
        "cinder copy_volume",
    },
}


def test_quick_run_measures_every_path_and_peer(tmp_path: Path) -> None:
    markdown = tmp_path / "report" / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--quick",
            "--out",
            str(tmp_path),
            "--markdown",
            str(markdown),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())

    main = [run for run in results["runs"] if run["group"] == "main"]
    for path, peers in PEERS.items():
        tools = {run["tool"] for run in main if run["path"] == path}
        assert tools >= {"asyncopy", *peers}, path
    assert all(
        run["verified"] is True
        for run in results["runs"]
        if run["group"] not in ("ceiling", "floor")
    )
    assert all(run["seconds"] > 0 and run["peak_rss"] > 0 for run in results["runs"])
    assert {run["group"] for run in results["runs"]} == {
        "main",
        "ceiling",
        "verify",
        "sparse",
        "rss",
        "scaling",
        "floor",
        "sweep",
    }
    assert {run["tool"] for run in results["runs"] if run["group"] == "main"} >= {
        "asyncopy --verify"
    }

    targets = results["targets"]
    assert all(isinstance(target["met"], bool) for target in targets)
    names = " ".join(target["name"] for target in targets)
    for path in PEERS:
        assert f"{path}, 50%: asyncopy <= 0.8x best peer" in names
    for phrase in ("qemu-img compare", "holding", "peak RSS flat", "more allocated"):
        assert phrase in names
    assert "## Targets" in markdown.read_text()
    migrations = results["cinder_migrations"]
    assert {(item["manager"], item["direction"]) for item in migrations} == {
        (manager, direction)
        for manager in ("stock", "asyncopy")
        for direction in ("ceph -> nfs", "nfs -> ceph")
    }
    assert all(item["seconds"] > 0 for item in migrations)
    assert "## Cinder's migrate_volume" in markdown.read_text()
    plots = sorted((tmp_path / "plots").glob("*.png"))
    assert [plot.name for plot in plots] == ["paths-50.png", "rss.png"]
    for plot in plots:
        assert plot.read_bytes().startswith(b"\x89PNG")
        assert f"]({Path('..') / 'plots' / plot.name})" in markdown.read_text()
    check_cpu_figures(results, markdown.read_text())
    check_scaling(results, markdown.read_text())
    check_sweep(results, markdown.read_text())


SCALING_TOOLS = ["asyncopy", "qemu-img convert -m 8 -W", "qemu-img convert -m 16 -W", "rbd cp"]


def check_scaling(results: dict[str, Any], markdown: str) -> None:
    """Both dense sizes copied by every tool, checked; the slopes and the floor from the runs."""
    runs = [item for item in results["runs"] if item["group"] == "scaling"]
    assert {(item["size"], item["tool"]) for item in runs} == {
        (size, tool) for size in (32 * MiB, 96 * MiB) for tool in SCALING_TOOLS
    }
    assert all(item["allocated"] == item["size"] == item["source_allocated"] for item in runs)
    table = results["scaling"]
    assert table["sizes"] == [32 * MiB, 96 * MiB]
    rows = {(row["size"], row["tool"]): row for row in results["rows"] if row["group"] == "scaling"}
    cpu = {key: row["cpu"]["median"] * row["size"] / (1 << 30) for key, row in rows.items()}
    floor = [row for row in results["rows"] if row["group"] == "floor"]
    assert [row["tool"] for row in floor] == ["rbd bench write", "rbd bench read"]
    assert all(row["size"] == 96 * MiB for row in floor)
    floor_cpu = sum(row["cpu"]["median"] for row in floor)
    assert floor_cpu > 0
    assert table["floor_cpu_per_gib"] == pytest.approx(floor_cpu)
    assert [slope["tool"] for slope in table["slopes"]] == SCALING_TOOLS
    section = markdown.partition("## rbd -> rbd scaling (dense)")[2]
    assert section, "no scaling section in the report"
    for slope in table["slopes"]:
        tool = slope["tool"]
        expected = (cpu[(96 * MiB, tool)] - cpu[(32 * MiB, tool)]) * 1024 / (96 - 32)
        assert slope["cpu_per_gib"] == pytest.approx(expected), tool
        assert slope["ratio_floor"] == pytest.approx(expected / floor_cpu), tool
        assert f"| {tool} | {expected:.2f} |" in section, tool
    for item in table["rows"]:
        row = rows[(item["size"], item["tool"])]
        assert item["seconds"] == row["seconds"]["median"] > 0
        assert item["cpu_seconds"] == pytest.approx(cpu[(item["size"], item["tool"])])
        assert item["best_peer_seconds"] in SCALING_TOOLS[1:]
        best = rows[(item["size"], item["best_peer_seconds"])]
        assert item["ratio_best_peer_seconds"] == pytest.approx(
            row["seconds"]["median"] / best["seconds"]["median"]
        )
        assert f"| {item['volume']} | {item['tool']} | {row['seconds']['median']:.2f} (" in section
    names = {target["name"] for target in results["targets"]}
    assert {
        "rbd -> rbd, 32.0 MiB dense: asyncopy <= 1.0x best peer",
        "rbd -> rbd, 96.0 MiB dense: asyncopy <= 1.0x best peer",
        "rbd -> rbd, dense 32.0 MiB to 96.0 MiB: asyncopy CPU slope <= 1.0x the best peer's",
    } <= names
    assert f"= {floor_cpu:.2f} (medians)" in section


SWEEP_PATHS = ["rbd -> rbd", "rbd -> file", "file -> rbd", "rbd -> iscsi", "iscsi -> rbd"]
SWEEP_DEPTHS = {"asyncopy --depth 4": 4, "asyncopy --depth 16": 16}


def check_sweep(results: dict[str, Any], markdown: str) -> None:
    """Each swept path tuned and at each fixed depth, checked; the ratios from the rows."""
    runs = [item for item in results["runs"] if item["group"] == "sweep"]
    assert {(item["path"], item["tool"]) for item in runs} == {
        (path, tool) for path in SWEEP_PATHS for tool in ["asyncopy", *SWEEP_DEPTHS]
    }
    assert all(item["verified"] is True and item["layout"] == "50" for item in runs)
    for item in runs:  # the window never lets more in flight than a fixed depth allows
        assert 1 <= item["depth"] <= SWEEP_DEPTHS.get(item["tool"], item["depth"]), item
    rows = {(row["path"], row["tool"]): row for row in results["rows"] if row["group"] == "sweep"}
    section = markdown.partition("## In-flight window against a depth sweep")[2]
    assert section, "no sweep section in the report"
    section = section.partition("\n## ")[0]
    targets = {target["name"]: target for target in results["targets"]}
    assert [item["path"] for item in results["sweep"]] == SWEEP_PATHS
    for item in results["sweep"]:
        path = item["path"]
        wall = {tool: rows[(path, tool)]["seconds"]["median"] for tool in SWEEP_DEPTHS}
        best = min(wall, key=wall.__getitem__)
        tuned = rows[(path, "asyncopy")]
        value = tuned["seconds"]["median"] / wall[best]
        assert item["best_fixed"] == best, path
        assert item["best_fixed_seconds"] == wall[best] > 0
        assert item["tuned_seconds"] == tuned["seconds"]["median"] > 0
        assert item["ratio_best_fixed"] == pytest.approx(value), path
        reached = [run["depth"] for run in runs if (run["path"], run["tool"]) == (path, "asyncopy")]
        assert item["depth_reached"]["high"] == max(reached), path
        assert {run["tool"] for run in item["runs"]} == {"asyncopy", *SWEEP_DEPTHS}
        for tool in ("asyncopy", *SWEEP_DEPTHS):
            row = rows[(path, tool)]
            median = row["seconds"]["median"]
            line = f"| {path} | {tool} | {median:.2f} ("
            assert line in section, line
            ratio = f"{median / wall[best]:.2f}x |"
            assert ratio in section.partition(line)[2].split("\n")[0], (path, tool)
        assert f"| {path} | {best} | {value:.2f}x | " in section, path
        target = targets[f"{path}: tuned window within 5% of the best fixed depth"]
        assert target["value"] == pytest.approx(value)
        assert target["met"] is (value <= 1.05)
        assert f"{value:.2f}x: " in target["figure"]


def check_cpu_figures(results: dict[str, Any], markdown: str) -> None:
    """Every run has its CPU and the daemons'; the figures are plausible and reported."""
    cores = os.cpu_count() or 1
    for item in results["runs"]:
        where = f"{item['tool']} on {item['path']} ({item['group']})"
        wall = item["wall_seconds"]
        assert 0 < item["cpu_seconds"] <= cores * wall + 0.05, where
        daemons = item["daemon_cpu_seconds"]
        assert set(daemons) == DAEMONS, where
        assert all(0 <= spent <= cores * wall + 0.05 for spent in daemons.values()), where
    main = [item for item in results["runs"] if item["group"] == "main"]
    for item in main:  # writing an image, or to or from a LUN, makes its daemon work
        if item["path"].endswith("-> rbd"):
            assert item["daemon_cpu_seconds"]["ceph-osd"] > 0, item
        if "iscsi" in item["path"]:
            assert item["daemon_cpu_seconds"]["tgtd"] > 0, item
    for row in results["rows"]:
        assert 0 < row["cpu"]["median"] <= row["stack_cpu"]["median"], row
        assert row["cpu"]["low"] <= row["cpu"]["median"] <= row["cpu"]["high"], row
    for summary in results["paths"]:
        figures = summary["metrics"]
        assert set(figures) == {"seconds", "cpu_per_gib", "stack_cpu_per_gib", "peak_rss"}
        for name, figure in figures.items():
            assert figure["asyncopy"] > 0, (summary["path"], name)
            assert figure["best_peer"] in PEERS[summary["path"]], (summary["path"], name)
            assert figure["ratio_best_peer"] == pytest.approx(
                figure["asyncopy"] / figure["best_peer_value"]
            )
        assert figures["seconds"]["ratio_best_peer"] == summary["ratio_best_peer"]
    header = "| " + " | ".join(SUMMARY_COLUMNS) + " |"
    assert header in markdown
    table = markdown.partition(header)[2].split("\n\n")[0].strip().splitlines()[1:]
    assert {line.split(" | ")[0].lstrip("| ") for line in table} == set(PEERS)
    for line in table:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == len(SUMMARY_COLUMNS), line
        assert "n/a" not in cells[1:13], line  # every figure measured, every ratio given
    for column in ("CPU-s/GiB", "CPU vs best peer", "stack CPU-s/GiB", "stack CPU vs best peer"):
        assert f"| {column} |" in markdown


def test_a_wrong_copy_stops_the_benchmark(tmp_path: Path) -> None:
    size = 3 * OBJECT
    source, copy, manifest = tmp_path / "source", tmp_path / "copy", tmp_path / "manifest"
    write_file(source, size, blocks(size, 2, seed=7))
    write_manifest(manifest, size, blocks(size, 2, seed=7))
    copy.write_bytes(source.read_bytes())
    check_identical(str(source), str(copy), what="a tool on a path")
    check_manifest(str(manifest), str(copy), what="a tool on a path")
    with open(copy, "r+b") as out:
        out.seek(size - 1)
        last = out.read(1)[0]
        out.seek(size - 1)
        out.write(bytes([last ^ 0xFF]))  # one byte off
    with pytest.raises(BenchError, match="a tool on a path: the output differs from the source"):
        check_identical(str(source), str(copy), what="a tool on a path")
    with pytest.raises(BenchError, match="a tool on a path: the output differs from the source"):
        check_manifest(str(manifest), str(copy), what="a tool on a path")


def test_every_peer_on_a_path_and_the_skipped_ones() -> None:
    src = rbd_endpoint("/c/ceph.conf", "rbd", "src")
    dst = local_endpoint("loop", "/dev/loop9")
    route = Route("rbd", "loop")
    found = {tool.name: tool for tool in tools(route, src, dst, "/c/ceph.conf")}
    assert list(found) == [
        "asyncopy",
        "qemu-img convert -n",
        "qemu-img convert -n -m 16 -W",
        "cinder copy_volume",
    ]
    assert found["qemu-img convert -n -m 16 -W"].argv == (
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        "-n",
        "-m",
        "16",
        "-W",
        "rbd:rbd/src:conf=/c/ceph.conf",
        "/dev/loop9",
    )
    assert found["cinder copy_volume"].precreate
    assert found["cinder copy_volume"].argv[-2:] == ("rbd:rbd/src:conf=/c/ceph.conf", "/dev/loop9")
    lean = tools(route, src, dst, "/c/ceph.conf", skip=("cinder copy_volume",))
    assert [tool.name for tool in lean] == list(found)[:3]


def run(tool: str, role: str, seconds: float, **extra: object) -> Run:
    fields: dict[str, object] = {
        "group": "main",
        "layout": "50",
        "path": "rbd -> rbd",
        "tool": tool,
        "role": role,
        "round": 0,
        "size": 1024 * MiB,
        "seconds": seconds,
        "peak_rss": 100 * MiB,
    }
    fields.update(extra)
    return Run(**fields)  # type: ignore[arg-type]


def test_best_peer_is_the_lowest_median_and_never_cinder() -> None:
    runs = [
        *(run("asyncopy", "asyncopy", s) for s in (0.9, 0.7, 5.0)),
        *(run("qemu-img convert", "peer", s) for s in (1.0, 1.2, 0.1)),
        *(run("rbd cp", "peer", s) for s in (1.5, 1.1, 1.3)),
        *(run("cinder copy_volume", "cinder", s) for s in (0.5, 0.5, 0.5)),
    ]
    rows = report.rows(runs)
    assert [row.tool for row in rows] == [
        "asyncopy",
        "qemu-img convert",
        "rbd cp",
        "cinder copy_volume",
    ]
    assert rows[0].seconds == report.Stats(0.9, 0.7, 5.0, 3)
    (summary,) = report.path_summaries(rows)
    assert summary.best_peer is not None
    assert summary.best_peer.tool == "qemu-img convert"  # median 1.0 beats rbd cp's 1.3
    assert summary.ratio_best == pytest.approx(0.9)
    assert summary.ratio_cinder == pytest.approx(1.8)

    peer, cinder = report.path_targets(rows)
    assert not peer.met  # 0.9x is over 0.8x
    assert peer.value == pytest.approx(0.9)
    assert not cinder.met
    assert cinder.value == pytest.approx(1.8)
    assert "qemu-img convert 1.00 s" in peer.figure


def test_cpu_per_gib_and_each_figure_has_its_own_best_peer() -> None:
    daemons = {"ceph-mon": 0.0, "ceph-osd": 0.25, "tgtd": 0.0}
    runs = [  # 1 GiB volumes: CPU seconds are CPU seconds per GiB
        *(
            run("asyncopy", "asyncopy", 1.0, cpu_seconds=c, daemon_cpu_seconds=daemons)
            for c in (0.5, 0.7, 0.6)
        ),
        run(
            "qemu-img convert",
            "peer",
            2.0,
            cpu_seconds=0.4,
            daemon_cpu_seconds=daemons,
            peak_rss=50 * MiB,
        ),
        run("rbd cp", "peer", 1.25, cpu_seconds=0.8, daemon_cpu_seconds={"ceph-osd": 0.75}),
        run("cinder copy_volume", "cinder", 4.0, cpu_seconds=0.1, daemon_cpu_seconds=daemons),
        run("asyncopy", "asyncopy", 1.0, path="rbd -> file", size=256 * MiB, cpu_seconds=0.25),
    ]
    assert runs[0].stack_cpu_seconds == pytest.approx(0.75)
    assert runs[-1].stack_cpu_seconds is None  # the daemons were not measured
    rows = report.rows(runs)
    assert rows[0].cpu == report.Stats(0.6, 0.5, 0.7, 3)
    assert rows[0].stack_cpu == report.Stats(0.85, 0.75, 0.95, 3)
    assert rows[-1].cpu == report.Stats(1.0, 1.0, 1.0, 1)  # 0.25 s for a quarter GiB
    assert rows[-1].stack_cpu is None
    summary, unmeasured = report.path_summaries(rows)
    best = {metric.key: summary.best(metric) for metric in report.METRICS}
    assert {key: row.tool if row else None for key, row in best.items()} == {
        "seconds": "rbd cp",  # 1.25 s against 2.0
        "cpu_per_gib": "qemu-img convert",  # Cinder's 0.1 is no peer's
        "stack_cpu_per_gib": "qemu-img convert",  # 0.65 against rbd cp's 1.55
        "peak_rss": "qemu-img convert",  # 50 MiB against 100
    }
    assert summary.ratio_to_best(report.WALL) == pytest.approx(0.8)
    assert summary.ratio_to_best(report.CPU) == pytest.approx(1.5)
    assert summary.ratio_to_best(report.STACK_CPU) == pytest.approx(0.85 / 0.65)
    assert summary.ratio_to_best(report.RSS) == pytest.approx(2.0)
    assert unmeasured.best() is None
    assert unmeasured.ratio_to_best(report.CPU) is None

    line = report.summary_line(summary)
    assert line.startswith(
        "| rbd -> rbd | 1.00 | rbd cp 1.25 | 0.80x | 0.60 | qemu-img convert 0.40"
    )
    assert "| 1.50x | 0.85 | qemu-img convert 0.65 | 1.31x | 100.0 MiB |" in line
    row_line = report.tool_line(rows[0], rows[:4])
    assert "| 0.60 (0.50-0.70) | 1.50x | 0.85 (0.75-0.95) | 1.31x |" in row_line
    assert "| n/a | none | n/a |" in report.summary_line(unmeasured)  # stack CPU: not measured
    document = report.path_json(summary)["metrics"]["stack_cpu_per_gib"]
    assert document["best_peer"] == "qemu-img convert"
    assert document["best_peer_value"] == pytest.approx(0.65)
    (cpu,) = report.cpu_targets(rows)  # rbd -> file has no peer to be measured against
    assert cpu.name == "rbd -> rbd, 50%: asyncopy CPU <= 0.8x the best peer's"
    assert not cpu.met
    assert cpu.value == pytest.approx(1.5)
    assert cpu.figure == "1.50x: 0.60 vs qemu-img convert 0.40 CPU-s/GiB"
    thrifty = [run("asyncopy", "asyncopy", 1.0, cpu_seconds=0.3), runs[3]]
    (goal,) = report.cpu_targets(report.rows(thrifty))
    assert goal.met
    assert goal.value == pytest.approx(0.75)


def test_timed_measures_the_command_and_the_daemons_cpu() -> None:
    burn = "import time\nwhile time.process_time() < 0.3: pass"
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        stat = Path(f"/proc/{spinner.pid}/stat").read_text().rpartition(")")[2].split()
        daemon = Daemon("spinner", spinner.pid, int(stat[19]))
        timing = timed([sys.executable, "-c", burn], what="burn", daemons=[daemon])
        assert 0.3 <= timing.cpu_seconds <= timing.seconds * (os.cpu_count() or 1)
        assert set(timing.daemon_cpu_seconds) == {"spinner"}
        assert 0 < timing.daemon_cpu_seconds["spinner"] <= timing.seconds + 0.02
        assert timing.peak_rss > 0
        reused = Daemon("spinner", spinner.pid, daemon.start_time + 1)  # another process
        with pytest.raises(BenchError, match=rf"spinner \(pid {spinner.pid}\) is gone"):
            timed(["true"], what="true", daemons=[reused])
    finally:
        spinner.kill()
        spinner.wait()
    with pytest.raises(BenchError, match="is gone"):
        timed(["true"], what="true", daemons=[daemon])


def test_targets_met_and_not_met() -> None:
    runs = [
        run("asyncopy", "asyncopy", 0.5, allocated=512 * MiB, source_allocated=512 * MiB),
        run(
            "asyncopy --verify",
            "asyncopy --verify",
            0.9,
            allocated=600 * MiB,
            source_allocated=512 * MiB,
        ),
        run("qemu-img convert", "peer", 1.0),
        run("cinder copy_volume", "cinder", 2.0),
        run("asyncopy verify", "check", 0.3, group="verify", path="rbd vs rbd copy"),
        run("qemu-img compare", "check", 0.6, group="verify", path="rbd vs rbd copy"),
        run("asyncopy", "asyncopy", 3.0, group="sparse", layout="64 GiB thin", size=64 << 30),
        run("asyncopy", "asyncopy", 1.0, group="sparse", layout="256 MiB dense", size=256 * MiB),
        run("asyncopy", "asyncopy", 1.0, group="rss", layout="1 GiB", peak_rss=90 * MiB),
        run(
            "asyncopy",
            "asyncopy",
            1.0,
            group="rss",
            layout="16 GiB",
            size=16 << 30,
            peak_rss=100 * MiB,
        ),
    ]
    goals = {goal.name: goal for goal in report.targets(report.rows(runs), runs)}
    met = {name: goal.met for name, goal in goals.items()}
    assert met == {
        "rbd -> rbd, 50%: asyncopy <= 0.8x best peer": True,  # 0.5 / 1.0
        "rbd -> rbd, 50%: asyncopy <= 0.3x Cinder copy_volume": True,  # 0.5 / 2.0 = 0.25
        "rbd vs rbd copy, 50%: asyncopy verify no slower than qemu-img compare": True,  # 0.3, 0.6
        "rbd -> rbd, 50%: copy --verify costs no more than a separate qemu-img compare": True,
        "rbd -> rbd: 64 GiB thin <= 2x 256 MiB dense": False,  # 3.0 / 1.0
        "asyncopy peak RSS <= 64 MiB + in-flight budget 64.0 MiB": True,  # 100 MiB
        "asyncopy peak RSS flat: 16 GiB within 10% of 1 GiB": False,  # 100 / 90 MiB
        "asyncopy destination never more allocated than its source": False,  # 600 vs 512 MiB
    }
    flat = next(goal for name, goal in goals.items() if "flat" in name)
    assert flat.value == pytest.approx(100 / 90)
    overhead = next(goal for name, goal in goals.items() if "copy --verify" in name)
    assert overhead.value == pytest.approx(0.4)
    assert "+0.40 s (+80%)" in overhead.figure


def test_scaling_slopes_ratios_and_targets() -> None:
    """The issue's figures: the slope leaves the start-up out; a tool at one size has none."""
    small, large = 512 * MiB, 2560 * MiB
    measured = [  # tool, size, [(wall, CPU-s) per round]
        ("asyncopy", "asyncopy", small, [(0.75, 0.49), (0.70, 0.60), (0.90, 0.40)]),
        ("asyncopy", "asyncopy", large, [(4.10, 1.54), (4.00, 1.40), (4.50, 2.00)]),
        ("qemu-img convert -m 16 -W", "peer", small, [(0.53, 0.42)]),
        ("qemu-img convert -m 16 -W", "peer", large, [(1.95, 1.78)]),
        ("rbd cp", "peer", small, [(0.60, 0.35)]),
        ("rbd cp", "peer", large, [(3.10, 1.63)]),
        ("qemu-img convert -m 8 -W", "peer", large, [(1.97, 1.51)]),
    ]
    runs = [
        run(
            tool,
            role,
            wall,
            group="scaling",
            layout=f"{size // MiB} MiB dense",
            size=size,
            cpu_seconds=cpu,
            round=number,
        )
        for tool, role, size, rounds in measured
        for number, (wall, cpu) in enumerate(rounds)
    ]
    runs += [
        run(tool, "ceiling", 1.0, group="floor", path="-", size=large, cpu_seconds=cpu)
        for tool, cpu in (("rbd bench write", 0.60), ("rbd bench read", 0.40))
    ]
    rows = report.rows(runs)
    table = report.scaling(rows)
    assert table is not None
    assert table.sizes == [small, large]
    assert table.floor_cpu == pytest.approx(0.24 + 0.16)
    slopes = {slope.tool: slope.cpu_per_gib for slope in table.slopes()}
    assert slopes == pytest.approx(
        {"asyncopy": 0.525, "qemu-img convert -m 16 -W": 0.68, "rbd cp": 0.64}
    )
    best = table.best_slope()
    assert best is not None
    assert best.tool == "rbd cp"
    goals = {goal.name: goal for goal in report.scaling_targets(rows)}
    assert {name: goal.met for name, goal in goals.items()} == {
        "rbd -> rbd, 512 MiB dense: asyncopy <= 1.0x best peer": False,  # 0.75 / 0.53
        "rbd -> rbd, 2560 MiB dense: asyncopy <= 1.0x best peer": False,  # 4.10 / 1.95
        "rbd -> rbd, dense 512.0 MiB to 2.5 GiB: asyncopy CPU slope <= 1.0x the best peer's": True,
    }
    assert [goal.value for goal in goals.values()] == pytest.approx(
        [0.75 / 0.53, 4.10 / 1.95, 0.525 / 0.64]
    )
    document = report.scaling_json(table)
    mine = next(r for r in document["rows"] if r["size"] == large and r["tool"] == "asyncopy")
    assert mine["best_peer_cpu"] == "qemu-img convert -m 8 -W"
    assert mine["ratio_best_peer_cpu"] == pytest.approx(1.54 / 1.51)
    assert mine["cpu_seconds"] == pytest.approx(1.54)
    ratios = {slope["tool"]: slope["ratio_floor"] for slope in document["slopes"]}
    assert ratios["asyncopy"] == pytest.approx(0.525 / 0.40)
    section = report.scaling_section(table)
    assert "| 2560 MiB dense | asyncopy | 4.10 (4.00-4.50) | 1.54 (1.40-2.00) |" in section
    assert "| asyncopy | 0.53 | 0.82x | 1.31x |" in section
    assert "rbd bench write 0.24 (0.24-0.24) + rbd bench read 0.16 (0.16-0.16) = 0.40" in section


def test_sweep_best_fixed_depth_ratio_and_targets() -> None:
    """The best fixed depth is the lowest median; a raised budget stays out of the RSS target."""
    measured = [  # path, tool, [(wall, depth) per round]
        ("rbd -> rbd", "asyncopy --depth 4", [(5.0, 4), (5.2, 4), (4.9, 4)]),
        ("rbd -> rbd", "asyncopy --depth 16", [(4.0, 16), (4.4, 16), (3.9, 16)]),
        ("rbd -> rbd", "asyncopy", [(4.1, 12), (4.3, 16), (4.0, 13)]),
        ("rbd -> file", "asyncopy --depth 4", [(6.0, 4)]),
        ("rbd -> file", "asyncopy --depth 16", [(6.5, 16)]),
        ("rbd -> file", "asyncopy", [(6.6, 9)]),
    ]
    runs = [
        run(
            tool,
            "asyncopy",
            wall,
            group="sweep",
            layout="100",
            path=path,
            round=number,
            depth=depth,
            peak_rss=(200 if "16" in tool else 100) * MiB,
        )
        for path, tool, rounds in measured
        for number, (wall, depth) in enumerate(rounds)
    ]
    rows = report.rows(runs)
    found = report.sweeps(rows)
    assert [(item.path, item.best.tool) for item in found] == [
        ("rbd -> rbd", "asyncopy --depth 16"),
        ("rbd -> file", "asyncopy --depth 4"),
    ]
    assert [item.ratio for item in found] == pytest.approx([4.1 / 4.0, 6.6 / 6.0])
    reached = found[0].reached
    assert reached is not None
    assert (reached.median, reached.low, reached.high) == (13, 12, 16)
    goals = {goal.name: goal.met for goal in report.sweep_targets(rows)}
    assert goals == {
        "rbd -> rbd: tuned window within 5% of the best fixed depth": True,
        "rbd -> file: tuned window within 5% of the best fixed depth": False,
    }
    rss = report.rss_targets(rows, runs)
    assert rss[0].value == 100 * MiB  # the depth-16 runs' 200 MiB are left out
    document = report.sweep_json(found)
    assert document[1]["best_fixed_seconds"] == 6.0
    assert document[0]["depth_reached"]["high"] == 16
    section = report.sweep_section(found)
    assert "on the 100% layout" in section
    assert "| rbd -> rbd | asyncopy | 4.10 (4.00-4.30) | " in section
    assert "| rbd -> rbd | asyncopy --depth 16 | 4.00 (3.90-4.40) | " in section
    assert "| rbd -> file | asyncopy --depth 4 | 1.10x | 9 (9-9) |" in section


def test_rounds_rotate_and_filters_pick_known_names() -> None:
    assert [rotated("abc", n) for n in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert [lay.id for lay in pick(LAYOUTS, "1%,100", "--layouts", lambda x: x.id)] == ["100", "1"]
    with pytest.raises(BenchError, match="unknown 7; choose from 1, 100, 50"):
        pick(LAYOUTS, "7", "--layouts", lambda x: x.id)


def test_disk_requests_counts_what_reaches_the_device(tmp_path: Path) -> None:
    target = tmp_path / "out"
    stat = disk_requests.stat_file(str(tmp_path))
    write = f"dd if=/dev/zero of={target} bs=1M count=8 oflag=direct status=none"
    written = disk_requests.one(write, stat, str(tmp_path))
    assert written.writes.size >= 8 << 20
    assert written.writes.count >= 8  # O_DIRECT: one request per 1 MiB write, at least
    read = disk_requests.one(f"dd if={target} of=/dev/null bs=1M iflag=direct", stat, str(tmp_path))
    assert read.reads.size >= 8 << 20
    assert 0 < read.reads.mean <= 1 << 20  # no read of 1 MiB asks for more
    before = [10, 1, 80, 5, 20, 2, 4096, 7, 0, 0, 0]
    after = [14, 1, 2128, 9, 21, 2, 4104, 8, 0, 0, 0]
    reads, writes = disk_requests.delta(before, after)
    assert (reads.count, reads.size, reads.mean, reads.queued_ms) == (4, 1 << 20, 1 << 18, 4)
    assert (writes.count, writes.size, writes.queued_ms) == (1, 4096, 1)
