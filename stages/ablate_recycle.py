"""Stage ablate_recycle: Table 2, CAS per recycle period N (last checkpoint, stddev 1.0, no filtering)."""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell
from stages.common import run_gafi_grid

STAGE = "ablate_recycle"


def cells(ctx, paths):
    return [Cell(f"N={n}", (ctx.last_member(),), n) for n in ctx.cfg.ablation.recycle]


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells))
