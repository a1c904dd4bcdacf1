"""How far a copy is: bytes done, the recent rate and the time left.

No trio here: Cinder's side of a copy (``asyncopy.cinder``, under eventlet) hands the same
``Progress`` to its callers as the engine hands to a library caller.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass

RATE_WINDOW = 10.0  # seconds of reports the rate is measured over


@dataclass(frozen=True, slots=True)
class Progress:
    """Bytes of the source handled so far (written, zeroed, skipped, or found done by a
    resumed copy's journal) out of ``total``; ``rate`` in bytes per second over the last
    ``RATE_WINDOW`` seconds; ``eta`` the seconds left at that rate (None until known)."""

    done: int
    total: int
    skipped: int
    rate: float = 0.0
    eta: float | None = None

    def summary(self) -> dict[str, float | int | None]:
        """A JSON-ready dict."""
        shown = asdict(self)
        shown["rate"] = round(self.rate)
        shown["eta"] = None if self.eta is None else round(self.eta, 1)
        return shown

    @classmethod
    def from_summary(cls, summary: Mapping[str, object]) -> Progress:
        """The inverse of ``summary`` (what a copy child reports)."""
        eta = summary.get("eta")
        return cls(
            done=_int(summary["done"]),
            total=_int(summary["total"]),
            skipped=_int(summary.get("skipped", 0)),
            rate=float(_number(summary.get("rate", 0))),
            eta=None if eta is None else float(_number(eta)),
        )


class Meter:
    """Turns (time, bytes done) readings into ``Progress``: the rate over the readings of
    the last ``window`` seconds, so a copy that speeds up or slows down shows it soon."""

    def __init__(self, total: int, window: float = RATE_WINDOW) -> None:
        self.total = total
        self.window = window
        self.readings: deque[tuple[float, int]] = deque()

    def reading(self, now: float, done: int, skipped: int) -> Progress:
        self.readings.append((now, done))
        while len(self.readings) > 2 and now - self.readings[1][0] >= self.window:
            self.readings.popleft()
        first_time, first_done = self.readings[0]
        elapsed = now - first_time
        rate = (done - first_done) / elapsed if elapsed > 0 else 0.0
        left = self.total - done
        eta = 0.0 if left <= 0 else (left / rate if rate > 0 else None)
        return Progress(done, self.total, skipped, rate, eta)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"not a byte count: {value!r}")
    return value


def _number(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    return value
