"""Stage cas_multi: GaFi with K generators (Table 4), K from ``gafi.num_generators`` (K = 1 is cas_final).

Generator k uses its own searched (checkpoint, stddev, threshold) from
tune_threshold (``--choices``, ``reports/gafi/tune_threshold/<seed>.json``) and contributes quota / K images per class; all K are
regenerated together every ``gafi.accurate_recycle`` epochs.
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, Member, read_choice
from synthgap.paths import item_path
from stages.common import run_gafi_grid

STAGE = "cas_multi"


def cells(ctx, paths):
    seeds = ctx.cfg.generator_seeds
    choices = {s: read_choice(item_path(paths.choices, s, ".json")) for s in seeds[: max(ctx.cfg.num_generators)]}
    return [
        Cell(f"K={k}", tuple(Member(s, choices[s]["checkpoint"], choices[s]["stddev"], choices[s]["threshold"])
                                     for s in seeds[:k]), ctx.cfg.accurate_recycle)
        for k in ctx.cfg.num_generators if k > 1
    ]


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells, inputs=("choices",)))
