"""The asyncopy command as an operator runs it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import MakeLoop, MiB, write_pattern


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncopy", *args], capture_output=True, text=True, timeout=120
    )


def test_copy_prints_one_json_object(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    image = write_pattern(src, 8 * MiB, [(0, 4096), (6 * MiB, 1 * MiB)])
    done = run("copy", f"file:{src}", str(dst), "--verify", "--json", "--chunk-size", "1M")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes_total"] == 8 * MiB
    assert report["bytes_read"] == report["bytes_written"] == 4096 + 1 * MiB
    assert report["bytes_skipped"] == 8 * MiB - report["bytes_written"]
    assert report["bytes_zeroed"] == 0
    assert report["verified"] is True
    assert report["seconds"] > 0
    assert dst.read_bytes() == image


def test_verify_exit_codes(tmp_path: Path) -> None:
    a, b, manifest = tmp_path / "a.img", tmp_path / "b.img", tmp_path / "m.json"
    write_pattern(a, 4 * MiB, [(0, 4 * MiB)])
    assert run("copy", str(a), str(b), "--manifest", str(manifest)).returncode == 0
    assert (run("verify", str(a), str(b)).returncode, run("verify", str(a), str(b)).stdout) == (
        0,
        "identical\n",
    )
    assert run("verify", "--manifest", str(manifest), str(b)).returncode == 0
    with open(b, "r+b") as out:
        out.write(b"?")
    different = run("verify", str(a), str(b), "--json")
    assert different.returncode == 1
    assert json.loads(different.stdout)["differing"] == [{"offset": 0, "length": 4 * MiB}]
    assert run("verify", "--manifest", str(manifest), str(b)).returncode == 1
    assert run("verify", str(a), str(tmp_path / "missing.img")).returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["copy", "{missing}", "{dst}"], "no such file"),
        (["copy", "{src}", "nbd:thing"], "unknown scheme 'nbd'"),
        (["copy", "{src}", "{dst}", "--chunk-size", "4X"], "bad chunk size"),
        (["copy", "{src}", "{dst}", "--sparse-size", "3000"], "must divide the chunk size"),
        (["copy", "{src}", "{small}"], "too small"),
        (["copy", "{src}", "{dst}", "--manifest", "{missing}/m.json"], "cannot write in"),
        (["copy", "{src}"], "the following arguments are required: dst"),
        (["verify", "{src}"], "verify takes A B"),
        (["copy", "{src}", "{dst}", "--rate-limit", "fast"], "bad rate limit 'fast'"),
        (["copy", "{src}", "{dst}", "--rate-limit", "0/s"], "--rate-limit must be more than 0"),
        (["copy", "{src}", "{dst}", "--progress=pretty"], "--progress=pretty: expected one of"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, args: list[str], message: str
) -> None:
    src, small = tmp_path / "src.img", tmp_path / "small.img"
    write_pattern(src, 4 * MiB, [(0, 4096)])
    small.write_bytes(b"s" * 1000)
    names = {"src": src, "dst": tmp_path / "dst.img", "small": small, "missing": tmp_path / "no"}
    done = run(*(arg.format(**names) for arg in args))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("asyncopy: error: ")
    assert message in lines[0]
    assert not (tmp_path / "dst.img").exists()
    assert small.read_bytes() == b"s" * 1000


def test_copy_to_a_loop_device_with_4k_sectors(tmp_path: Path, make_loop: MakeLoop) -> None:
    src = tmp_path / "src.img"
    image = write_pattern(src, 3 * MiB + 512, [(0, 3 * MiB + 512)])
    device, backing = make_loop(4 * MiB, sector_size=4096)
    done = run("copy", str(src), device, "--verify", "--json")
    assert done.returncode == 0, done.stderr
    assert backing.read_bytes()[: len(image)] == image
    assert run("verify", str(src), device).returncode == 0  # the rest of the device reads zeros


def test_ctrl_c_is_never_lost_even_when_the_job_then_ends() -> None:
    """A Ctrl-C that lands in a shielded part of a job still interrupts once the job ends."""
    script = (
        "import os, signal, threading, trio\n"
        "from asyncopy.api import run_interruptibly\n"
        "async def job():\n"
        "    with trio.CancelScope(shield=True):\n"
        "        await trio.sleep(1)\n"
        "    return 'returned'\n"
        "threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "try:\n"
        "    print(run_interruptibly(job))\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.stdout == "interrupted\n", done.stderr


def test_rate_limit_holds_a_cli_copy_to_its_rate(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    content = write_pattern(src, 16 * MiB, [(0, 16 * MiB)])
    started = time.monotonic()
    done = run("copy", str(src), str(dst), "--rate-limit", "8M/s", "--json")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert dst.read_bytes() == content
    assert took >= 0.9 * 16 / 8  # 16 MiB read at 8 MiB/s: 2 s, within 10%
    fast = run("copy", str(src), str(tmp_path / "again.img"), "--rate-limit", "1G")
    assert fast.returncode == 0, fast.stderr


def test_progress_json_is_one_object_per_line_ending_done(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 16 * MiB, [(0, 8 * MiB)])
    done = run("copy", str(src), str(dst), "--progress=json", "--rate-limit", "16M", "--json")
    assert done.returncode == 0, done.stderr
    reports = [json.loads(line)["progress"] for line in done.stderr.splitlines()]
    assert len(reports) >= 2
    assert [r["done"] for r in reports] == sorted(r["done"] for r in reports)
    assert reports[-1]["done"] == reports[-1]["total"] == 16 * MiB
    assert reports[-1]["eta"] == 0
    assert any(r["rate"] > 0 and r["eta"] is not None for r in reports[:-1])
    assert json.loads(done.stdout)["bytes_total"] == 16 * MiB  # stdout keeps the result


def test_progress_off_a_terminal_is_plain_lines_without_redraws(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 8 * MiB, [(0, 8 * MiB)])
    done = run("copy", "--progress", str(src), str(dst))  # a bare flag takes no SRC
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("asyncopy: 100.0% of 8.0 MiB, ")
    assert lines[-1].endswith("/s, 0 s left")
    assert not any(line.startswith("asyncopy: 100.0%") for line in lines[:-1])  # said once


def test_progress_on_a_terminal_is_a_bar_with_rate_and_time_left(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    write_pattern(src, 16 * MiB, [(0, 16 * MiB)])
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with subprocess.Popen(
        [sys.executable, "-m", "asyncopy", "copy", str(src), str(dst), "--progress"],
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    ) as child:
        os.close(terminal)
        shown = b""
        while True:
            try:
                piece = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not piece:
                break
            shown += piece
        out, _ = child.communicate(timeout=60)
    os.close(controller)
    assert child.returncode == 0
    assert out.startswith("copied 16.0 MiB")
    text = shown.decode()
    assert "\r" in text  # redrawn in place
    assert "100.0% |" in text
    assert "| 16.0 MiB of 16.0 MiB, " in text
    assert "16.0 MiB of 16.0 MiB" in text
    assert "0 s left" in text
