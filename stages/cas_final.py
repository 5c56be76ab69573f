"""Stage cas_final: GaFi with one generator, the accurate pipeline (Table 3, and Table 4 with K = 1).

Uses the first generator seed's choice from ``reports/gafi/tune_threshold/seed_<seed>.json``; any of
``gafi.checkpoint``, ``gafi.stddev``, ``gafi.threshold`` that is set overrides the search, so single points
run as experiments: ``dvc exp run -S gafi.stddev=1.6``. The set is regenerated every
``gafi.accurate_recycle`` epochs (N = 1 in the paper).
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, Member, read_choice
from stages.common import run_gafi_grid

STAGE = "cas_final"


def cells(ctx, reports):
    cfg, seed = ctx.cfg, ctx.cfg.generator_seeds[0]
    choice = read_choice(reports / "tune_threshold" / f"seed_{seed}.json")
    member = Member(
        seed,
        choice["checkpoint"] if cfg.checkpoint is None else cfg.checkpoint,
        choice["stddev"] if cfg.stddev is None else cfg.stddev,
        choice["threshold"] if cfg.threshold is None else cfg.threshold,
    )
    return [Cell("gafi", (member,), cfg.accurate_recycle)]


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells))
