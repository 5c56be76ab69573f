"""Stage ablate_filtering: Table 1, CAS per filtering threshold (last checkpoint, stddev 1.0, no recycle)."""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell
from stages.common import run_gafi_grid

STAGE = "ablate_filtering"


def cells(ctx, paths):
    return [Cell(f"threshold={t}", (ctx.last_member(threshold=t),), None) for t in ctx.cfg.ablation.thresholds]


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells))
