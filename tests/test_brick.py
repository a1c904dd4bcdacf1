"""os-brick endpoints: the real LOCAL connector over real loop devices, the real RemoteFs
(NFS) connector over a bind-mounted share, and the RBD dev stack.

The connector in most tests is os-brick's own ``LocalConnector``, subclassed only to record
its calls (and, where a test says so, to fail one of them): no mock of os-brick's internals.
The NFS tests use os-brick's own factory and connector, unchanged (``tests/nfsshare.py``).
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from asyncopy.access.brick import MASK, attach, load_connection_info
from asyncopy.cinder import copy_volume_data
from asyncopy.cinder.volume import open_volume
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.errors import CopyFailed, EndpointError, UsageError
from asyncopy.sinks.brick import open_brick_sink
from asyncopy.sinks.file import FileSink
from asyncopy.sources.brick import open_brick_source
from asyncopy.sources.file import FileSource
from asyncopy.specs import open_sink, open_source
from asyncopy.testing import Faults, FaultyVolume, MemoryVolume
from benchmarks.cinder_runs import mounts_under
from tests.cephtools import Cluster, qemu_identical
from tests.conftest import MakeLoop, MiB, open_fds, write_pattern
from tests.nfsshare import NfsShare, is_mounted, nfs_share
from tests.test_cli import run

with warnings.catch_warnings():  # oslo.privsep imports eventlet, which says it is deprecated
    warnings.simplefilter("ignore")
    from os_brick import exception
    from os_brick.initiator.connectors.local import LocalConnector

# Once os-brick is imported, eventlet warns at every fork and oslo's eventlet helpers at import.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using fork:DeprecationWarning:eventlet"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:oslo_utils.eventletutils"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:oslo_service.eventlet_backdoor"),
]

SECRET = "s3cr3t-chap-password"
NFS_SIZE = 8 * MiB
KEYRING = "[client.cinder]\n\tkey = AQBzZXNzaW9uLWtleS1ub3QtcmVhbA=="
LAYOUT = [(0, 4096), (3 * MiB, 256 * 1024), (7 * MiB, 1 * MiB)]
Call = tuple[Any, ...]


class RecordingConnector(LocalConnector):  # type: ignore[misc]  # os-brick has no types
    """os-brick's LocalConnector, recording each call; optionally failing or answering oddly."""

    def __init__(
        self,
        root_helper: str,
        calls: list[Call],
        *,
        connect_error: Exception | None = None,
        disconnect_error: Exception | None = None,
        answer: dict[str, Any] | None = None,
        connect_seconds: float = 0.0,
    ) -> None:
        super().__init__(root_helper)
        self.connect_seconds = connect_seconds
        self.calls = calls
        self.connect_error = connect_error
        self.disconnect_error = disconnect_error
        self.answer = answer

    def connect_volume(self, connection_properties: dict[str, Any]) -> Any:
        self.calls.append(("connect", connection_properties["device_path"]))
        time.sleep(self.connect_seconds)  # a login: in a worker thread, as os-brick runs
        if self.connect_error is not None:
            raise self.connect_error
        info = super().connect_volume(connection_properties)
        return self.answer if self.answer is not None else info

    def disconnect_volume(
        self,
        connection_properties: dict[str, Any],
        device_info: Any,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        self.calls.append(("disconnect", device_info.get("path"), force, ignore_errors))
        super().disconnect_volume(
            connection_properties, device_info, force=force, ignore_errors=ignore_errors
        )
        if self.disconnect_error is not None:
            raise self.disconnect_error


class Recorder:
    """A connector factory whose connectors share one call log."""

    def __init__(self, **faults: Any) -> None:
        self.calls: list[Call] = []
        self.protocols: list[str] = []
        self.conns: list[dict[str, Any]] = []
        self.faults = faults

    def factory(
        self, protocol: str, root_helper: str, *, conn: dict[str, Any]
    ) -> RecordingConnector:
        self.protocols.append(protocol)
        self.conns.append(conn)
        return RecordingConnector(root_helper, self.calls, **self.faults)


def local_info(device: str | Path) -> dict[str, Any]:
    """A Cinder-style connection_info for the LOCAL connector, with a secret riding along."""
    return {
        "driver_volume_type": "local",
        "data": {
            "device_path": str(device),
            "auth_password": SECRET,
            "keyring": KEYRING,
            "secret_type": "ceph",  # names a secret, holds none
            "volume_id": "v-1",
        },
    }


def write_info(path: Path, info: object) -> str:
    path.write_text(json.dumps(info))
    return str(path)


async def copy_through_brick(source: MemoryVolume, conn: str, recorder: Recorder) -> None:
    """What a command line does: read the connection_info file, attach, copy."""
    info = load_connection_info(conn)
    async with open_brick_sink(info, connector_factory=recorder.factory) as sink:
        await copy(source, sink)


def succeeded(device: str) -> list[Call]:
    return [("connect", device), ("disconnect", device, False, False)]


def failed(device: str) -> list[Call]:
    return [("connect", device), ("disconnect", device, True, True)]


async def test_file_to_brick_and_back_is_identical_and_verified(
    tmp_path: Path, make_loop: MakeLoop
) -> None:
    src, back = tmp_path / "src.img", tmp_path / "back.img"
    image = write_pattern(src, 8 * MiB, LAYOUT)
    dirt = random.Random(5).randbytes(8 * MiB)
    device, backing = make_loop(8 * MiB, fill=dirt)
    info = load_connection_info(write_info(tmp_path / "conn.json", local_info(device)))
    recorder = Recorder()
    before = open_fds()

    async with (
        open_source(str(src)) as source,
        open_brick_sink(info, connector_factory=recorder.factory) as sink,
    ):
        assert sink.name == f"brick:local:{device}"
        to_device = await copy(source, sink, CopyOptions(verify=True))
    assert to_device.verified
    assert to_device.bytes_zeroed > 6 * MiB  # a device is not trusted to read zeros
    assert backing.read_bytes() == image
    assert recorder.calls == succeeded(device)

    async with (
        open_brick_source(info, connector_factory=recorder.factory) as source,
        open_sink(str(back), size=source.size) as sink,
    ):
        back_result = await copy(source, sink, CopyOptions(verify=True))
    assert back_result.verified
    assert back.read_bytes() == image
    assert recorder.calls == succeeded(device) * 2
    assert recorder.protocols == ["local", "local"]
    assert recorder.conns == [info.connection_info] * 2  # all of it, as Cinder passes it
    assert open_fds() == before


async def test_the_real_factory_attaches_with_os_brick(make_loop: MakeLoop) -> None:
    device, _ = make_loop(1 * MiB)
    async with attach(local_info(device)) as path:
        assert path == device
    async with open_brick_source(local_info(device)) as source:
        assert (source.size, source.name) == (1 * MiB, f"brick:local:{device}")


async def test_an_io_error_disconnects_once_forced(make_loop: MakeLoop) -> None:
    device, _ = make_loop(4 * MiB)
    recorder = Recorder()
    source = FaultyVolume(MemoryVolume(bytes(range(256)) * 16384), Faults(read_eio_at=2 * MiB))
    before = open_fds()
    with pytest.raises(EndpointError, match="read failed on memory at offset") as caught:
        async with open_brick_sink(local_info(device), connector_factory=recorder.factory) as sink:
            await copy(source, sink, CopyOptions(chunk_size=1 * MiB))
    assert not getattr(caught.value, "__notes__", None)
    assert recorder.calls == failed(device)
    assert open_fds() == before


async def test_cancellation_disconnects_once_forced(make_loop: MakeLoop) -> None:
    device, _ = make_loop(4 * MiB)
    recorder = Recorder()
    faults = Faults(delay=30.0)
    source = FaultyVolume(MemoryVolume(b"\x01" * (4 * MiB)), faults)
    before = open_fds()
    with trio.move_on_after(0.5) as scope:
        async with open_brick_sink(local_info(device), connector_factory=recorder.factory) as sink:
            await copy(source, sink, CopyOptions(chunk_size=1 * MiB))
    assert scope.cancelled_caught
    assert faults.reads_started  # it was cancelled in the middle of the copy
    assert recorder.calls == failed(device)
    assert open_fds() == before


async def test_a_connect_cancelled_midway_is_finished_then_disconnected(
    make_loop: MakeLoop,
) -> None:
    device, _ = make_loop(1 * MiB)
    recorder = Recorder(connect_seconds=0.5)
    with trio.move_on_after(0.1) as scope:
        async with attach(local_info(device), connector_factory=recorder.factory):
            pytest.fail("attached")
    assert scope.cancelled_caught
    assert recorder.calls == failed(device)


async def test_a_failed_disconnect_after_a_good_copy_fails_it(make_loop: MakeLoop) -> None:
    device, _ = make_loop(1 * MiB)
    recorder = Recorder(
        disconnect_error=exception.BrickException(f"flush of {device} ({SECRET}) failed")
    )
    source = MemoryVolume(b"\x02" * MiB)
    with pytest.raises(EndpointError) as caught:
        async with open_brick_sink(local_info(device), connector_factory=recorder.factory) as sink:
            await copy(source, sink)
    assert caught.value.operation == "disconnect"
    assert str(caught.value) == (
        f"disconnect failed on brick:local:{device}: flush of {device} ({MASK}) failed"
    )
    assert recorder.calls == succeeded(device)


async def test_a_failed_disconnect_after_a_failed_copy_is_a_note(make_loop: MakeLoop) -> None:
    device, _ = make_loop(1 * MiB)
    recorder = Recorder(disconnect_error=exception.BrickException(f"logout {SECRET} failed"))
    source = FaultyVolume(MemoryVolume(b"\x03" * MiB), Faults(read_eio_at=0))
    with pytest.raises(EndpointError, match="read failed on memory at offset 0") as caught:
        async with open_brick_sink(local_info(device), connector_factory=recorder.factory) as sink:
            await copy(source, sink)
    assert caught.value.__notes__ == [
        f"disconnect failed on brick:local:{device}: logout {MASK} failed"
    ]
    assert recorder.calls == failed(device)


async def test_a_failed_connect_is_one_masked_error_and_not_disconnected(
    make_loop: MakeLoop,
) -> None:
    fill = b"\x44" * MiB
    device, backing = make_loop(1 * MiB, fill=fill)
    error = exception.BrickException(
        f"iscsiadm -m node -n auth.password -v {SECRET}: code 24\n"
        f"ceph said: {KEYRING}, props: {local_info(device)['data']}"
    )
    recorder = Recorder(connect_error=error)
    with pytest.raises(EndpointError) as caught:
        async with open_brick_sink(local_info(device), connector_factory=recorder.factory):
            pytest.fail("attached")
    assert caught.value.operation == "connect"
    assert str(caught.value) == (
        "connect failed on brick:local: "
        f"iscsiadm -m node -n auth.password -v {MASK}: code 24 ceph said: {MASK}, props: "
        f"{{'device_path': '{device}', 'auth_password': '{MASK}', 'keyring': '{MASK}', "
        "'secret_type': 'ceph', 'volume_id': 'v-1'}"
    )
    assert recorder.calls == [("connect", device)]
    assert backing.read_bytes() == fill


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"type": "local"}, "os-brick's answer has no device path"),
        (
            {"type": "rbd", "path": io.BytesIO()},
            "os-brick's answer has a BytesIO, not a device path",
        ),
    ],
)
async def test_an_answer_without_a_device_path_is_refused_and_disconnected(
    make_loop: MakeLoop, answer: dict[str, Any], reason: str
) -> None:
    device, _ = make_loop(1 * MiB)
    recorder = Recorder(answer=answer)
    with pytest.raises(EndpointError) as caught:
        async with attach(local_info(device), connector_factory=recorder.factory):
            pytest.fail("attached")
    assert str(caught.value) == f"connect failed on brick:local: {reason}"
    assert recorder.calls == [("connect", device), ("disconnect", answer.get("path"), True, True)]


async def test_a_regular_file_is_written_in_place_as_a_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\x55" * (2 * MiB))
    inode = plain.stat().st_ino
    recorder = Recorder()
    source = MemoryVolume(b"\x00" * MiB)
    async with open_brick_sink(local_info(plain), connector_factory=recorder.factory) as sink:
        assert isinstance(sink, FileSink)
        assert (sink.name, sink.size, sink.known_zero) == (f"brick:local:{plain}", 2 * MiB, False)
        result = await copy(source, sink)
    assert result.bytes_zeroed == MiB  # not trusted to read zeros: its stale bytes are zeroed
    assert plain.read_bytes() == b"\x00" * MiB + b"\x55" * MiB
    assert (plain.stat().st_ino, plain.stat().st_size) == (inode, 2 * MiB)
    assert recorder.calls == succeeded(str(plain))


@pytest.mark.parametrize("kind", ["directory", "character device"])
async def test_a_path_neither_a_block_device_nor_a_file_is_refused_and_disconnected(
    tmp_path: Path, kind: str
) -> None:
    path = str(tmp_path) if kind == "directory" else "/dev/null"
    recorder = Recorder()
    with pytest.raises(EndpointError) as caught:
        async with open_brick_source(local_info(path), connector_factory=recorder.factory):
            pytest.fail("attached")
    assert str(caught.value) == (
        f"connect failed on brick:local:{path}: "
        "os-brick's path is neither a block device nor a regular file"
    )
    assert recorder.calls == failed(path)


BAD_FILES: dict[str, tuple[str | None, str]] = {
    "missing": (None, "cannot read: No such file or directory"),
    "not-json": (
        f'{{"driver_volume_type": "local", "data": {{"auth_password": "{SECRET}"',
        "not JSON",
    ),
    "not-an-object": (json.dumps([SECRET]), "must be a JSON object, not an array"),
    "no-type": (json.dumps({"data": {"auth_password": SECRET}}), "missing 'driver_volume_type'"),
    "nothing": (json.dumps({"auth_password": SECRET}), "missing 'driver_volume_type' and 'data'"),
    "type-not-string": (
        json.dumps({"driver_volume_type": 3, "data": {"auth_password": SECRET}}),
        "'driver_volume_type' must be a non-empty string",
    ),
    "data-not-object": (
        json.dumps({"driver_volume_type": "iscsi", "data": [SECRET]}),
        "'data' must be an object, not an array",
    ),
    "qcow2": (
        json.dumps(
            {
                "driver_volume_type": "nfs",
                "data": {"export": "h:/e", "name": "v", "format": "qcow2", "auth_key": SECRET},
                "mount_point_base": "/var/lib/cinder/mnt",
            }
        ),
        "the nfs volume is in 'qcow2' format, not raw: asyncopy copies raw volumes only",
    ),
    "nfs-without-mount-point-base": (
        json.dumps({"driver_volume_type": "nfs", "data": {"export": "h:/e", "name": "v"}}),
        "a nfs volume needs 'mount_point_base' beside 'data'",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
async def test_a_bad_connection_info_file_is_one_usage_error(
    tmp_path: Path, make_loop: MakeLoop, case: str
) -> None:
    content, expected = BAD_FILES[case]
    fill = b"\x66" * MiB
    _, backing = make_loop(1 * MiB, fill=fill)
    path = tmp_path / "conn.json"
    if content is not None:
        path.write_text(content)
    recorder = Recorder()
    with pytest.raises(UsageError) as caught:
        await copy_through_brick(MemoryVolume(b"\x01" * MiB), str(path), recorder)
    message = str(caught.value)
    assert message.startswith(f"connection info {path}: ")
    assert expected in message
    assert "\n" not in message
    assert SECRET not in message
    assert recorder.calls == []
    assert backing.read_bytes() == fill


async def test_a_bad_connection_info_dict_is_refused_before_connecting() -> None:
    recorder = Recorder()
    with pytest.raises(UsageError, match="connection info: missing 'data'"):
        async with attach({"driver_volume_type": "local"}, connector_factory=recorder.factory):
            pytest.fail("attached")
    assert recorder.calls == []


def test_the_api_response_form_is_accepted(tmp_path: Path) -> None:
    info = local_info("/dev/null")
    wrapped = write_info(tmp_path / "a.json", {"connection_info": info})
    assert load_connection_info(wrapped).connection_info == info
    assert load_connection_info(write_info(tmp_path / "b.json", info)).connection_info == info


async def test_an_unknown_driver_volume_type_is_a_usage_error() -> None:
    info = {"driver_volume_type": "carrier_pigeon", "data": {"auth_password": SECRET}}
    with pytest.raises(UsageError, match="os-brick has no connector for driver_volume_type"):
        async with attach(info):
            pytest.fail("attached")


async def test_iscsi_without_a_lock_path_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSLO_LOCK_PATH", raising=False)
    info = {
        "driver_volume_type": "iscsi",
        "data": {
            "target_portal": "127.0.0.1:3260",
            "target_iqn": "iqn.2010-10.org.openstack:volume-1",
            "target_lun": 1,
            "auth_method": "CHAP",
            "auth_username": "user",
            "auth_password": SECRET,
        },
    }
    with pytest.raises(UsageError, match="set OSLO_LOCK_PATH") as caught:
        async with attach(info):
            pytest.fail("attached")
    assert SECRET not in str(caught.value)


async def test_without_os_brick_attaching_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "os_brick", None)  # how Python spells "not installed"
    with pytest.raises(UsageError, match=r"^os-brick is not installed \(pip install os-brick\)$"):
        async with attach(local_info("/dev/null")):
            pytest.fail("attached")


def test_importing_asyncopy_does_not_import_os_brick() -> None:
    code = "import sys, asyncopy, asyncopy.access.brick; print('os_brick' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


# -- os-brick's own NFS connector, over a bind-mounted directory (tests/nfsshare.py) -----------


@pytest.fixture
def nfs(tmp_path: Path) -> Iterator[NfsShare]:
    """A share os-brick's NFS connector finds mounted; unmounted however the test ends."""
    root = tmp_path / "nfs"
    with nfs_share(root) as share:
        yield share
    assert mounts_under(root) == []  # nor did os-brick mount anything of its own there


def sparse_file(path: Path, size: int) -> None:
    """A volume file as Cinder's NfsDriver creates it: sparse, reading as zeros."""
    with open(path, "wb") as out:
        out.truncate(size)


def test_nfs_to_a_loop_device_and_back_through_copy_volume_data(
    nfs: NfsShare, make_loop: MakeLoop
) -> None:
    image = write_pattern(nfs.path("volume-src"), NFS_SIZE, LAYOUT)
    device, backing = make_loop(NFS_SIZE, fill=random.Random(9).randbytes(NFS_SIZE))

    there = copy_volume_data(
        nfs.info("volume-src", format="raw"), local_info(device), NFS_SIZE, verify=True
    )
    assert there["verified"]
    assert there["bytes_zeroed"] > 6 * MiB  # the file's holes, zeroed on the device
    assert backing.read_bytes() == image

    dst, tail = nfs.path("volume-dst"), b"\x77" * MiB  # bytes past the copied size
    dst.write_bytes(random.Random(10).randbytes(NFS_SIZE) + tail)
    before = dst.stat()
    back = copy_volume_data(local_info(device), nfs.info("volume-dst"), NFS_SIZE, verify=True)
    assert back["verified"]
    assert back["bytes_zeroed"] > 6 * MiB  # an existing file is not trusted to read zeros
    assert dst.read_bytes() == image + tail
    after = dst.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)  # not recreated


def test_nfs_to_a_sparse_nfs_volume_stays_thin_through_copy_volume_data(nfs: NfsShare) -> None:
    src, dst = nfs.path("volume-src"), nfs.path("volume-dst")
    image = write_pattern(src, NFS_SIZE, LAYOUT)
    sparse_file(dst, NFS_SIZE)
    inode = dst.stat().st_ino
    result = copy_volume_data(
        nfs.info("volume-src"), nfs.info("volume-dst"), NFS_SIZE, target_is_zero=True, verify=True
    )
    assert result["verified"]
    assert result["bytes_skipped"] > 6 * MiB  # Cinder's sparse copy: the holes stay holes
    assert dst.read_bytes() == image
    assert dst.stat().st_blocks <= src.stat().st_blocks
    assert (dst.stat().st_ino, dst.stat().st_size) == (inode, NFS_SIZE)


async def test_open_volume_opens_nfs_volume_files_in_place(nfs: NfsShare) -> None:
    image = write_pattern(nfs.path("volume-a"), NFS_SIZE, LAYOUT, seed=3)
    dst = nfs.path("volume-b")
    dst.write_bytes(b"\x99" * NFS_SIZE)
    inode = dst.stat().st_ino
    before = open_fds()
    async with (
        open_volume(nfs.info("volume-a"), read_only=True) as source,
        open_volume(nfs.info("volume-b", format="raw"), read_only=False) as sink,
    ):
        assert isinstance(source, FileSource)
        assert isinstance(sink, FileSink)
        assert source.name == f"brick:nfs:{nfs.mounted_path('volume-a')}"
        assert sink.name == f"brick:nfs:{nfs.mounted_path('volume-b')}"
        assert (source.size, sink.size, sink.known_zero) == (NFS_SIZE, NFS_SIZE, False)
        result = await copy(source, sink, CopyOptions(verify=True))
    assert result.verified
    assert result.bytes_zeroed > 6 * MiB
    assert dst.read_bytes() == image
    assert (dst.stat().st_ino, dst.stat().st_size) == (inode, NFS_SIZE)
    assert open_fds() == before


def test_the_cli_copies_through_an_nfs_connection_info_file(nfs: NfsShare, tmp_path: Path) -> None:
    image = write_pattern(nfs.path("volume-src"), NFS_SIZE, LAYOUT, seed=4)
    sparse_file(nfs.path("volume-dst"), NFS_SIZE)
    src = write_info(tmp_path / "src.json", nfs.info("volume-src"))
    dst = write_info(tmp_path / "dst.json", {"connection_info": nfs.info("volume-dst")})
    out = tmp_path / "out.img"
    there = run("copy", f"brick:{src}", str(out), "--verify")
    assert there.returncode == 0, there.stderr
    assert out.read_bytes() == image
    back = run("copy", str(out), f"brick:{dst}", "--verify", "--target-is-zero")
    assert back.returncode == 0, back.stderr
    assert nfs.path("volume-dst").read_bytes() == image


def test_a_qcow2_destination_is_refused_and_nothing_is_written(nfs: NfsShare) -> None:
    write_pattern(nfs.path("volume-src"), NFS_SIZE, LAYOUT)
    dst = nfs.path("volume-dst")
    fill = random.Random(11).randbytes(NFS_SIZE)
    dst.write_bytes(fill)
    before = dst.stat()
    with pytest.raises(CopyFailed) as caught:
        copy_volume_data(nfs.info("volume-src"), nfs.info("volume-dst", format="qcow2"), NFS_SIZE)
    assert str(caught.value) == (
        "connection info: the nfs volume is in 'qcow2' format, not raw: "
        "asyncopy copies raw volumes only (an image file's bytes are not the volume's)"
    )
    assert dst.read_bytes() == fill
    after = dst.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


@pytest.mark.parametrize(
    ("volume_format", "shown"), [("qcow2", "'qcow2'"), ("ploop", "'ploop'"), (2, "a number")]
)
@pytest.mark.parametrize("read_only", [True, False])
async def test_a_volume_not_in_raw_format_is_refused_before_attaching(
    nfs: NfsShare, volume_format: object, shown: str, read_only: bool
) -> None:
    nfs.path("volume-q").write_bytes(b"\x42" * MiB)
    info = nfs.info("volume-q", format=volume_format)
    recorder = Recorder()
    opening: AbstractAsyncContextManager[object] = (
        open_brick_source(info, connector_factory=recorder.factory)
        if read_only
        else open_brick_sink(info, connector_factory=recorder.factory)
    )
    with pytest.raises(UsageError, match=f"the nfs volume is in {shown} format, not raw"):
        async with opening:
            pytest.fail("attached")
    assert recorder.protocols == []  # no connector was even made
    with pytest.raises(UsageError, match="not raw"):
        async with open_volume(info, read_only=read_only):
            pytest.fail("opened")
    assert nfs.path("volume-q").read_bytes() == b"\x42" * MiB


async def test_an_nfs_volume_without_its_mount_point_base_is_refused(nfs: NfsShare) -> None:
    sparse_file(nfs.path("volume-1"), MiB)
    info = nfs.info("volume-1")
    del info["mount_point_base"]
    recorder = Recorder()
    with pytest.raises(UsageError, match="a nfs volume needs 'mount_point_base' beside 'data'"):
        async with attach(info, connector_factory=recorder.factory):
            pytest.fail("attached")
    assert recorder.protocols == []
    with pytest.raises(UsageError, match="needs 'mount_point_base'"):
        async with open_volume(info, read_only=True):
            pytest.fail("opened")


def test_the_share_stand_in_is_unmounted_whatever_happens(tmp_path: Path) -> None:
    shares: list[NfsShare] = []

    def failing_test() -> None:
        with nfs_share(tmp_path / "a") as share:
            shares.append(share)
            assert is_mounted(share.mount_point)
            raise RuntimeError("a failing test")

    with pytest.raises(RuntimeError, match="a failing test"):
        failing_test()
    assert not is_mounted(shares[0].mount_point)
    assert mounts_under(tmp_path) == []


async def test_rbd_to_a_brick_device_and_back_to_rbd(
    ceph: Cluster, tmp_path: Path, make_loop: MakeLoop
) -> None:
    size = 20 * MiB
    src_name, dst_name = ceph.name(), ceph.name()
    content = ceph.create(src_name, size, [(0, 4096), (5 * MiB, 3 * MiB), (size - 512, 512)])
    device, backing = make_loop(size, fill=random.Random(7).randbytes(size))
    conn = write_info(tmp_path / "conn.json", local_info(device))

    async with (
        open_source(ceph.uri(src_name)) as source,
        open_brick_sink(load_connection_info(conn)) as sink,
    ):
        to_device = await copy(source, sink, CopyOptions(verify=True))
    assert to_device.verified
    assert backing.read_bytes() == content

    async with (
        open_brick_source(load_connection_info(conn)) as source,
        open_sink(ceph.uri(dst_name), size=source.size) as sink,
    ):
        to_rbd = await copy(source, sink, CopyOptions(verify=True))
    assert to_rbd.verified
    assert to_rbd.bytes_total == size
    assert qemu_identical(ceph.uri(src_name), ceph.uri(dst_name))
    assert ceph.read(dst_name) == content


def test_the_cli_copies_through_a_connection_info_file(
    ceph: Cluster, tmp_path: Path, make_loop: MakeLoop
) -> None:
    size = 12 * MiB
    src_name, dst_name = ceph.name(), ceph.name()
    content = ceph.create(src_name, size, [(MiB, 2 * MiB), (size - 4096, 4096)])
    device, backing = make_loop(size, fill=random.Random(8).randbytes(size))
    conn = write_info(tmp_path / "conn.json", local_info(device))
    there = run("copy", ceph.uri(src_name), f"brick:{conn}", "--verify", "--root-helper", "sudo")
    assert there.returncode == 0, there.stderr
    assert backing.read_bytes() == content
    back = run("copy", f"brick:{conn}", ceph.uri(dst_name), "--verify")
    assert back.returncode == 0, back.stderr
    assert qemu_identical(ceph.uri(src_name), ceph.uri(dst_name))
    missing = run("copy", f"brick:{tmp_path / 'nope.json'}", ceph.uri(ceph.name()))
    assert missing.returncode == 2
    assert missing.stderr.startswith("asyncopy: error: connection info ")


class RefusingShareConnector:
    """A RemoteFs connector refusing its share as os-brick's vzstorage client does: the whole
    share string, password included, quoted back."""

    def __init__(self, root_helper: str) -> None:
        self.root_helper = root_helper

    def connect_volume(self, connection_properties: dict[str, Any]) -> Any:
        share = connection_properties["export"]
        raise exception.BrickException(
            f"Invalid Virtuozzo Storage share specification: {share!r}. Must be: "
            "[MDS1[,MDS2],...:/]<CLUSTER NAME>[:PASSWORD]."
        )

    def disconnect_volume(self, connection_properties: dict[str, Any], device_info: Any) -> None:
        raise AssertionError("never connected")


@pytest.mark.parametrize(
    ("export", "shown"),
    [
        ("mds1,mds2:/cluster1:pw-" + SECRET, f"mds1,mds2:/cluster1:{MASK}"),
        ("cluster1:pw-" + SECRET, f"cluster1:{MASK}"),
        ("10.0.0.1:/export/path", "10.0.0.1:/export/path"),  # an NFS export holds none
    ],
)
async def test_a_share_password_is_masked_in_a_refused_connect(
    tmp_path: Path, export: str, shown: str
) -> None:
    info = {
        "driver_volume_type": "vzstorage",
        "mount_point_base": str(tmp_path),
        "data": {"export": export, "name": "volume-1", "format": "raw"},
    }

    def factory(protocol: str, root_helper: str, *, conn: dict[str, Any]) -> Any:
        return RefusingShareConnector(root_helper)

    with pytest.raises(EndpointError) as caught:
        async with open_brick_source(info, connector_factory=factory):
            pytest.fail("attached")
    assert str(caught.value) == (
        f"connect failed on brick:vzstorage: Invalid Virtuozzo Storage share specification: "
        f"'{shown}'. Must be: [MDS1[,MDS2],...:/]<CLUSTER NAME>[:PASSWORD]."
    )
