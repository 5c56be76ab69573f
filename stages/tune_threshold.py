"""Stage tune_threshold@<seed>: the Dynamic Sample Filtering threshold, on the chosen checkpoint and stddev.

GaFi step 4: threshold over ``gafi.search.thresholds`` with the fast pipeline. Reads tune_stddev's choice
(``--stddev``, ``reports/gafi/tune_stddev/<seed>.json``); writes ``--out``
(``reports/gafi/tune_threshold/<seed>.json``), whose ``best`` is this generator's final (checkpoint, stddev,
threshold).
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, GafiContext, Member, read_choice, run_grid
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from stages.common import gafi_foreach_params

STAGE = "tune_threshold"


def main() -> None:
    params, gseed, paths = gafi_foreach_params(STAGE, "data", "reference", "generators", "stddev", "out")
    with StageRun(params, experiment="gafi") as run:
        choice = read_choice(paths.stddev)
        ctx = GafiContext(params, paths.data, paths.reference, paths.generators, resolve_device(params.device))
        cells = [
            Cell(f"threshold={t}", (Member(gseed, choice["checkpoint"], choice["stddev"], t),),
                 ctx.cfg.search.fast_recycle)
            for t in ctx.cfg.search.thresholds
        ]
        best = run_grid(ctx, run, params.stage, cells, paths.out)
        print(f"{params.stage}: best threshold {best['threshold']} (score {best['score']:.2f}, CAS {best['cas']:.2f})")


if __name__ == "__main__":
    run_main(main)
