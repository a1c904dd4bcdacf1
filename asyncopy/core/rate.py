"""A bytes-per-second limit on a copy, shared by every task that moves bytes through it.

The limiter is a virtual clock: each spend of ``n`` bytes books the next ``n / rate``
seconds after the last booking (never before now: idle time earns no burst) and sleeps until
its booking ends. So ``B`` bytes take at least ``B / rate`` seconds whatever the number of
tasks, and a copy that is slower than the limit anyway never waits. The rate can change
while a copy runs (Cinder splits one backend's limit among the copies running at once);
bookings already made keep their end.

What counts is the bytes the copy reads: the source's data (which it then writes), the zero
buffers written to a sink that cannot zero, and the destination's re-read when verifying.
Holes skipped and zero runs zeroed by the sink itself (``write_zeroes``) move no data.
"""

from __future__ import annotations

import trio


class RateLimit:
    """At most ``bytes_per_second`` bytes a second over all spenders; 0 is no limit."""

    def __init__(self, bytes_per_second: int = 0) -> None:
        self._rate = 0
        self._booked_until = 0.0
        self.set_rate(bytes_per_second)

    @property
    def rate(self) -> int:
        return self._rate

    def set_rate(self, bytes_per_second: int) -> None:
        """Change the limit; the next spend books at the new rate."""
        if bytes_per_second < 0:
            raise ValueError(f"a rate limit cannot be negative: {bytes_per_second}")
        self._rate = bytes_per_second

    async def spend(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit in the limit (at once when there is none)."""
        if not self._rate or nbytes <= 0:
            return
        start = max(self._booked_until, trio.current_time())
        self._booked_until = start + nbytes / self._rate
        await trio.sleep_until(self._booked_until)
