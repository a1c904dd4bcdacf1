"""Loop devices over files, for tests, the demo and benchmarks (needs root and losetup)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asyncopy.errors import UsageError


@contextmanager
def loop_device(backing: Path, *, sector_size: int = 512, read_only: bool = False) -> Iterator[str]:
    """Attach ``backing`` to a free loop device; detach it on the way out, whatever happens."""
    args = ["losetup", "--find", "--show", "--sector-size", str(sector_size)]
    if read_only:
        args.append("--read-only")
    try:
        done = subprocess.run([*args, str(backing)], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise UsageError(f"cannot attach a loop device to {backing}: {detail.strip()}") from exc
    device = done.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False, capture_output=True)
