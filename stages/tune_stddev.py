"""Stage tune_stddev@<seed>: the Expansion Trick's noise stddev, on the selected checkpoint.

GaFi step 3: stddev over ``gafi.search.stddevs`` with threshold 0.0 and the fast pipeline. Reads the
checkpoint from ``reports/gafi/select_checkpoint/seed_<seed>.json``; writes
``reports/gafi/tune_stddev/seed_<seed>.json``.
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, GafiContext, Member, read_choice, run_grid
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from stages.common import gafi_foreach_params

STAGE = "tune_stddev"


def main() -> None:
    params, gseed, workspace = gafi_foreach_params(STAGE)
    reports = workspace / "reports" / "gafi"
    with StageRun(params, experiment="gafi") as run:
        checkpoint = read_choice(reports / "select_checkpoint" / f"seed_{gseed}.json")["checkpoint"]
        ctx = GafiContext(params, workspace, resolve_device(params.device))
        cells = [
            Cell(f"stddev={s}", (Member(gseed, checkpoint, s, 0.0),), ctx.cfg.search.fast_recycle)
            for s in ctx.cfg.search.stddevs
        ]
        best = run_grid(ctx, run, params.stage, cells, reports / STAGE / f"seed_{gseed}.json")
        print(f"{params.stage}: best stddev {best['stddev']} (score {best['score']:.2f}, CAS {best['cas']:.2f})")


if __name__ == "__main__":
    run_main(main)
