"""Stage ablate_stddev: Figure 2, CAS per noise stddev without and with filtering (threshold 0.0).

Last checkpoint of the first generator, no recycle.
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell
from stages.common import run_gafi_grid

STAGE = "ablate_stddev"


def cells(ctx, paths):
    return [
        Cell(f"stddev={s},{'filtered' if t is not None else 'unfiltered'}", (ctx.last_member(s, t),), None)
        for t in (None, 0.0)
        for s in ctx.cfg.ablation.stddevs
    ]


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells))
