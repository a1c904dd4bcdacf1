"""Writers the copy does not own: two copies onto one volume, and a source written under a
copy or a comparison. Real processes of ``python -m asyncopy`` racing each other and real
writers (other processes, another Ceph client) against files, LUNs and images.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import MiB, write_pattern
from tests.test_faults import ASYNCOPY, TIMEOUT, one_error, run

SLOW = ("--rate-limit", "32M/s")  # 64 MiB: two seconds, time enough for the other one


def race(*commands: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
    """Start every command at once; each one's outcome, in order."""
    started = [
        subprocess.Popen(
            [*ASYNCOPY, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    done = []
    for process, command in zip(started, commands, strict=True):
        out, err = process.communicate(timeout=TIMEOUT)
        done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return done


# -- two copies onto one file ---------------------------------------------------------------


@pytest.mark.parametrize("existing", [True, False])
def test_two_copies_onto_one_file_one_is_refused(tmp_path: Path, existing: bool) -> None:
    sources = [tmp_path / "a.img", tmp_path / "b.img"]
    contents = [
        write_pattern(src, 64 * MiB, [(0, 64 * MiB)], seed=n) for n, src in enumerate(sources)
    ]
    dst = tmp_path / "dst.img"
    if existing:
        dst.write_bytes(b"\xee" * 64 * MiB)
    done = race(*(["copy", *SLOW, str(src), str(dst)] for src in sources))
    assert sorted(d.returncode for d in done) == [0, 2], [d.stderr for d in done]
    winner = 0 if done[0].returncode == 0 else 1
    one_error(done[1 - winner], 2, str(dst), "another copy")
    assert dst.read_bytes() == contents[winner]
    # the lock went with the winner: a third copy (the loser's source) goes through
    assert run("copy", str(sources[1 - winner]), str(dst)).returncode == 0
    assert dst.read_bytes() == contents[1 - winner]


def test_a_file_being_copied_cannot_be_written_by_another_copy(tmp_path: Path) -> None:
    src, other, dst = tmp_path / "src.img", tmp_path / "other.img", tmp_path / "dst.img"
    content = write_pattern(src, 64 * MiB, [(0, 64 * MiB)], seed=1)
    write_pattern(other, 64 * MiB, [(0, 64 * MiB)], seed=2)
    reader = subprocess.Popen(
        [*ASYNCOPY, "copy", *SLOW, "--verify", str(src), str(dst)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the reader has started (0.2-0.5 s) and has two seconds to go
    one_error(run("copy", str(other), str(src)), 2, str(src), "another copy")
    _, err = reader.communicate(timeout=TIMEOUT)
    assert reader.returncode == 0, err
    assert src.read_bytes() == content == dst.read_bytes()
