"""``python -m asyncopy``: the command, with the garbage collector off while it loads.

Everything the command imports lives as long as the process (``tune_for_copy`` freezes it),
so the collector's passes over it while it loads free next to nothing and cost a noticeable
part of the start-up. ``cli.run`` turns the collector back on once the imports are frozen.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from asyncopy.process import standard_streams

    standard_streams()
    from asyncopy.cli import run

    run()


if __name__ == "__main__":
    main()
