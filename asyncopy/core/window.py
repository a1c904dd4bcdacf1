"""How many chunks a copy keeps in flight: a fixed number (``--depth N``), or one that finds
the knee of the throughput curve by itself.

No peer adapts (qemu-img's ``-m``, nbdcopy's ``-R``, rbd's concurrent ops are numbers an
operator guesses), and the best number differs by path: RBD writes gain up to 16 chunks in
flight, a tgtd LUN stops gaining at 8, a local file at fewer. The tuner climbs the curve:

- The copy is measured in epochs: an epoch ends once ``2 * size`` chunks have completed and
  ``MIN_EPOCH`` seconds have passed, and gives the bytes a second done at that size.
- Start: ``START`` chunks, doubled each epoch while that gains ``GROWTH`` or more.
- Then it probes: one epoch one step above the best size, one a step below; a size above is
  kept if it gains ``GAIN``, a size below if it loses nothing (the same rate with fewer
  chunks in flight: less memory, shorter queues; a size below that lost a little would be
  kept on noise alone, and the window would slide down step by step). Between probes the
  best size's rate is measured again, so that a change of conditions (a dense region after
  a sparse one, another copy starting beside this one) moves the size again.
- Always within ``limit``: ``max_inflight // chunk_size`` chunks, the hard memory bound.

Buffers are the window's, not the workers': a chunk takes one with its slot and gives it back
after, and a buffer is made only when no free one is left, so the memory touched follows the
largest size the window reached, not the number of workers waiting.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

START = 8  # qemu-img convert's default
GROWTH = 0.10  # a doubling that gains less ends the start
GAIN = 0.05  # what a probe above the best size must gain to be kept
MIN_EPOCH = 0.2  # seconds: shorter epochs measured noise


@dataclass
class Tuner:
    """The size of the window, from the rates measured at each size (a pure state machine:
    ``measured`` is told each epoch's rate and answers the next size)."""

    limit: int
    size: int = 0
    best: int = 0
    best_rate: float = 0.0
    starting: bool = True
    probes: list[int] = field(default_factory=list)  # sizes still to try around ``best``

    def __post_init__(self) -> None:
        self.size = self.best = min(START, self.limit)

    def measured(self, rate: float) -> int:
        """The rate of the epoch just ended at ``size``; the size for the next one."""
        if self.starting:
            return self._start(rate)
        if self.size == self.best:
            self.best_rate = rate  # fresh: the best size's rate as it is now
            self.probes = self.probes or self._neighbours()
        elif self._better(rate):
            self._adopt(rate)
        self.size = self.probes.pop(0) if self.probes and self.size == self.best else self.best
        return self.size

    def _start(self, rate: float) -> int:
        if self.size > self.best or self.best_rate == 0.0:
            if rate >= self.best_rate * (1 + GROWTH):
                self.best, self.best_rate = self.size, rate
            else:
                self.starting = False
                self.size = self.best
                return self.size
        if self.size >= self.limit:
            self.starting = False
            return self.size
        self.size = min(self.limit, self.size * 2)
        return self.size

    def _better(self, rate: float) -> bool:
        """A size above the best must gain ``GAIN``; one below must lose nothing."""
        if self.size > self.best:
            return rate >= self.best_rate * (1 + GAIN)
        return rate >= self.best_rate

    def _adopt(self, rate: float) -> None:
        self.best, self.best_rate = self.size, rate
        self.probes = []

    def _neighbours(self) -> list[int]:
        step = max(1, self.best // 4)
        above, below = min(self.limit, self.best + step), max(1, self.best - step)
        return [size for size in (above, below) if size != self.best]


class Window:
    """Slots for chunks in flight, with their buffers; fixed at ``depth``, or tuned."""

    def __init__(
        self,
        limit: int,
        buffer_size: int,
        make_buffer: Callable[[int], memoryview],
        *,
        fixed: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.tuner = None if fixed else Tuner(limit)
        self.size = limit if self.tuner is None else self.tuner.size
        self.largest = self.size
        self.busy = 0
        self.free: list[memoryview] = []
        self.buffer_size = buffer_size
        self.make_buffer = make_buffer
        self.changed = trio.Condition()
        self.clock = clock
        self.epoch_start = clock()
        self.epoch_bytes = 0
        self.epoch_chunks = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[memoryview]:
        """A slot and a buffer for one chunk, once fewer than ``size`` are in flight."""
        async with self.changed:
            while self.busy >= self.size:
                await self.changed.wait()
            self.busy += 1
        buffer = self.free.pop() if self.free else self.make_buffer(self.buffer_size)
        try:
            yield buffer
        finally:
            self.free.append(buffer)
            self.busy -= 1
            await self._wake()

    async def _wake(self) -> None:
        with trio.CancelScope(shield=True):  # a slot given back always wakes a waiter
            async with self.changed:
                self.changed.notify_all()

    def release(self) -> None:
        """Let the free buffers go (the copy is over: a verification reads with its own)."""
        self.free.clear()

    def done(self, nbytes: int) -> None:
        """A chunk of ``nbytes`` completed: the epoch's measure, and the next size."""
        if self.tuner is None:
            return
        self.epoch_bytes += nbytes
        self.epoch_chunks += 1
        now = self.clock()
        elapsed = now - self.epoch_start
        if self.epoch_chunks < 2 * self.size or elapsed < MIN_EPOCH:
            return
        self.size = self.tuner.measured(self.epoch_bytes / elapsed)
        self.largest = max(self.largest, self.size)
        while len(self.free) > self.size:  # buffers beyond the new size: let them go
            self.free.pop()
        self.epoch_start, self.epoch_bytes, self.epoch_chunks = now, 0, 0
