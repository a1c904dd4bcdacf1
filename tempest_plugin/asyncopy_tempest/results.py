"""One JSON line per migration measured, appended to ``[asyncopy] results_file``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Measurement:
    """A migration's figures: who moved what where, how fast, how thin, how faithfully."""

    test: str
    kind: str  # "migrate" (os-migrate_volume) or "retype" (os-retype, on-demand)
    manager: str
    source_backend: str
    destination_backend: str
    size: int  # bytes
    data_bytes: int
    seconds: float  # from the request until migration_status "success"
    source_allocated: int
    destination_allocated: int
    identical: bool
    progress_seen: bool | None  # None where progress was not watched


def append(path: str, measurement: Measurement) -> None:
    """Add the measurement to ``path`` as one JSON line; nothing when ``path`` is empty."""
    if not path:
        return
    with open(path, "a", encoding="utf-8") as results:
        results.write(json.dumps(asdict(measurement), sort_keys=False) + "\n")
