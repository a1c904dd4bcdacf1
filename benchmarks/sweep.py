"""The depth sweep extra: the self-tuning in-flight window against fixed depths.

By default ``asyncopy copy`` lets the window tune how many chunks it keeps in flight from
the copy's own throughput; ``--depth N`` fixes it. The window should not lose much to the
best fixed depth a patient operator could find by trying: the target is within 5% of the
best of 4, 8, 16 and 32, in wall time, on the five paths Cinder uses most.

``Bench.depth_sweep`` (``benchmarks/bench.py``) runs it on the dense layout's sources (or
the first layout run), for each of ``PATHS`` the run includes:

1. asyncopy ``copy --json`` at its defaults (tuned; its result's ``"depth"``, the most chunks
   the window let in flight, is recorded) and with ``--depth D`` for each depth, the buffer
   budget raised to D chunks counted twice (as a chunk read from RBD is) so that it does
   not cap the depth;
2. ``--repeats`` rounds, the order rotating from round to round, each output checked and
   removed as the paths' are.

The runs are grouped ``report.SWEEP_GROUP`` (their ``layout`` that of the sources); the report folds
them (``report.sweep_section``).
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.report import SWEEP_TUNED
from benchmarks.scenarios import ASYNCOPY, OBJECT, Endpoint, Role, Route, Tool

MiB = 1 << 20
PATHS = ("rbd-rbd", "file-rbd", "rbd-iscsi", "iscsi-rbd", "rbd-file")
FULL_DEPTHS = (4, 8, 16, 32)
QUICK_DEPTHS = (4, 16)


def fixed(depth: int) -> str:
    """The tool name of a fixed-depth run."""
    return f"asyncopy --depth {depth}"


def routes(chosen: Sequence[Route]) -> list[Route]:
    """The swept paths among those the run includes, in the run's order."""
    return [route for route in chosen if route.id in PATHS]


def copiers(src: Endpoint, dst: Endpoint, depths: Sequence[int]) -> list[Tool]:
    """asyncopy tuned, then at each fixed depth with a budget that holds that many chunks."""
    copy = (*ASYNCOPY, "copy", "--json")
    found = [Tool(SWEEP_TUNED, Role.ASYNCOPY, (*copy, src.uri, dst.uri))]
    for depth in depths:
        budget = f"{depth * OBJECT * 2 // MiB}M"
        argv = (*copy, "--depth", str(depth), "--max-inflight", budget, src.uri, dst.uri)
        found.append(Tool(fixed(depth), Role.ASYNCOPY, argv))
    return found
