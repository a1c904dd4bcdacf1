"""What ``asyncopy copy --progress`` shows on stderr.

- On a terminal, a bar (tqdm) with bytes done, the rate and the time left.
- Elsewhere (a log, a pipe), no redraws: one line at the start, then one every
  ``LINE_INTERVAL`` seconds, and one at the end.
- ``--progress=json``: one JSON object per report (``Progress.summary``), for scripts.

The rate and time left are the engine's (``asyncopy.core.progress``), the same a library
caller and Cinder receive. A stream whose reader goes away ends the display, not the copy
(``Unfailing``).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, NoReturn, Protocol, TextIO

from asyncopy.core.sizes import human
from asyncopy.process import silence

if TYPE_CHECKING:
    from tqdm import tqdm

    from asyncopy.core.progress import Progress

LINE_INTERVAL = 10.0  # seconds between two plain lines
KINDS = ("bar", "json")


class Display(Protocol):
    def __call__(self, progress: Progress) -> None:
        """Show one report."""

    def close(self) -> None:
        """End what is shown, so that the next line (a result, an error) starts clean."""


def display(kind: str, stream: TextIO) -> Display:
    """The display for ``--progress=KIND`` on ``stream``."""
    if kind == "json":
        return Unfailing(JsonLines(stream), stream)
    return Unfailing(Bar(stream) if stream.isatty() else Lines(stream), stream)


def describe(progress: Progress) -> str:
    """45.0% of 2.0 GiB, 120.0 MiB/s, 12 s left."""
    percent = 100.0 * progress.done / progress.total if progress.total else 100.0
    return f"{percent:.1f}% of {human(progress.total)}, {_rate_and_time(progress)}"


def _rate_and_time(progress: Progress) -> str:
    left = "time left unknown" if progress.eta is None else f"{_duration(progress.eta)} left"
    return f"{human(progress.rate)}/s, {left}"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}" if minutes else f"{secs} s"


class Unfailing:
    """``shown`` until a write on ``stream`` fails (its reader gone): then the stream is
    silenced and nothing more is shown, and the copy goes on."""

    def __init__(self, shown: Display, stream: TextIO) -> None:
        self.shown: Display | None = shown
        self.stream = stream

    def __call__(self, progress: Progress) -> None:
        if self.shown is not None:
            try:
                self.shown(progress)
            except OSError:
                self._gone()

    def close(self) -> None:
        if self.shown is not None:
            try:
                self.shown.close()
            except OSError:
                self._gone()

    def _gone(self) -> None:
        self.shown = None
        silence(self.stream)


class JsonLines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, progress: Progress) -> None:
        print(json.dumps({"progress": progress.summary()}), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class Lines:
    def __init__(self, stream: TextIO, interval: float = LINE_INTERVAL) -> None:
        self.stream = stream
        self.interval = interval
        self.last: float | None = None
        self.ended = False

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        final = progress.done >= progress.total
        due = self.last is None or now - self.last >= self.interval
        if self.ended or not (due or final):
            return
        self.last, self.ended = now, final
        print(f"asyncopy: {describe(progress)}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class Bar:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: tqdm[NoReturn] | None = None

    def __call__(self, progress: Progress) -> None:
        if self.bar is None:
            from tqdm import tqdm  # only for a terminal

            try:
                columns = os.get_terminal_size(self.stream.fileno()).columns
            except OSError:
                columns = 0
            self.bar = tqdm(
                total=progress.total,
                file=self.stream,
                ncols=columns or 100,  # a terminal that says no width: a common one
                dynamic_ncols=bool(columns),
                bar_format="{percentage:5.1f}% |{bar}| {desc}",
            )
        self.bar.n = progress.done
        done = f"{human(progress.done)} of {human(progress.total)}"
        self.bar.set_description_str(f"{done}, {_rate_and_time(progress)}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
