"""Cinder's migrate_volume (``benchmarks/cinder_migration.py``) run from outside its process.

That module monkey-patches with eventlet on import, so the benchmark and the demo run it as a
child, one per manager, and read the JSON object on its last line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

MANAGERS = ("stock", "asyncopy")
ROOT = Path(__file__).resolve().parent.parent


def migrate_there_and_back(
    ceph_conf: str, pool: str, workdir: Path, manager: str, timeout: float = 600.0
) -> dict[str, Any]:
    """One harness run (RBD -> NFS -> RBD); what it left mounted is unmounted after it.

    Raises:
        subprocess.SubprocessError: the run failed or overran (its last error line said).
    """
    command = [sys.executable, "-W", "ignore", "-m", "benchmarks.cinder_migration"]
    command += ["--ceph-conf", ceph_conf, "--pool", pool]
    command += ["--workdir", str(workdir), "--manager", manager]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    finally:  # what an interrupted run left mounted
        for point in reversed(mounts_under(workdir)):
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    if done.returncode != 0:
        why = done.stderr.strip()[-500:]
        raise subprocess.SubprocessError(f"the {manager} migration failed: {why}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    for direction in report["directions"]:
        if direction["migration_status"] != "success" or not direction["digest_equal"]:
            raise subprocess.SubprocessError(
                f"the {manager} migration {direction['source']} -> {direction['destination']} "
                f"failed: {direction['migration_status']}, {direction['error']}"
            )
    return report


def mounts_under(root: Path) -> list[str]:
    """The mount points at or below ``root``, in /proc/self/mounts order."""
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1].replace("\\040", " ")
            if point == str(root) or point.startswith(f"{root}/"):
                found.append(point)
    return found
