"""Stage cas_baseline: CAS without post-processing (the Baseline row of Table 4).

The last checkpoint of the first generator, stddev 1.0, no filtering, one synthetic set for the whole
training. It is also the "No Filtering" column of Table 1 and the "No Recycle" column of Table 2.
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell
from stages.common import run_gafi_grid

STAGE = "cas_baseline"


def cells(ctx, paths):
    return [Cell("baseline", (ctx.last_member(),), None)]


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells, headline=True))
