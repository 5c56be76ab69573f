"""Stage tune_stddev@<seed>: the Expansion Trick's noise stddev, on the selected checkpoint.

GaFi step 3: stddev over ``gafi.search.stddevs`` with threshold 0.0 and the fast pipeline. Reads the
checkpoint select_checkpoint chose (``--checkpoint``, ``reports/gafi/select_checkpoint/<seed>.json``); writes
``--out`` (``reports/gafi/tune_stddev/<seed>.json``).
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, GafiContext, Member, read_choice, run_grid
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from stages.common import gafi_foreach_params

STAGE = "tune_stddev"


def main() -> None:
    params, gseed, paths = gafi_foreach_params(STAGE, "data", "reference", "generators", "checkpoint", "out")
    with StageRun(params, experiment="gafi") as run:
        checkpoint = read_choice(paths.checkpoint)["checkpoint"]
        ctx = GafiContext(params, paths.data, paths.reference, paths.generators, resolve_device(params.device))
        cells = [
            Cell(f"stddev={s}", (Member(gseed, checkpoint, s, 0.0),), ctx.cfg.search.fast_recycle)
            for s in ctx.cfg.search.stddevs
        ]
        best = run_grid(ctx, run, params.stage, cells, paths.out)
        print(f"{params.stage}: best stddev {best['stddev']} (score {best['score']:.2f}, CAS {best['cas']:.2f})")


if __name__ == "__main__":
    run_main(main)
