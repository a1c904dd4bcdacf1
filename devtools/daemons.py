"""Processes the dev tooling starts and stops: each one recorded by pid and the kernel's start
time for that pid, so that stopping one never hits a process that reused its pid.

Every daemon runs in a session of its own (Ctrl-C in the caller's terminal does not reach
it), with its output in ``LOG_DIR/NAME.out``. ``stop`` signals the daemon's whole process
group when asked to: services that fork workers (gunicorn, cinder-volume's one child per
backend, oslo.privsep's helpers) leave none behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Daemon:
    """A process the tooling started: its pid and the kernel's start time for that pid."""

    name: str
    pid: int
    start_time: int


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a tool's state (``daemons``: what it started) atomically: whatever happens
    next, its ``down`` finds every daemon started so far."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(temporary, path)


def load_state(path: Path) -> tuple[dict[str, Any], list[Daemon]]:
    """A state file's fields but ``daemons``, and its daemons.

    Raises:
        FileNotFoundError: no state file there.
        ValueError: not a state file (bad JSON, no or bad ``daemons``).
    """
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        return raw, [Daemon(**item) for item in raw.pop("daemons")]
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(str(exc)) from exc


def spawn(
    name: str,
    args: Sequence[str],
    directory: Path,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    """Start ``args`` in ``directory``, its output appended to ``directory/log/NAME.out``."""
    (directory / "log").mkdir(exist_ok=True)
    log = open(directory / "log" / f"{name}.out", "ab")  # noqa: SIM115 (the child keeps it)
    with log:
        child = subprocess.Popen(
            args,
            cwd=directory,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[child.pid] = child
    return Daemon(name, child.pid, start_time(child.pid) or 0)


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks); None if there is no such pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[19])


def alive(daemon: Daemon) -> bool:
    return start_time(daemon.pid) == daemon.start_time


def stop(daemon: Daemon, grace: float = 5.0, *, group: bool = False) -> bool:
    """Stop one daemon if it is still the process that was started: SIGTERM, then SIGKILL
    after ``grace`` seconds; with ``group``, its whole process group. False if it lives on."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(daemon):
            break
        _signal(daemon, sig, group)
        end = time.monotonic() + grace
        while alive(daemon) and time.monotonic() < end:
            _reap(daemon.pid)
            time.sleep(0.05)
    _reap(daemon.pid)
    if group:
        _kill_group_leftovers(daemon.pid)
    return not alive(daemon)


def _signal(daemon: Daemon, sig: signal.Signals, group: bool) -> None:
    with suppress(ProcessLookupError):  # it exited after the check
        if group:
            os.killpg(daemon.pid, sig)
        else:
            os.kill(daemon.pid, sig)


def _kill_group_leftovers(pgid: int) -> None:
    """Workers of a stopped daemon that outlived it (its session leader's group)."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tails(directory: Path, lines: int = 5, names: Sequence[str] = ()) -> str:
    """The last lines of each daemon log under ``directory/log`` (only ``names`` if given),
    for an error message."""
    tails = []
    for log in sorted((directory / "log").glob("*")):
        if names and log.stem not in names:
            continue
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
        if text:
            tails.append(f"\n--- {log.name}:\n" + "\n".join(text))
    return "".join(tails)
