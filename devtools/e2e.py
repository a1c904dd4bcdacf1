"""The blueprint's test as an operator runs it (``make e2e``): for each volume manager,
asyncopy's and then Cinder's own, a real deployment (``devtools.openstack``) is started,
tempest's own ``VolumeRetypeWithMigrationTest`` runs against it in both backend orders (RBD
then NFS, NFS then RBD), then the project's tempest plugin (``asyncopy_tempest``: data
block-for-block identical after each move, thin, nothing left attached, progress shown while a
throttled copy runs), and the deployment is stopped, leaving nothing::

    python -m devtools.e2e [--workdir DIR] [--managers asyncopy,stock]

A run fails when a test fails or is skipped (a skipped migration test proves nothing). The
report, ``DIR/e2e.json``, and the table printed at the end hold each migration's time and
destination allocation under each manager, and the services' memory.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devtools import openstack

TEMPEST_TEST = "tempest.api.volume.admin.test_volume_retype.VolumeRetypeWithMigrationTest"
PLUGIN_TESTS = "asyncopy_tempest"
MiB = 1 << 20


@dataclass
class Run:
    """One tempest run: what it ran, how it ended."""

    name: str
    config: str
    regex: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    exit_code: int = 0
    tail: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.failed == 0 and self.skipped == 0 and self.passed > 0


@dataclass
class ManagerReport:
    manager: str
    up_seconds: float = 0.0
    down_seconds: float = 0.0
    services_rss_mib: float = 0.0
    runs: list[Run] = field(default_factory=list)
    migrations: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.runs) and all(run.ok for run in self.runs)


def run_tempest(deployment: openstack.Deployment, name: str, order: str, regex: str) -> Run:
    """``tempest run`` in the deployment's workspace; its totals parsed from its summary."""
    run = Run(name, deployment.tempest_conf[order], regex)
    started = time.monotonic()
    done = subprocess.run(
        [
            str(openstack.BIN / "tempest"),
            "run",
            "--config-file",
            run.config,
            "--concurrency",
            "1",
            "--regex",
            regex,
        ],
        cwd=deployment.tempest_workspace,
        env=openstack.tempest_environ(deployment),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    run.seconds = round(time.monotonic() - started, 1)
    run.exit_code = done.returncode
    for key in ("passed", "failed", "skipped"):
        found = re.search(rf"^ - {key.capitalize()}: (\d+)", done.stdout, re.MULTILINE)
        setattr(run, key, int(found.group(1)) if found else 0)
    run.tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
    return run


def services_rss(deployment: openstack.Deployment) -> float:
    """MiB resident in every process of the deployment but the Ceph cluster's."""
    total = 0
    for pid in openstack.marked(deployment):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(found.group(1)) * 1024 if found else 0
    return round(total / MiB, 1)


def exercise(manager: str, workdir: Path) -> ManagerReport:
    """Start a deployment with ``manager``, run every test against it, stop it."""
    report = ManagerReport(manager)
    directory = workdir / manager
    started = time.monotonic()
    try:
        deployment = openstack.up(directory, manager=manager)
    except openstack.DeploymentError as exc:
        report.error = f"up: {exc}"
        return report
    report.up_seconds = round(time.monotonic() - started, 1)
    try:
        for order in openstack.BACKEND_ORDERS:
            key = ",".join(order)
            print(f"e2e: {manager}: tempest {TEMPEST_TEST} with backends {key}", flush=True)
            report.runs.append(run_tempest(deployment, f"tempest {key}", key, TEMPEST_TEST))
        print(f"e2e: {manager}: the asyncopy tempest plugin", flush=True)
        key = ",".join(openstack.BACKEND_ORDERS[0])
        report.runs.append(run_tempest(deployment, "plugin", key, PLUGIN_TESTS))
        report.services_rss_mib = services_rss(deployment)
        report.migrations = read_results(Path(deployment.results_file))
    finally:
        started = time.monotonic()
        try:
            openstack.down(directory)
        except openstack.DeploymentError as exc:
            report.error = f"down: {exc}"
        report.down_seconds = round(time.monotonic() - started, 1)
    return report


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(reports: Sequence[ManagerReport]) -> str:
    """Each migration's seconds and destination allocation, one column pair per manager."""
    managers = [report.manager for report in reports]
    rows: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for report in reports:
        for item in report.migrations:
            key = (
                item["test"],
                item["kind"],
                f"{item['source_backend']} -> {item['destination_backend']}",
            )
            rows.setdefault(key, {})[report.manager] = item
    head = "| test | kind | direction | " + " | ".join(
        f"{m} s | {m} dest. allocated" for m in managers
    )
    lines = [head + " |", "|---" * (3 + 2 * len(managers)) + "|"]
    for (test, kind, direction), by_manager in rows.items():
        cells = []
        for manager in managers:
            found = by_manager.get(manager)
            cells += ["", ""] if found is None else _cells(found)
        lines.append(f"| {test} | {kind} | {direction} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cells(item: dict[str, Any]) -> list[str]:
    return [f"{item['seconds']:.1f}", f"{item['destination_allocated'] / MiB:.0f} MiB"]


def summary(reports: Sequence[ManagerReport]) -> str:
    lines = []
    for report in reports:
        runs = ", ".join(
            f"{run.name}: {run.passed} passed, {run.failed} failed, {run.skipped} skipped "
            f"({run.seconds:.0f} s)"
            for run in report.runs
        )
        lines.append(
            f"{report.manager}: up {report.up_seconds:.0f} s, down {report.down_seconds:.0f} s, "
            f"services {report.services_rss_mib:.0f} MiB RSS; {runs}"
            + (f"; ERROR {report.error}" if report.error else "")
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.e2e", description=__doc__)
    parser.add_argument("--workdir", type=Path, help="where the deployments live (a new temp dir)")
    parser.add_argument("--managers", default="asyncopy,stock", help="comma-separated, in order")
    args = parser.parse_args(argv)
    managers = [name for name in args.managers.split(",") if name]
    if unknown := [name for name in managers if name not in openstack.MANAGERS]:
        parser.error(f"no manager {', '.join(unknown)}: one of {', '.join(openstack.MANAGERS)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="asyncopy-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    reports = [exercise(manager, workdir) for manager in managers]
    elapsed = time.monotonic() - started
    (workdir / "e2e.json").write_text(
        json.dumps(
            {"seconds": round(elapsed, 1), "reports": [asdict(r) for r in reports]}, indent=2
        )
    )
    for report in reports:
        for run in report.runs:
            if not run.ok:
                print(f"--- {report.manager} {run.name} (exit {run.exit_code}):\n{run.tail}")
    print(table(reports))
    print(summary(reports))
    print(f"e2e: {elapsed:.0f} s; report in {workdir / 'e2e.json'}")
    failed = [report.manager for report in reports if not report.ok]
    if failed:
        print(f"e2e: error: failed with {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
