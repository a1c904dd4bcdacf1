"""Bad input found before the first byte is written, and every count bounded before it is
allocated: what a copy refuses up front, and what it writes (a manifest, a journal) is what
``verify`` and ``--resume`` then accept.
"""

from __future__ import annotations

import json
from pathlib import Path

from asyncopy.core.limits import MAX_CHUNK_SIZE, MAX_CHUNKS
from tests.conftest import MiB, write_pattern
from tests.test_faults import one_error, run

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


def test_a_source_of_more_chunks_than_a_journal_or_manifest_holds_is_refused(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "huge.img", tmp_path / "dst.img"
    with open(src, "wb") as out:
        out.truncate(MAX_CHUNKS * 4096 + 4096)
    journal = tmp_path / "journal"
    done = run(
        "copy", "--chunk-size", "4K", "--journal", str(journal), str(src), str(dst), timeout=20
    )
    one_error(done, 2, str(src), f"more than {MAX_CHUNKS} chunks")
    assert not dst.exists()
    assert not journal.exists()
