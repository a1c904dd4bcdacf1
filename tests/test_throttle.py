"""Rate limits and I/O priority: the engine's limiter, Cinder's shared throttle, ionice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from asyncopy import open_sink, open_source
from asyncopy.cinder import RateShare, child_request, copy_volume
from asyncopy.core.engine import CopyOptions, copy
from asyncopy.core.rate import RateLimit
from asyncopy.errors import UsageError
from asyncopy.process import io_priority
from tests.conftest import write_pattern

MiB = 1 << 20


class Throttle:
    """What copy_volume reads of a Cinder BlkioCgroup throttle: its limit."""

    def __init__(self, bps_limit: int) -> None:
        self.bps_limit = bps_limit


def test_a_throttled_copy_volume_takes_at_least_size_over_rate(tmp_path: Path) -> None:
    src = tmp_path / "src.img"
    content = write_pattern(src, 24 * MiB, [(0, 24 * MiB)])
    dst = tmp_path / "dst.img"
    started = time.monotonic()
    copy_volume(str(src), str(dst), 24, "1M", throttle=Throttle(12 * MiB))
    took = time.monotonic() - started
    assert dst.read_bytes() == content
    assert took >= 0.9 * 24 / 12  # 24 MiB at 12 MiB/s: 2 s, within 10%
    assert took < 30  # and it does end


async def test_the_limit_covers_the_verifying_re_read_and_not_the_holes(tmp_path: Path) -> None:
    src = tmp_path / "src.img"
    write_pattern(src, 64 * MiB, [(0, 8 * MiB), (40 * MiB, 8 * MiB)])  # 16 MiB of data
    started = time.monotonic()
    async with (
        open_source(str(src)) as source,
        open_sink(str(tmp_path / "dst.img"), size=source.size) as sink,
    ):
        result = await copy(source, sink, CopyOptions(verify=True), rate=RateLimit(16 * MiB))
    took = time.monotonic() - started
    assert result.verified
    assert took >= 0.9 * 32 / 16  # 16 MiB read twice at 16 MiB/s; the 48 MiB of holes free
    assert took < 0.9 * 64 / 16  # holes are not charged


def test_a_share_is_split_among_the_copies_running_under_it() -> None:
    share = RateShare(90)
    told: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    started: dict[str, int] = {}
    for name in "abc":
        share.join(told[name].append, partial(started.__setitem__, name))
    assert started == {"a": 90, "b": 45, "c": 30}
    assert told == {"a": [45, 30], "b": [30], "c": []}
    share.leave(told["b"].append)
    assert told == {"a": [45, 30, 45], "b": [30], "c": [45]}
    share.set_limit(0)
    assert told == {"a": [45, 30, 45, 0], "b": [30], "c": [45, 0]}


@pytest.mark.parametrize(
    ("options", "value"),
    [("-c3", 3 << 13), ("-c 2 -n 7", 2 << 13 | 7), ("--class idle", 3 << 13), ("-n2", 2 << 13 | 2)],
)
def test_ionice_options_become_an_io_priority(options: str, value: int) -> None:
    assert io_priority(options) == value


@pytest.mark.parametrize("options", ["-c9", "-x", "-c", "-n 12"])
def test_bad_ionice_options_are_refused(options: str) -> None:
    with pytest.raises(UsageError, match="ionice options"):
        io_priority(options)


def test_the_priority_is_set_for_the_process_and_its_later_threads() -> None:
    script = (
        "import threading\n"
        "from asyncopy.process import io_priority, io_priority_now, set_io_priority\n"
        "set_io_priority(io_priority('-c3'))\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(io_priority_now())); t.start(); t.join()\n"
        "print(io_priority_now(), seen[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [str(3 << 13), str(3 << 13)]


def test_the_copy_child_stops_when_its_caller_goes_away(tmp_path: Path) -> None:
    """The caller's end of the control channel closing mid-copy (cinder-volume killed, or
    stopping) ends the child at once with a clear error, not after the copy."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 64 * MiB, [(0, 64 * MiB)])
    dst.write_bytes(b"")
    os.truncate(dst, 64 * MiB)  # Cinder creates the destination
    request = child_request(
        {"uri": f"file:{src}"}, {"uri": f"file:{dst}"}, 64 * MiB, None, target_is_zero=False
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "asyncopy.cinder.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(json.dumps({**request, "rate": 4 * MiB}) + "\n")  # 16 s for the whole
    child.stdin.flush()
    assert "progress" in json.loads(child.stdout.readline())  # copying
    started = time.monotonic()
    child.stdin.close()
    assert child.wait(timeout=60) == 1
    assert child.stderr is not None
    errors = child.stderr.read()
    assert time.monotonic() - started < 8
    assert "copy abandoned" in errors
    child.stdout.close()
    child.stderr.close()
