"""The blueprint's test with Cinder's own code: ``benchmarks/cinder_migration.py`` runs Cinder
29's generic migration RBD -> NFS -> RBD in one eventlet-patched process (two volume
services, Cinder's RBDDriver and NfsDriver), once with the stock VolumeManager and once with
the one ``volume_manager`` line that puts asyncopy's manager in its place.

Both must migrate the data intact both ways and leave nothing behind; asyncopy's must also
keep the destination as thin as the source and report its progress while it copies. The
module has its own dev stack, with a memstore OSD large enough for stock Cinder's thick copy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cinder_runs import mounts_under
from devtools import devstack

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 100.0
TERM_GRACE = 20.0


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    directory = tmp_path_factory.mktemp("migration-devstack")
    started = devstack.up(directory, osd_bytes=4 << 30, iscsi=False)
    try:
        yield started
    finally:
        devstack.down(directory)


def run_harness(
    stack: devstack.Stack, workdir: Path, manager: str, *options: str
) -> dict[str, Any]:
    """The harness in its own process; stopped (SIGTERM, then SIGKILL) if it overruns, and
    whatever it left mounted under ``workdir`` unmounted."""
    args = [
        sys.executable,
        "-W",
        "ignore",
        "-m",
        "benchmarks.cinder_migration",
        "--ceph-conf",
        stack.ceph_conf,
        "--pool",
        stack.pool,
        "--workdir",
        str(workdir),
        "--manager",
        manager,
        *options,
    ]
    child = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = child.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)
        try:
            child.communicate(timeout=TERM_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
        pytest.fail(f"the {manager} migration did not end in {RUN_TIMEOUT} s{log_tail(workdir)}")
    finally:
        for point in reversed(mounts_under(workdir)):
            subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    assert child.returncode == 0, f"{stderr[-3000:]}{log_tail(workdir)}"
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return report


def log_tail(workdir: Path, lines: int = 40) -> str:
    """Cinder's errors and the end of its log, for a failure's message."""
    log = workdir / "cinder-volume.log"
    if not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()
    errors = [line for line in text if " ERROR " in line][:lines]
    return "\n--- cinder-volume.log errors:\n" + "\n".join(errors or text[-lines:])


@pytest.mark.parametrize("manager", ["stock", "asyncopy"])
def test_generic_migration_rbd_to_nfs_and_back(
    big_stack: devstack.Stack,
    tmp_path: Path,
    manager: str,
    record_property: Any,
) -> None:
    workdir = tmp_path / "cinder"
    report = run_harness(big_stack, workdir, manager)
    shown = json.dumps(report, indent=1)
    expected_class = {
        "stock": "cinder.volume.manager.VolumeManager",
        "asyncopy": "asyncopy.cinder.manager.VolumeManager",
    }[manager]
    assert report["managers"] == {"ceph": expected_class, "nfs": expected_class}, shown

    directions = report["directions"]
    assert [(d["source"], d["destination"]) for d in directions] == [
        ("ceph", "nfs"),
        ("nfs", "ceph"),
    ], shown
    for direction in directions:
        assert direction["error"] is None, shown
        assert direction["migration_status"] == "success", shown
        assert direction["host"] == direction["expected_host"], shown
        assert direction["host"].startswith(f"migration@{direction['destination']}#"), shown
        assert direction["digest_equal"], shown  # every byte of the volume, both ways

    leftovers = report["leftovers"]
    assert leftovers == {
        "rbd_images": [],
        "share_files": [],
        "volumes": [],
        "attachments": [],
        "mounts": [],
        "child_processes": [],
        "temp_files": [],
        "system_temp_files": [],
    }, shown
    assert_nothing_left(report, shown)

    for direction in directions:
        name = f"{direction['source']}_to_{direction['destination']}"
        record_property(f"{name}_seconds", direction["seconds"])
        record_property(f"{name}_source_allocated", direction["source_allocated"])
        record_property(f"{name}_destination_allocated", direction["destination_allocated"])
    if manager == "stock":
        # What stock Cinder does, recorded, not required: its copy_volume writes every byte,
        # so the destination goes thick (NFS file and RBD image fully allocated).
        thick = all(d["destination_allocated"] >= report["size"] for d in directions)
        record_property("stock_destination_thick", thick)
        return

    for direction in directions:
        assert direction["destination_allocated"] <= direction["source_allocated"] + MiB, shown
        assert direction["progress_seen"], shown  # migration_progress while copying
        assert direction["progress_after"] is None, shown  # and gone at the end


def assert_nothing_left(report: dict[str, Any], shown: str) -> None:
    """Every volume deleted, and no image, share file, mount or child process left over."""
    assert report["delete_failures"] == [], shown
    assert report["after_cleanup"] == {
        "rbd_images": [],
        "share_files": [],
        "mounts": [],
        "child_processes": [],
    }, shown


LIMIT = 16 * MiB


def test_the_backends_copy_limit_holds_on_rbd_and_nfs(
    big_stack: devstack.Stack, tmp_path: Path, record_property: Any
) -> None:
    """volume_copy_bps_limit, which Cinder applies only to dd between block devices, limits
    asyncopy's reads on both paths: each copy takes at least what it read over the limit."""
    report = run_harness(big_stack, tmp_path / "cinder", "asyncopy", "--bps-limit", str(LIMIT))
    shown = json.dumps(report, indent=1)
    assert [d["migration_status"] for d in report["directions"]] == ["success"] * 2, shown
    assert all(d["digest_equal"] for d in report["directions"]), shown
    copies = report["copies"]
    assert len(copies) == 2, shown
    for index, copied in enumerate(copies):
        assert copied["limit"] == str(LIMIT), shown
        assert copied["verified"] == "True", shown
        assert int(copied["read"]) >= int(copied["written"]) > 0, shown
        # the copy's reads alone at the limit, within 10%; the verifying re-read comes on top
        assert float(copied["seconds"]) >= 0.9 * int(copied["read"]) / LIMIT, shown
        record_property(f"limited_copy_{index}_seconds", copied["seconds"])


def test_a_migration_killed_mid_copy_leaves_nothing_attached_or_running(
    big_stack: devstack.Stack, tmp_path: Path
) -> None:
    """The migration's green thread killed while it copies, as a stopping cinder-volume ends
    its green threads: the copy child is gone, both volumes detached, the note removed."""
    report = run_harness(
        big_stack,
        tmp_path / "cinder",
        "asyncopy",
        "--bps-limit",
        str(LIMIT),  # a copy long enough to be caught under way
        "--interrupt",
    )
    shown = json.dumps(report, indent=1)
    assert report["interrupted"] == {
        "error": None,
        "kill_seconds": report["interrupted"]["kill_seconds"],
        "copy_children": [],
        "source_watchers": [],
        "attachments": [],
        "progress_after": None,
    }, shown
    assert report["interrupted"]["kill_seconds"] < 10, shown
    assert report["copies"] == [], shown  # it did not run to its end
    assert_nothing_left(report, shown)
