"""Stage select_checkpoint@<seed>: CAS of every generator checkpoint with the fast pipeline.

GaFi step 2: stddev 1.0, threshold 0.0 (only misclassified samples dropped), recycle every
``gafi.search.fast_recycle`` epochs. Writes ``--out`` (``reports/gafi/select_checkpoint/<seed>.json``: every
checkpoint's CAS, the data of Figure 3, and the best one).
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, GafiContext, Member, run_grid
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from stages.common import gafi_foreach_params

STAGE = "select_checkpoint"


def main() -> None:
    params, gseed, paths = gafi_foreach_params(STAGE, "data", "reference", "generators", "out")
    with StageRun(params, experiment="gafi") as run:
        ctx = GafiContext(params, paths.data, paths.reference, paths.generators, resolve_device(params.device))
        recycle = ctx.cfg.search.fast_recycle
        cells = [Cell(f"checkpoint={e}", (Member(gseed, e, 1.0, 0.0),), recycle) for e in ctx.checkpoints(gseed)]
        best = run_grid(ctx, run, params.stage, cells, paths.out)
        print(f"{params.stage}: best checkpoint {best['checkpoint']} (score {best['score']:.2f}, CAS {best['cas']:.2f})")


if __name__ == "__main__":
    run_main(main)
