"""asyncopy as Cinder calls it: connection_info dicts, copy_volume_data in a child process
(also from an eventlet-patched caller), against the dev stack's real Ceph, tgtd and os-brick."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from asyncopy.cinder import copy_volume, copy_volume_data
from asyncopy.cinder.volume import open_volume
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.core.progress import Progress
from asyncopy.errors import CopyFailed, UsageError
from asyncopy.sinks.rbd import RbdSink
from devtools import devstack
from tests.cephtools import Cluster, MiB, qemu_identical
from tests.conftest import MakeLoop, MakeLun, write_pattern

OBJ = 4 * MiB
LAYOUT = [(0, 4096), (OBJ, OBJ), (5 * OBJ + 12345, 100), (8 * OBJ - 512, 512)]
SIZE = 8 * OBJ


def rbd_info(stack: devstack.Stack, name: str) -> dict[str, Any]:
    """What Cinder's RBD driver's initialize_connection returns (as seen with Cinder 29)."""
    port = stack.mon_host.rsplit(":", 1)[1].rstrip("]")
    return {
        "driver_volume_type": "rbd",
        "data": {
            "name": f"{stack.pool}/{name}",
            "hosts": ["127.0.0.1"],
            "ports": [port],
            "cluster_name": "ceph",
            "auth_enabled": True,
            "auth_username": "admin",
            "secret_type": "ceph",
            "secret_uuid": None,
            "volume_id": name,
            "discard": True,
        },
    }


def local_info(device: str) -> dict[str, Any]:
    return {"driver_volume_type": "local", "data": {"device_path": device}}


def iscsi_info(lun: devstack.Lun) -> dict[str, Any]:
    host_port, iqn = lun.url.removeprefix("iscsi://").split("/")[:2]
    return {
        "driver_volume_type": "iscsi",
        "data": {"target_portal": host_port, "target_iqn": iqn, "target_lun": 1},
    }


def test_rbd_to_a_local_device_and_back_both_directions(
    stack: devstack.Stack, ceph: Cluster, make_loop: MakeLoop
) -> None:
    src, back = ceph.name("volume"), ceph.name("volume")
    content = ceph.create(src, SIZE, LAYOUT)
    ceph.create(back, SIZE)  # created by the destination's driver: empty, thin
    device, backing = make_loop(SIZE, fill=random.Random(2).randbytes(SIZE))
    seen: list[Progress] = []

    there = copy_volume_data(rbd_info(stack, src), local_info(device), SIZE, progress=seen.append)
    assert backing.read_bytes() == content
    assert there["bytes_total"] == SIZE
    assert (seen[-1].done, seen[-1].total, seen[-1].eta) == (SIZE, SIZE, 0.0)
    assert seen[-1].rate > 0

    again = copy_volume_data(local_info(device), rbd_info(stack, back), SIZE)
    assert again["bytes_skipped"] > 0  # an empty image is known to read zeros
    assert qemu_identical(ceph.uri(src), ceph.uri(back))
    assert ceph.used(back) <= ceph.used(src)


def test_rbd_to_iscsi_through_the_user_space_initiator(
    stack: devstack.Stack, ceph: Cluster, make_lun: MakeLun, tmp_path: Path
) -> None:
    src = ceph.name("volume")
    content = ceph.create(src, SIZE, LAYOUT)
    lun = make_lun(SIZE, fill=random.Random(3).randbytes(SIZE))
    conf_file = tmp_path / "asyncopy.conf"
    conf_file.write_text("[asyncopy]\niscsi_transport = userspace\nverify = true\n")
    from asyncopy.cinder import config

    result = copy_volume_data(
        rbd_info(stack, src), iscsi_info(lun), SIZE, conf=config.load([str(conf_file)])
    )
    assert result["verified"] is True
    assert Path(lun.backing).read_bytes() == content


def test_failures_are_one_copy_failed(stack: devstack.Stack, ceph: Cluster) -> None:
    src = ceph.name("volume")
    ceph.create(src, SIZE, LAYOUT)
    with pytest.raises(CopyFailed, match="no such image"):
        copy_volume_data(rbd_info(stack, src), rbd_info(stack, "missing-volume"), SIZE)
    small = ceph.name("small")
    ceph.create(small, SIZE // 2)
    with pytest.raises(CopyFailed, match="too small"):
        copy_volume_data(rbd_info(stack, src), rbd_info(stack, small), SIZE)


def test_an_eventlet_patched_caller_can_copy(stack: devstack.Stack, ceph: Cluster) -> None:
    """cinder-volume monkey-patches everything with eventlet before anything else."""
    src, dst = ceph.name("volume"), ceph.name("volume")
    ceph.create(src, SIZE, LAYOUT)
    ceph.create(dst, SIZE)
    script = (
        "import eventlet; eventlet.monkey_patch()\n"
        "import json, sys\n"
        "from asyncopy.cinder import copy_volume_data\n"
        "src, dst, size = json.loads(sys.argv[1])\n"
        "beats = []\n"
        "def heartbeat():\n"
        "    while True:\n"
        "        beats.append(1); eventlet.sleep(0.01)\n"
        "eventlet.spawn(heartbeat)\n"
        "result = copy_volume_data(src, dst, size)\n"
        "print(json.dumps({'result': result, 'beats': len(beats)}))\n"
    )
    args = json.dumps([rbd_info(stack, src), rbd_info(stack, dst), SIZE])
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["result"]["bytes_total"] == SIZE
    assert answer["beats"] > 1  # other green threads ran while the copy was waited for
    assert qemu_identical(ceph.uri(src), ceph.uri(dst))


def test_the_blueprint_migration_with_cinders_own_rbd_driver(
    stack: devstack.Stack, ceph: Cluster, make_loop: MakeLoop
) -> None:
    """Ceph -> non-Ceph -> Ceph with Cinder's RBDDriver, in an eventlet-patched process;
    then the copy_volume drop-in beside Cinder's own copy_volume on RBDVolumeIOWrapper objects."""
    size = 1 << 30
    device, _ = make_loop(size, fill=random.Random(4).randbytes(4 * MiB))
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "tests.cinder_flow", stack.ceph_conf, device],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    source, back = ceph.uri(report["source"]), ceph.uri(report["back"])
    assert qemu_identical(source, device)  # Ceph -> non-Ceph, block for block
    assert qemu_identical(device, back)  # and back
    assert report["again"]["bytes_skipped"] > 0  # the driver's new volume reads zeros
    used = ceph.used(report["source"])
    assert ceph.used(report["back"]) <= used
    ours, theirs = report["copy_volume"]["asyncopy"], report["copy_volume"]["cinder"]
    assert qemu_identical(source, ceph.uri(ours))
    assert qemu_identical(source, ceph.uri(theirs))
    assert ceph.used(ours) <= used  # thin stays thin
    assert ceph.used(theirs) == size  # Cinder's copy_volume writes every byte: thick


async def test_open_volume_reads_and_writes_rbd_from_the_dict(
    stack: devstack.Stack, ceph: Cluster
) -> None:
    src, dst = ceph.name("volume"), ceph.name("volume")
    content = ceph.create(src, SIZE, LAYOUT)
    ceph.create(dst, SIZE, [(0, SIZE)], seed=9)  # dirty: must end equal
    with_keyring = rbd_info(stack, src)
    with_keyring["data"]["keyring"] = (
        "[client.admin]\n\tkey = AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"
    )
    before = keyrings()
    async with (
        open_volume(with_keyring, read_only=True) as source,
        open_volume(rbd_info(stack, dst), read_only=False) as sink,
    ):
        assert keyrings() == before  # the key went to librados in memory, never to a file
        assert source.size == SIZE
        assert isinstance(sink, RbdSink)
        assert not sink.known_zero
        result = await copy(source, sink, CopyOptions(verify=True))
    assert result.verified
    assert ceph.read(dst) == content
    with pytest.raises(UsageError, match="no such image"):
        async with open_volume(rbd_info(stack, "nope"), read_only=False):
            pass
    assert not ceph.exists("nope")  # a destination is never created


def keyrings() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("asyncopy-k")}


def test_copy_volume_takes_paths_and_file_objects(tmp_path: Path, make_loop: MakeLoop) -> None:
    src = tmp_path / "volume.img"
    content = write_pattern(src, 16 * MiB, [(0, 4096), (5 * MiB, MiB), (16 * MiB - 512, 512)])
    device, backing = make_loop(16 * MiB, fill=random.Random(6).randbytes(16 * MiB))
    copy_volume(str(src), device, 16, "1M")
    assert backing.read_bytes() == content
    with open(src, "rb") as handle:
        copy_volume(handle, str(tmp_path / "copy.img"), 8, "1M", sparse=True)
    assert (tmp_path / "copy.img").read_bytes() == content[: 8 * MiB]
    with pytest.raises(CopyFailed, match="not a path or RBD image"):
        copy_volume(object(), device, 16, "1M")


def test_the_manager_refuses_a_cinder_it_does_not_know() -> None:
    """Cinder's real VolumeManager passes; one whose _copy_volume_data changed is refused."""
    script = (
        "from cinder import objects; objects.register_all()\n"
        "from cinder.volume import manager\n"
        "from asyncopy.cinder.manager import VolumeManager, check_cinder\n"
        "from asyncopy.errors import IncompatibleCinder\n"
        "check_cinder()\n"
        "assert issubclass(VolumeManager, manager.VolumeManager)\n"
        "class Changed(manager.VolumeManager):\n"
        "    def _copy_volume_data(self, ctxt, src_vol, dest_vol, remote=None, how=None):\n"
        "        pass\n"
        "try:\n"
        "    check_cinder(Changed)\n"
        "except IncompatibleCinder as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "VolumeManager._copy_volume_data takes" in done.stdout
    assert "volume_manager back to cinder.volume.manager.VolumeManager" in done.stdout
