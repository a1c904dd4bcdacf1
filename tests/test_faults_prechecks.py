"""Bad input found before the first byte is written, and every count bounded before it is
allocated: what a copy refuses up front, and what it writes (a manifest, a journal) is what
``verify`` and ``--resume`` then accept.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path

import pytest

from asyncopy.core.limits import MAX_CHUNK_SIZE, MAX_MANIFEST_CHUNKS
from tests.cephtools import Cluster
from tests.conftest import MakeLoop, MiB, write_pattern
from tests.test_faults import ASYNCOPY, one_error, run
from tests.test_incremental import remove

# -- item 5: every check before the first write ----------------------------------------------


def test_a_chunk_size_past_the_limit_is_refused_before_an_existing_destination_is_written(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 8 * MiB, [(0, 8 * MiB)], seed=1)
    before = write_pattern(dst, 8 * MiB, [(0, 8 * MiB)], seed=2)
    done = run("copy", "--chunk-size", "2G", "--max-inflight", "2G", "--verify", str(src), str(dst))
    one_error(done, 2, "chunk size 2147483648", str(MAX_CHUNK_SIZE))
    assert dst.read_bytes() == before


def test_the_largest_chunk_size_writes_a_manifest_that_verifies_and_one_more_is_refused(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, 4 * MiB, [(0, MiB), (3 * MiB, 4096)])
    largest = str(MAX_CHUNK_SIZE)
    manifest = tmp_path / "m.json"
    copied = run(
        "copy", "--chunk-size", largest, "--max-inflight", largest, "--manifest", str(manifest),
        str(src), str(tmp_path / "dst.img"),
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert json.loads(manifest.read_text())["chunk_size"] == MAX_CHUNK_SIZE
    checked = run("verify", "--depth", "1", "--manifest", str(manifest), str(tmp_path / "dst.img"))
    assert (checked.returncode, checked.stdout.strip()) == (0, "identical"), checked.stderr

    past = str(MAX_CHUNK_SIZE + 4096)
    refused = run(
        "copy", "--chunk-size", past, "--max-inflight", past, "--manifest", str(tmp_path / "n"),
        str(src), str(tmp_path / "other.img"),
    )  # fmt: skip
    one_error(refused, 2, "chunk size")
    assert not (tmp_path / "other.img").exists()
    assert not (tmp_path / "n").exists()


def test_a_zero_byte_copy_with_a_journal_resumes(tmp_path: Path) -> None:
    src, dst, journal = tmp_path / "empty.img", tmp_path / "dst.img", tmp_path / "journal"
    src.touch()
    first = run("copy", "--journal", str(journal), str(src), str(dst))
    assert first.returncode == 0, first.stderr
    again = run("copy", "--resume", str(journal), str(src), str(dst))
    assert again.returncode == 0, again.stderr
    assert dst.stat().st_size == 0


def test_a_source_of_more_chunks_than_a_manifest_holds_is_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "huge.img", tmp_path / "dst.img"
    with open(src, "wb") as out:
        out.truncate(MAX_MANIFEST_CHUNKS * 4096 + 4096)
    manifest = tmp_path / "manifest"
    done = run(
        "copy", "--chunk-size", "4K", "--manifest", str(manifest), str(src), str(dst), timeout=20
    )
    one_error(done, 2, str(src), f"more than a manifest's {MAX_MANIFEST_CHUNKS} chunks")
    assert not dst.exists()
    assert not manifest.exists()


def test_a_chunk_size_off_the_source_block_grid_makes_no_destination_nor_journal(
    tmp_path: Path, make_loop: MakeLoop
) -> None:
    device, _ = make_loop(MiB, sector_size=4096)
    dst, journal = tmp_path / "dst.img", tmp_path / "journal"
    done = run(
        "copy", "--journal", str(journal), "--chunk-size", "6K", "--sparse-size", "0", device,
        str(dst),
    )  # fmt: skip
    one_error(done, 2, "chunk size 6144", "block size 4096", device)
    assert not dst.exists()
    assert not journal.exists()


# -- item 11: every count bounded before it is allocated -------------------------------------


def measured(
    *args: str, address_space: int | None = None
) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """A run of ``asyncopy ARGS`` under GNU time (and an address-space limit, if given): the
    run with its own stderr lines only, its peak RSS in KiB, its wall time in seconds."""

    def limit() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *ASYNCOPY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    seconds = time.monotonic() - started
    *lines, peak = done.stderr.splitlines()
    done.stderr = "".join(f"{line}\n" for line in lines if not line.startswith("Command exited"))
    return done, int(peak), seconds


SMALL_KIB = 150 * 1024  # a run that allocates nothing large stays near 30 MiB


def journal_header(size: int, chunk_size: int) -> str:
    endpoint: dict[str, object] = {"name": "x", "identities": [], "version": None}
    header = {
        "format": "asyncopy-journal",
        "version": 2,
        "algorithm": "xxh3-128",
        "size": size,
        "chunk_size": chunk_size,
        "source": endpoint,
        "destination": endpoint,
        "tag": "0" * 32,
        "tagged": False,
    }
    return json.dumps(header) + "\n"


@pytest.mark.parametrize(
    ("size", "chunk_size", "message"),
    [
        (1 << 62, 4 * MiB, f"size {1 << 62} is not between 0 and"),
        (1 << 60, 4096, "no such file"),  # 2^48 chunks: taken without a table of them
    ],
)
def test_a_journal_header_past_the_limits_is_one_line_fast_and_small(
    tmp_path: Path, size: int, chunk_size: int, message: str
) -> None:
    src, journal = tmp_path / "src.img", tmp_path / "journal"
    write_pattern(src, MiB, [(0, MiB)])
    journal.write_text(journal_header(size, chunk_size))
    done, peak, seconds = measured("copy", "--resume", str(journal), str(src), str(tmp_path / "d"))
    one_error(done, 2, message)
    assert peak < SMALL_KIB
    assert seconds < 5
    assert not (tmp_path / "d").exists()


def test_verify_with_a_depth_past_the_limit_is_one_line_fast_and_small(tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    write_pattern(a, MiB, [(0, MiB)])
    write_pattern(b, MiB, [(0, MiB)])
    done, peak, seconds = measured("verify", "--depth", "100000", str(a), str(b))
    one_error(done, 2, "depth 100000 is more than 1024")
    assert peak < SMALL_KIB
    assert seconds < 5


@pytest.mark.parametrize("command", ["copy", "verify"])
def test_a_ceph_timeout_under_a_second_is_bad_input(tmp_path: Path, command: str) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, MiB, [(0, MiB)])
    if command == "verify":
        write_pattern(dst, MiB, [(0, MiB)])
    before = dst.exists()
    done = run(command, "--ceph-timeout", "0.001", str(src), str(dst))
    one_error(done, 2, "--ceph-timeout must be at least 1")
    assert dst.exists() == before


# 4 buffers of 1 GiB do not fit in 3 GiB of address space; 4 of 4 KiB do, with all the rest
BIG_CHUNKS = ("--chunk-size", "1G", "--depth", "4", "--max-inflight", "4G", "--verify")
ADDRESS_SPACE = 3 << 30


def test_a_one_gib_chunk_copy_of_a_small_file_is_fast_and_small(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    content = write_pattern(src, 4096, [(0, 4096)])
    done, peak, seconds = measured(
        "copy", *BIG_CHUNKS, str(src), str(dst), address_space=ADDRESS_SPACE
    )
    assert done.returncode == 0, done.stderr
    assert dst.read_bytes() == content
    assert seconds < 5
    assert peak < SMALL_KIB
    checked, _, _ = measured(
        "verify", "--chunk-size", "1G", str(src), str(dst), address_space=ADDRESS_SPACE
    )
    assert (checked.returncode, checked.stdout.strip()) == (0, "identical"), checked.stderr


def test_a_one_gib_chunk_copy_of_a_small_image_is_fast_and_small(
    tmp_path: Path, ceph: Cluster
) -> None:
    src, dst, back = ceph.name("small"), ceph.name("copy"), tmp_path / "back.img"
    content = ceph.create(src, 4096, [(0, 4096)])
    try:
        for there, back_again in ((ceph.uri(src), ceph.uri(dst)), (ceph.uri(dst), str(back))):
            done, peak, seconds = measured(
                "copy", *BIG_CHUNKS, there, back_again, address_space=ADDRESS_SPACE
            )
            assert done.returncode == 0, done.stderr
            assert seconds < 5
            assert peak < SMALL_KIB
        assert back.read_bytes() == content
    finally:
        remove(ceph, src)
        remove(ceph, dst)


# -- item 13: --snapshot-destination onto an image that has the name already -----------------


def test_a_destination_with_the_snapshot_name_taken_is_refused_before_writing(
    ceph: Cluster,
) -> None:
    src, dst = ceph.name("volume"), ceph.name("migrated")
    try:
        ceph.create(src, 8 * MiB, [(0, 8 * MiB)], seed=1)
        with ceph.image(src) as image:
            image.create_snap("base")
        before = ceph.create(dst, 8 * MiB, [(0, 8 * MiB)], seed=2)
        with ceph.image(dst) as image:
            image.create_snap("base")
        done = run("copy", "--snapshot-destination", ceph.uri(src, "base"), ceph.uri(dst))
        one_error(done, 2, f"rbd:{ceph.pool}/{dst}", "has a snapshot @base already")
        assert ceph.read(dst) == before
        assert ceph.watchers(dst) == []
    finally:
        remove(ceph, src)
        remove(ceph, dst)
