"""Incremental copies from RBD snapshots (--since): only what changed between two snapshots,
onto every kind of destination, and the short-downtime migration end to end."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cephtools import Cluster
from tests.conftest import MakeLoop, MakeLun, MiB

SIZE = 64 * MiB
CHUNK = 4 * MiB
LAYOUT = [(i * CHUNK, CHUNK) for i in range(SIZE // CHUNK) if i % 3]
# Between @base and @final: two writes (one across a chunk boundary) and a discard.
WRITES = [(5 * MiB + 123, 300_000), (31 * MiB, 2 * MiB)]
DISCARD = (52 * MiB, CHUNK)
CHANGED = {1, 7, 8, 13}  # the chunks those touch (all held data in @base)
ASYNCOPY = (sys.executable, "-m", "asyncopy")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ASYNCOPY, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def volume(ceph: Cluster) -> Iterator[tuple[str, bytes, bytes]]:
    """An image with @base, then changes, then @final: (name, base bytes, final bytes)."""
    name = ceph.name("volume")
    base = ceph.create(name, SIZE, LAYOUT, seed=7)
    final = bytearray(base)
    rng = random.Random(8)
    with ceph.image(name) as image:
        image.create_snap("base")
        for offset, length in WRITES:
            data = rng.randbytes(length)
            image.write(data, offset)
            final[offset : offset + length] = data
        image.discard(*DISCARD)
        final[DISCARD[0] : DISCARD[0] + DISCARD[1]] = bytes(DISCARD[1])
        image.create_snap("final")
    yield name, base, bytes(final)
    remove(ceph, name)


def remove(ceph: Cluster, name: str) -> None:
    if not ceph.exists(name):
        return
    with ceph.image(name) as image:
        for snap in list(image.list_snaps()):
            image.remove_snap(snap["name"])
    subprocess.run(["rbd", "-c", ceph.conf, "rm", f"{ceph.pool}/{name}"], capture_output=True)


def copy_json(*args: str) -> tuple[dict[str, int], str]:
    done = run("copy", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def check_increment(result: dict[str, int]) -> None:
    """Only the changed chunks were read and written; everything else was left alone."""
    assert result["bytes_unchanged"] == SIZE - len(CHANGED) * CHUNK
    assert result["bytes_read"] <= len(CHANGED) * CHUNK
    moved = result["bytes_written"] + result["bytes_zeroed"] + result["bytes_skipped"]
    assert moved == len(CHANGED) * CHUNK


def test_the_short_downtime_migration_onto_an_image(
    ceph: Cluster, volume: tuple[str, bytes, bytes]
) -> None:
    """Copy @base while the volume is in use, snapshot @final once writes stop, copy only
    the difference; the destination then is @final, and has both snapshots."""
    name, base, final = volume
    dst = ceph.name("migrated")
    try:
        first, _ = copy_json(ceph.uri(name, "base"), ceph.uri(dst), "--snapshot-destination")
        assert first["bytes_total"] == SIZE
        assert ceph.read(dst, "base") == base
        second, warned = copy_json(
            ceph.uri(name, "final"),
            ceph.uri(dst),
            "--since",
            "base",
            "--snapshot-destination",
            "--verify",
        )
        assert "warning" not in warned  # @base on the destination, unchanged: checked
        assert second["verified"]
        check_increment(second)
        assert ceph.read(dst) == final
        assert ceph.read(dst, "final") == final
    finally:
        remove(ceph, dst)


@pytest.mark.parametrize("kind", ["file", "loop", "iscsi"])
def test_an_increment_onto_a_file_device_or_lun(
    ceph: Cluster,
    volume: tuple[str, bytes, bytes],
    tmp_path: Path,
    make_loop: MakeLoop,
    make_lun: MakeLun,
    kind: str,
) -> None:
    name, base, final = volume
    now: Callable[[], bytes]
    if kind == "file":
        dst = str(tmp_path / "dst.img")
        now = Path(dst).read_bytes
    elif kind == "loop":
        dst, backing = make_loop(SIZE, fill=bytes(SIZE))
        now = backing.read_bytes
    else:
        lun = make_lun(SIZE)
        dst, now = lun.url, Path(lun.backing).read_bytes
    manifest = tmp_path / "base.manifest"
    copy_json(ceph.uri(name, "base"), dst, "--manifest", str(manifest))
    assert now() == base
    unproven = run("copy", ceph.uri(name, "final"), dst, "--since", "base")
    assert unproven.returncode == 2  # no proof: refused, unless the operator vouches
    assert f"nothing tells whether {dst}" in unproven.stderr
    assert "--trust-destination" in unproven.stderr
    assert now() == base
    trusted, _ = copy_json(ceph.uri(name, "final"), dst, "--since", "base", "--trust-destination")
    check_increment(trusted)
    assert now() == final
    # The same increment again, checked against @base's manifest: DST holds @final now.
    refused = run(
        "copy", ceph.uri(name, "final"), dst, "--since", "base", "--since-manifest", str(manifest)
    )
    assert refused.returncode == 2
    assert "does not hold the bytes of @base" in refused.stderr
    assert now() == final


def test_a_journal_of_the_base_copy_is_checked(
    ceph: Cluster, volume: tuple[str, bytes, bytes], tmp_path: Path
) -> None:
    name, _, final = volume
    dst, journal = tmp_path / "dst.img", tmp_path / "base.journal"
    copy_json(ceph.uri(name, "base"), str(dst), "--journal", str(journal))
    other = tmp_path / "other.img"
    other.write_bytes(dst.read_bytes())
    refused = run(
        "copy",
        ceph.uri(name, "final"),
        str(other),
        "--since",
        "base",
        "--since-manifest",
        str(journal),
    )
    assert refused.returncode == 2
    assert "kept for another destination" in refused.stderr
    wrong = run(
        "copy",
        ceph.uri(name, "final"),
        str(dst),
        "--since",
        "final",
        "--since-manifest",
        str(journal),
    )
    assert wrong.returncode == 2
    result, warned = copy_json(
        ceph.uri(name, "final"),
        str(dst),
        "--since",
        "base",
        "--since-manifest",
        str(journal),
        "--verify",
    )
    assert "warning" not in warned
    check_increment(result)
    assert dst.read_bytes() == final


def test_a_destination_written_since_its_journaled_base_copy_is_refused(
    ceph: Cluster, volume: tuple[str, bytes, bytes], tmp_path: Path
) -> None:
    name, _, _ = volume
    dst, journal = tmp_path / "dst.img", tmp_path / "base.journal"
    copy_json(ceph.uri(name, "base"), str(dst), "--journal", str(journal))
    with open(dst, "r+b") as out:
        out.seek(20 * MiB)
        out.write(b"written meanwhile")
    before = dst.read_bytes()
    proof = ["--since", "base", "--since-manifest", str(journal)]
    refused = run("copy", ceph.uri(name, "final"), str(dst), *proof)
    assert refused.returncode == 2
    assert "was written since the copy --since-manifest" in refused.stderr
    assert dst.read_bytes() == before
    os.removexattr(dst, "user.asyncopy.journal")  # as if made again since
    untagged = run("copy", ceph.uri(name, "final"), str(dst), *proof)
    assert untagged.returncode == 2
    assert "carries no journal tag" in untagged.stderr


def test_a_manifest_of_another_volume_is_refused(
    ceph: Cluster, volume: tuple[str, bytes, bytes], tmp_path: Path
) -> None:
    """DST holds what the manifest says; but the manifest is of @final, not of @base."""
    name, _, final = volume
    dst, manifest = tmp_path / "dst.img", tmp_path / "final.manifest"
    copy_json(ceph.uri(name, "final"), str(dst), "--manifest", str(manifest))
    proof = ["--since", "base", "--since-manifest", str(manifest)]
    refused = run("copy", ceph.uri(name, "final"), str(dst), *proof)
    assert refused.returncode == 2
    assert f"taken from rbd:{ceph.pool}/{name}@final, not @base" in refused.stderr
    older = json.loads(manifest.read_text())
    del older["source"]  # as an older asyncopy wrote it: it cannot say
    manifest.write_text(json.dumps(older))
    unsaid = run("copy", ceph.uri(name, "final"), str(dst), *proof)
    assert unsaid.returncode == 2
    assert "does not say which volume" in unsaid.stderr
    assert dst.read_bytes() == final


def test_an_image_written_since_its_base_snapshot_is_refused(
    ceph: Cluster, volume: tuple[str, bytes, bytes]
) -> None:
    name, _, _ = volume
    dst = ceph.name("migrated")
    try:
        copy_json(ceph.uri(name, "base"), ceph.uri(dst), "--snapshot-destination")
        with ceph.image(dst) as image:
            image.write(b"written meanwhile", 9 * MiB)
        refused = run("copy", ceph.uri(name, "final"), ceph.uri(dst), "--since", "base")
        assert refused.returncode == 2
        assert "was written since its snapshot base" in refused.stderr
    finally:
        remove(ceph, dst)


def test_a_base_snapshot_re_made_on_the_source_is_refused(
    ceph: Cluster, volume: tuple[str, bytes, bytes]
) -> None:
    """The destination's @base notes which snapshot it holds (cluster, image, snapshot id):
    a source @base deleted and taken again, over other bytes, no longer matches it."""
    name, _, _ = volume
    dst = ceph.name("migrated")
    try:
        copy_json(ceph.uri(name, "base"), ceph.uri(dst), "--snapshot-destination")
        with ceph.image(name) as image:
            image.remove_snap("base")
            image.create_snap("base")  # now holds @final's bytes
        refused = run("copy", ceph.uri(name, "final"), ceph.uri(dst), "--since", "base")
        assert refused.returncode == 2
        assert "holds another snapshot's bytes" in refused.stderr
    finally:
        remove(ceph, dst)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{file}", "{dst}", "--since", "base"], "the source must be an rbd: image"),
        (["{final}", "{dst}", "--since", "base", "--target-is-zero"], "not zeros"),
        (["{final}", "{dst}", "--since", "base", "--journal", "{j}"], "cannot be journaled"),
        (["{final}", "{dst}", "--since", "base", "--manifest", "{j}"], "needs --verify"),
        (["{final}", "{dst}", "--snapshot-destination"], "an rbd: DST"),
        (["{final}", "{dst}", "--since-manifest", "{j}"], "goes with --since"),
        (["{final}", "{missing}", "--since", "base"], "no such file"),
    ],
)
def test_bad_incremental_input_is_one_line_and_nothing_written(
    ceph: Cluster,
    volume: tuple[str, bytes, bytes],
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    name, _, _ = volume
    dst = tmp_path / "dst.img"
    dst.write_bytes(b"\x55" * SIZE)
    src_file = tmp_path / "src.img"
    src_file.write_bytes(bytes(SIZE))
    names = {
        "file": src_file,
        "final": ceph.uri(name, "final"),
        "dst": dst,
        "j": tmp_path / "j",
        "missing": tmp_path / "missing.img",
    }
    refused = run("copy", *(arg.format(**names) for arg in args))
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert message in refused.stderr
    assert dst.read_bytes() == b"\x55" * SIZE
    assert not (tmp_path / "missing.img").exists()
