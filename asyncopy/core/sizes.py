"""Sizes as operators type them: 4096, 64K, 4M, 4MiB, 1G (binary multiples, as qemu-img)."""

from __future__ import annotations

import re

from asyncopy.errors import UsageError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in ``text``; a bad string is bad input."""
    match = _SIZE.match(text)
    if match is None:
        raise UsageError(f"bad {what} {text!r}: expected a number with an optional K, M, G or T")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def human(size: float) -> str:
    """1.5 GiB, 512 KiB, 10 B."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
