"""Stage ablate_stddev: Figure 2, CAS per noise stddev without and with filtering (threshold 0.0).

Last checkpoint of the first generator, no recycle.
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, Member
from stages.common import run_gafi_grid

STAGE = "ablate_stddev"


def cells(ctx, reports):
    seed = ctx.cfg.generator_seeds[0]
    last = ctx.last_checkpoint(seed)
    return [
        Cell(f"{STAGE}/stddev={s},{'filtered' if t is not None else 'unfiltered'}", (Member(seed, last, s, t),), None)
        for t in (None, 0.0)
        for s in ctx.cfg.ablation.stddevs
    ]


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells))
