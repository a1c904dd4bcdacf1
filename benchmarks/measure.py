"""Timing, peak RSS, CPU, caches, verification and allocation of one run, and the machine.

A run is timed as an operator runs the command: process start included, page caches dropped
before, and a file or device output synced inside the timed span (asyncopy fsyncs on its own;
the peers do not). One wrapper measures the command: GNU time (``/usr/bin/time -f %M``) gives
its peak RSS (the child's own ``ru_maxrss`` would include the high-water mark of the large
Python parent it was forked from), and the CPU is the rusage the kernel adds up as that
wrapper is reaped (``RUSAGE_CHILDREN`` before and after: user + sys of the command, its threads
and every child it waited for, the sync of its output and GNU time's own millisecond), in
microseconds where GNU time's ``%U %S`` print hundredths, which a 64 MiB ``dd`` rounds to zero.
The dev stack's daemons' CPU over the same span comes from ``/proc/PID/stat`` (utime + stime,
in clock ticks). Every failure is a ``BenchError`` of one line naming the tool, the path and
the stderr.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from devtools.daemons import Daemon

GNU_TIME = "/usr/bin/time"
POISON = b"\xa5" * 4096  # stale bytes a copy must overwrite or zero
POISON_EVERY = 1 << 20
CLOCK_TICK = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat counts CPU time in these


class BenchError(Exception):
    """The benchmark cannot go on: one line for the operator."""


@dataclass(frozen=True, slots=True)
class Run:
    """One timed command: what ran, how long, its peak RSS and CPU, the destination's allocation.

    ``group`` is "main" for the path tables, else the extra or ceiling it belongs to;
    ``allocated`` and ``source_allocated`` are None where they mean nothing (LUNs, devices).
    ``cpu_seconds`` is the command's user + sys, ``daemon_cpu_seconds`` each dev stack
    daemon's over the same span (None in results written before they were measured).
    """

    group: str
    layout: str
    path: str
    tool: str
    role: str
    round: int
    size: int
    seconds: float
    peak_rss: int | None
    allocated: int | None = None
    source_allocated: int | None = None
    verified: bool | None = None  # None: nothing to verify (the ceiling)
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    daemon_cpu_seconds: dict[str, float] | None = None
    depth: int | None = None  # asyncopy copy --json: the most chunks its window let in flight

    @property
    def stack_cpu_seconds(self) -> float | None:
        """The command's CPU and the daemons' it made work: the whole stack's."""
        if self.cpu_seconds is None or self.daemon_cpu_seconds is None:
            return None
        return self.cpu_seconds + sum(self.daemon_cpu_seconds.values())


@dataclass(frozen=True, slots=True)
class Timing:
    seconds: float
    peak_rss: int
    cpu_seconds: float
    daemon_cpu_seconds: dict[str, float]
    stdout: str
    stderr: str


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def last_lines(text: str, count: int = 2) -> str:
    """The last lines that say something (a traceback's carets say nothing)."""
    lines = [line.strip() for line in text.splitlines() if line.strip(" ^~\t")]
    return " / ".join(lines[-count:]) or "no output"


def command_name(argv: Sequence[str]) -> str:
    """``asyncopy copy`` for ``python -m asyncopy copy ...``; ``rbd rm`` for ``rbd -c C rm``."""
    if len(argv) >= 4 and argv[1] == "-m":
        return f"{argv[2].rpartition('.')[2]} {argv[3]}"
    words = [word for word in argv[1:] if not word.startswith("-") and "/" not in word]
    return " ".join([os.path.basename(argv[0]), *words[:1]])


def run(argv: Sequence[str], *, what: str) -> str:
    """Run an untimed command (setup, checks); its stdout, or a BenchError naming ``what``."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BenchError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        detail = last_lines(done.stderr or done.stdout)
        raise BenchError(f"{what}: {command_name(argv)} exited {done.returncode}: {detail}")
    return done.stdout


def timed(
    argv: Sequence[str],
    *,
    what: str,
    sync: str | None = None,
    daemons: Sequence[Daemon] = (),
) -> Timing:
    """Drop caches, run ``argv`` under GNU time, sync ``sync``; seconds, peak RSS, the
    command's CPU and the CPU each of ``daemons`` spent meanwhile."""
    if not os.access(GNU_TIME, os.X_OK):
        raise BenchError(f"{GNU_TIME} is missing: install GNU time (scripts/ensure-debs time)")
    with tempfile.NamedTemporaryFile("r", prefix="asyncopy-bench-rss-") as rss:
        drop_caches()
        ticks_before = daemon_ticks(daemons)
        cpu_before = children_cpu()
        started = time.monotonic()
        done = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and sync is not None:
            run(["sync", sync], what=what)
        seconds = time.monotonic() - started
        cpu = round(children_cpu() - cpu_before, 6)  # microseconds, as rusage counts
        ticks_after = daemon_ticks(daemons)
        if done.returncode != 0:
            raise BenchError(
                f"{what}: exited {done.returncode}: {last_lines(done.stderr or done.stdout)}"
            )
        peak_kib = int(rss.read().split()[-1])
    spent = {name: (ticks_after[name] - ticks_before[name]) / CLOCK_TICK for name in ticks_after}
    return Timing(seconds, peak_kib * 1024, cpu, spent, done.stdout, done.stderr)


def children_cpu() -> float:
    """User + sys seconds of every child this process has reaped so far (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def daemon_ticks(daemons: Sequence[Daemon]) -> dict[str, int]:
    """User + sys clock ticks each daemon (all its threads) has spent since it started."""
    return {daemon.name: process_ticks(daemon) for daemon in daemons}


def process_ticks(daemon: Daemon) -> int:
    """utime + stime of ``/proc/PID/stat``; a BenchError if the daemon is gone."""
    try:
        raw = Path(f"/proc/{daemon.pid}/stat").read_text()
    except OSError:
        raw = ""
    fields = raw.rpartition(")")[2].split()  # after the command name, which may hold spaces
    if len(fields) < 20 or fields[0] == "Z" or int(fields[19]) != daemon.start_time:
        raise BenchError(f"{daemon.name} (pid {daemon.pid}) is gone: the dev stack died")
    return int(fields[11]) + int(fields[12])


def own_seconds(tool: str, timing: Timing, size: int) -> float:
    """The seconds a ceiling tool reports for its data alone (process start left out).

    ``rbd bench`` prints ``ops/sec`` (of its ``--io-size`` 4 MiB); ``dd`` prints ``copied, S s``.
    """
    if tool.startswith("rbd bench"):
        found = re.search(r"ops/sec:\s*([\d.]+)", timing.stdout)
        if found is not None and float(found.group(1)) > 0:
            return size / (4 << 20) / float(found.group(1))
    elif tool.startswith("dd"):
        found = re.search(r"copied, ([\d.]+) s", timing.stderr)
        if found is not None:
            return float(found.group(1))
    raise BenchError(
        f"{tool}: cannot read its rate from: {last_lines(timing.stdout + timing.stderr)}"
    )


def check_identical(reference: str, output: str, *, what: str) -> None:
    """``qemu-img compare``: a copy that differs from its source stops the benchmark."""
    argv = ["qemu-img", "compare", "-f", "raw", "-F", "raw", reference, output]
    _check(argv, "qemu-img compare", what=what, says_why="stdout")


def check_manifest(manifest: str, output: str, *, what: str) -> None:
    """``asyncopy verify --manifest``: reads only the output, against the source's digests."""
    argv = [sys.executable, "-m", "asyncopy", "verify", "--manifest", manifest, output]
    _check(argv, "asyncopy verify", what=what, says_why="stderr")


def _check(argv: list[str], tool: str, *, what: str, says_why: Literal["stdout", "stderr"]) -> None:
    """Run a checker: exit 1 (different) or any other failure stops the benchmark.

    ``says_why`` names the stream where the checker explains a difference; a Python
    traceback also exits 1, but says that the checker failed, not that the copy differs."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode == 1 and "Traceback (most recent call last)" not in done.stderr:
        why = done.stdout if says_why == "stdout" else done.stderr
        raise BenchError(
            f"{what}: the output differs from the source ({last_lines(why)}); "
            "a wrong copy is a failure, not a result"
        )
    if done.returncode != 0:
        raise BenchError(f"{what}: {tool} failed: {last_lines(done.stderr)}")


def rbd_allocated(conf: str, image: str) -> int:
    """Bytes allocated to an image by ``rbd du`` (exact with fast-diff)."""
    out = run(["rbd", "-c", conf, "du", "--format", "json", image], what=f"rbd du {image}")
    return int(json.loads(out)["images"][0]["used_size"])


def file_allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def poison(path: str, size: int) -> None:
    """Stale bytes every MiB of a device or LUN backing file: a copy that leaves any fails."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset in range(0, size, POISON_EVERY):
            os.pwrite(fd, POISON[: size - offset], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def version(argv: Sequence[str]) -> str:
    """The first line a ``--version`` prints; "not installed" if the command is missing."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0]


def package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """The machine and the versions of everything measured, for the report."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    debian = Path("/etc/debian_version")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "ram": f"{ram / (1 << 30):.1f} GiB",
        "kernel": platform.release(),
        "debian": debian.read_text().strip() if debian.exists() else "not Debian",
        "ceph": version(["ceph", "--version"]),
        "qemu-img": version(["qemu-img", "--version"]),
        "python": sys.version.split()[0],
        "asyncopy": package("asyncopy"),
        "cinder": package("cinder"),
        "os-brick": package("os-brick"),
    }
