"""``python -m asyncopy``: the command, with the garbage collector off while it loads.

Everything the command imports lives as long as the process (``tune_for_copy`` freezes it),
so the collector's passes over it while it loads free next to nothing: here they were 41
young and 4 middle collections, 11-12 ms of a 170 ms start-up (timed with ``gc.callbacks``).
``cli.run`` turns the collector back on once the imports are frozen.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from asyncopy.cli import run

    run()


if __name__ == "__main__":
    main()
