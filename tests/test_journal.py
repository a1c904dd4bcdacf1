"""Resumable copies: a journal of the work on the destination, a copy killed (SIGKILL) at
several points and resumed, and every refusal to resume onto or from something else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncopy.core.endpoint import endpoint_of
from asyncopy.core.journal import Header, Record, create, new_tag, open_existing, reserve
from asyncopy.errors import UsageError
from asyncopy.testing import MemoryVolume
from tests.cephtools import Cluster
from tests.conftest import MakeLoop, MakeLun, MiB, write_pattern

SIZE = 128 * MiB
CHUNK = 4 * MiB
CHUNKS = SIZE // CHUNK
DEPTH = 8  # the default: chunks in flight, and chunks done before a journal commit
# Every fifth chunk a hole (zero runs in the journal), the rest data; a copy takes ~3 s.
LAYOUT = [(i * CHUNK, CHUNK) for i in range(CHUNKS) if i % 5]
RATE = "32M"
ASYNCOPY = (sys.executable, "-m", "asyncopy")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ASYNCOPY, *args], capture_output=True, text=True, timeout=120)


def journaled(path: Path) -> int:
    """Chunks a journal shows done, read as a resumed copy reads it (whole lines only)."""
    if not path.exists():
        return 0
    lines = path.read_bytes().split(b"\n")[1:-1]  # no header, no cut-short last line
    return sum(int(line.split()[1]) for line in lines)


def started(journal: Path) -> bool:
    """The journal's header is written: the copy has opened both ends."""
    return journal.exists() and b"\n" in journal.read_bytes()


def copy_killed(src: str, dst: str, journal: Path, after: int) -> int:
    """Start a journaled copy, SIGKILL it once the journal shows ``after`` chunks; the chunks
    it shows then."""
    child = subprocess.Popen(
        [*ASYNCOPY, "copy", src, dst, "--journal", str(journal), "--rate-limit", RATE],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not started(journal) or journaled(journal) < after:
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "the copy made no progress"
        time.sleep(0.02)
    child.kill()
    child.communicate()
    return journaled(journal)


def chunks_differing(a: bytes, b: bytes) -> int:
    return sum(a[i : i + CHUNK] != b[i : i + CHUNK] for i in range(0, len(a), CHUNK))


def resumed(src: str, dst: str, journal: Path, *extra: str) -> dict[str, int]:
    done = run("copy", src, dst, "--resume", str(journal), "--json", "--verify", *extra)
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    assert result["verified"]
    return result


def check_redone(result: dict[str, int], shown: int, unfinished: int) -> None:
    """The resumed copy took the journal's chunks as done and redid only the rest: no more
    than what was unfinished at the kill, the chunks in flight and those awaiting a commit."""
    assert result["bytes_unchanged"] == shown * CHUNK
    redone = SIZE - result["bytes_unchanged"]
    moved = result["bytes_written"] + result["bytes_zeroed"] + result["bytes_skipped"]
    assert moved == redone
    assert result["bytes_read"] <= redone
    assert redone <= (unfinished + 2 * DEPTH) * CHUNK


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "src.img"
    return path, write_pattern(path, SIZE, LAYOUT, seed=3)


@pytest.mark.parametrize("after", [1, CHUNKS // 2, CHUNKS * 3 // 4])
def test_a_killed_file_copy_resumes_where_its_journal_ends(
    tmp_path: Path, source: tuple[Path, bytes], after: int
) -> None:
    src, content = source
    dst, journal = tmp_path / "dst.img", tmp_path / "copy.journal"
    shown = copy_killed(str(src), str(dst), journal, after)
    assert shown < CHUNKS, "the copy ended before it was killed"
    assert dst.exists()  # a destination the copy created is kept for the resumption
    unfinished = chunks_differing(dst.read_bytes(), content)
    result = resumed(str(src), str(dst), journal)
    assert dst.read_bytes() == content
    check_redone(result, shown, unfinished)
    again = run("copy", str(src), str(dst), "--resume", str(journal), "--json")
    assert json.loads(again.stdout)["bytes_unchanged"] == SIZE  # done: nothing to redo


def test_a_kill_before_the_first_commit_redoes_everything(
    tmp_path: Path, source: tuple[Path, bytes]
) -> None:
    src, content = source
    dst, journal = tmp_path / "dst.img", tmp_path / "copy.journal"
    shown = copy_killed(str(src), str(dst), journal, 0)
    result = resumed(str(src), str(dst), journal)
    assert dst.read_bytes() == content
    assert result["bytes_unchanged"] == shown * CHUNK


@pytest.mark.parametrize("kind", ["loop", "iscsi", "rbd"])
def test_a_killed_copy_onto_a_device_lun_or_image_resumes(
    tmp_path: Path,
    source: tuple[Path, bytes],
    make_loop: MakeLoop,
    make_lun: MakeLun,
    ceph: Cluster,
    kind: str,
) -> None:
    src, content = source
    journal = tmp_path / "copy.journal"
    dirt = os.urandom(SIZE)  # an existing destination is not known to read zeros
    name = ceph.name()
    if kind == "loop":
        dst, backing = make_loop(SIZE, fill=dirt)

        def now() -> bytes:
            return backing.read_bytes()
    elif kind == "iscsi":
        lun = make_lun(SIZE, fill=dirt)
        dst = lun.url

        def now() -> bytes:
            return Path(lun.backing).read_bytes()
    else:
        dst = ceph.uri(name)  # created by the copy, kept when it is killed

        def now() -> bytes:
            return ceph.read(name)

    try:
        shown = copy_killed(str(src), dst, journal, CHUNKS // 2)
        if kind == "rbd":
            wait_for_no_watchers(ceph, name)
        unfinished = chunks_differing(now(), content)
        result = resumed(str(src), dst, journal)
        assert now() == content
        check_redone(result, shown, unfinished)
    finally:
        if kind == "rbd" and ceph.exists(name):
            remove_image(ceph, name)


def wait_for_no_watchers(ceph: Cluster, name: str) -> None:
    """A killed client's watch stays until the OSD times it out (osd_client_watch_timeout,
    30 s): until then the image is in use, and a resumption is refused as any other copy."""
    deadline = time.monotonic() + 60
    while ceph.watchers(name):
        assert time.monotonic() < deadline
        time.sleep(1)


def remove_image(ceph: Cluster, name: str) -> None:
    subprocess.run(["rbd", "-c", ceph.conf, "rm", f"{ceph.pool}/{name}"], capture_output=True)


def test_a_copy_from_a_snapshot_resumes_and_a_head_needs_trust(
    tmp_path: Path, ceph: Cluster
) -> None:
    name = ceph.name()
    content = ceph.create(name, SIZE, LAYOUT, seed=4)
    try:
        with ceph.image(name) as image:
            image.create_snap("base")
        journal, dst = tmp_path / "snap.journal", tmp_path / "dst.img"
        shown = copy_killed(ceph.uri(name, "base"), str(dst), journal, CHUNKS // 2)
        result = resumed(ceph.uri(name, "base"), str(dst), journal)
        assert dst.read_bytes() == content
        assert result["bytes_unchanged"] == shown * CHUNK

        head_journal, head_dst = tmp_path / "head.journal", tmp_path / "head.img"
        copy_killed(ceph.uri(name), str(head_dst), head_journal, CHUNKS // 2)
        wait_for_no_watchers(ceph, name)
        refused = run("copy", ceph.uri(name), str(head_dst), "--resume", str(head_journal))
        assert refused.returncode == 2
        assert "may have been written since" in refused.stderr
        assert "--trust-source" in refused.stderr
        resumed(ceph.uri(name), str(head_dst), head_journal, "--trust-source")
        assert head_dst.read_bytes() == content
    finally:
        with ceph.image(name) as image:
            image.remove_snap("base")
        remove_image(ceph, name)


@pytest.fixture
def interrupted(tmp_path: Path, source: tuple[Path, bytes]) -> tuple[Path, Path, Path]:
    """A copy killed halfway: (source, destination, journal)."""
    src, _ = source
    dst, journal = tmp_path / "dst.img", tmp_path / "copy.journal"
    copy_killed(str(src), str(dst), journal, CHUNKS // 2)
    return src, dst, journal


def test_a_changed_source_is_refused(interrupted: tuple[Path, Path, Path]) -> None:
    src, dst, journal = interrupted
    before = dst.read_bytes()
    with open(src, "r+b") as out:
        out.write(b"changed")
    refused = run("copy", str(src), str(dst), "--resume", str(journal))
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"asyncopy: error: journal {journal}: {src} changed since")
    assert dst.read_bytes() == before


def test_another_source_or_destination_is_refused(
    tmp_path: Path, interrupted: tuple[Path, Path, Path]
) -> None:
    src, dst, journal = interrupted
    other = tmp_path / "other.img"
    other.write_bytes(src.read_bytes())
    before = dst.read_bytes()
    refused = run("copy", str(other), str(dst), "--resume", str(journal))
    assert refused.returncode == 2
    assert f"kept for another source ({src})" in refused.stderr
    copy_of_dst = tmp_path / "dst-copy.img"
    copy_of_dst.write_bytes(before)
    refused = run("copy", str(src), str(copy_of_dst), "--resume", str(journal))
    assert refused.returncode == 2
    assert f"kept for another destination ({dst})" in refused.stderr
    missing = run("copy", str(src), str(tmp_path / "gone.img"), "--resume", str(journal))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    assert not (tmp_path / "gone.img").exists()
    assert dst.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--journal", "{journal}"], "exists already (--resume"),
        (["--resume", "{nowhere}"], "cannot open"),
        (["--resume", "{garbage}"], "not an asyncopy journal"),
        (["--journal", "{src}"], "is the source or the destination"),
        (["--journal", "{fresh}", "--resume", "{journal}"], "give one of them"),
        (["--trust-source"], "--trust-source goes with --resume"),
        (["--resume", "{journal}", "--manifest", "{fresh}"], "needs --verify"),
    ],
)
def test_bad_journal_input_is_one_line_and_nothing_written(
    tmp_path: Path, interrupted: tuple[Path, Path, Path], args: list[str], message: str
) -> None:
    src, dst, journal = interrupted
    garbage = tmp_path / "garbage"
    garbage.write_text("{}\n0 1 z\n")
    before = dst.read_bytes()
    names = {
        "journal": journal,
        "nowhere": tmp_path / "nowhere",
        "garbage": garbage,
        "src": src,
        "fresh": tmp_path / "fresh.journal",
    }
    refused = run("copy", str(src), str(dst), *(arg.format(**names) for arg in args))
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert message in refused.stderr
    assert dst.read_bytes() == before


def test_a_line_cut_short_by_a_crash_is_ignored_and_cut_off(tmp_path: Path) -> None:
    volume = MemoryVolume(bytes(3 * CHUNK), name="a")
    header = Header(3 * CHUNK, CHUNK, endpoint_of(volume), endpoint_of(volume), new_tag(), False)
    path = tmp_path / "j"
    journal = create(path, header, reserve(path))
    journal.append([Record(0, 1, bytes(range(16))), Record(1, 1, None)])
    journal.close()
    whole = path.read_bytes()
    with open(path, "ab") as out:
        out.write(b"2 1 0011")  # a record cut short
    again = open_existing(path)
    assert list(again.done) == [1, 1, 0]
    assert path.read_bytes() == whole
    again.close()
    with open(path, "ab") as out:
        out.write(b"9 1 z\n")  # past the end
    with pytest.raises(UsageError, match="line 4 is not a record"):
        open_existing(path)


def test_a_journal_that_cannot_be_made_leaves_nothing(
    tmp_path: Path, source: tuple[Path, bytes]
) -> None:
    src, _ = source
    dst = tmp_path / "dst.img"
    refused = run("copy", str(src), str(dst), "--journal", str(tmp_path / "no" / "j"))
    assert refused.returncode == 2
    assert "cannot create" in refused.stderr
    assert not dst.exists()


def test_a_device_source_cannot_tell_writes_and_needs_trust(
    tmp_path: Path, make_loop: MakeLoop
) -> None:
    device, _ = make_loop(16 * MiB, fill=os.urandom(16 * MiB))
    dst, journal = tmp_path / "dst.img", tmp_path / "copy.journal"
    assert run("copy", device, str(dst), "--journal", str(journal)).returncode == 0
    refused = run("copy", device, str(dst), "--resume", str(journal))
    assert refused.returncode == 2
    assert "a device or a LUN cannot tell" in refused.stderr
    trusted = run("copy", device, str(dst), "--resume", str(journal), "--trust-source", "--json")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["bytes_unchanged"] == 16 * MiB


# -- a destination changed between the kill and the resume ------------------------------------


def resumed_plain(src: Path, dst: Path, journal: Path) -> tuple[dict[str, int], str]:
    """Resume without --verify: what the destination holds must be right all the same."""
    done = run("copy", str(src), str(dst), "--resume", str(journal), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_chunks_written_since_by_another_process_are_copied_again(
    source: tuple[Path, bytes], interrupted: tuple[Path, Path, Path]
) -> None:
    src, dst, journal = interrupted
    content = source[1]
    shown = journaled(journal)
    assert shown > 1
    with open(dst, "r+b") as out:  # chunk 1 holds data in the source, and is journaled
        out.seek(CHUNK + 4096)
        out.write(b"another writer")
    result, warned = resumed_plain(src, dst, journal)
    assert dst.read_bytes() == content
    assert "1 chunk(s) the journal shows done differ" in warned
    assert result["bytes_unchanged"] == (shown - 1) * CHUNK  # chunk 1 was redone


def test_an_emptied_and_regrown_destination_is_copied_again(
    source: tuple[Path, bytes], interrupted: tuple[Path, Path, Path]
) -> None:
    src, dst, journal = interrupted
    os.truncate(dst, 0)
    os.truncate(dst, SIZE)
    resumed_plain(src, dst, journal)
    assert dst.read_bytes() == source[1]


def test_a_destination_another_journaled_copy_wrote_since_is_refused(
    tmp_path: Path, interrupted: tuple[Path, Path, Path]
) -> None:
    """The same file, written whole by another copy since: it carries that copy's tag (a
    file deleted and made again, on the same inode or not, carries none)."""
    src, dst, journal = interrupted
    other = tmp_path / "other.img"
    other.write_bytes(os.urandom(SIZE))
    done = run("copy", str(other), str(dst), "--journal", str(tmp_path / "other.journal"))
    assert done.returncode == 0, done.stderr
    refused = run("copy", str(src), str(dst), "--resume", str(journal))
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "carries another journal tag" in refused.stderr
    assert "--trust-destination" in refused.stderr
    assert dst.read_bytes() == other.read_bytes()


def test_trusting_the_destination_skips_reading_it_back(
    source: tuple[Path, bytes], interrupted: tuple[Path, Path, Path]
) -> None:
    src, dst, journal = interrupted
    os.removexattr(dst, "user.asyncopy.journal")
    refused = run("copy", str(src), str(dst), "--resume", str(journal))
    assert refused.returncode == 2
    assert "carries no journal tag" in refused.stderr
    done = run("copy", str(src), str(dst), "--resume", str(journal), "--trust-destination")
    assert done.returncode == 0, done.stderr
    assert dst.read_bytes() == source[1]
    alone = run("copy", str(src), str(dst), "--trust-destination")
    assert alone.returncode == 2
    assert "goes with --resume or --since" in alone.stderr


def test_a_journal_one_copy_appends_to_is_refused_to_another(
    source: tuple[Path, bytes], interrupted: tuple[Path, Path, Path]
) -> None:
    src, dst, journal = interrupted
    argv = [*ASYNCOPY, "copy", str(src), str(dst), "--resume", str(journal)]
    first = subprocess.Popen([*argv, "--rate-limit", RATE], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not held(journal):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = run("copy", str(src), str(dst), "--resume", str(journal))
        assert second.returncode == 2
        assert second.stderr == f"asyncopy: error: journal {journal}: in use by another copy\n"
        _, errors = first.communicate(timeout=120)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, errors
    assert dst.read_bytes() == source[1]


def held(path: Path) -> bool:
    """Whether a process holds a lock on ``path`` (the kernel's list: asking by taking one
    could turn the holder away)."""
    inode = f":{path.stat().st_ino} "
    return any(inode in line for line in Path("/proc/locks").read_text().splitlines())
