"""Stage cas_final: GaFi with one generator, the accurate pipeline (Table 3, and Table 4 with K = 1).

Uses the first generator seed's choice from tune_threshold (``--choices``, ``reports/gafi/tune_threshold/<seed>.json``); any of
``gafi.checkpoint``, ``gafi.stddev``, ``gafi.threshold`` that is set overrides the search, so single points
run as experiments: ``dvc exp run -S gafi.stddev=1.6``. The set is regenerated every
``gafi.accurate_recycle`` epochs (N = 1 in the paper).

Also measures generator quality (FID / IS / KID, :mod:`synthgap.gafi.quality`) of this generator and of
cas_multi's other generators at their chosen checkpoints, with ``gafi.quality.images`` images (0: skipped), into
``quality`` of the JSON and the stage's metrics (``<variant>_<fid|is|kid>_g<seed>``).
"""

from __future__ import annotations

from synthgap.equivalence.quality import check_inception_weights
from synthgap.errors import run_main
from synthgap.gafi.pipeline import Cell, Member, read_choice
from synthgap.gafi.quality import measure_generators
from synthgap.paths import item_path, repo_root
from stages.common import run_gafi_grid

STAGE = "cas_final"


def member(ctx, paths, seed):
    """The search's choice for generator ``seed``; for the first one, ``gafi.checkpoint / stddev / threshold`` override."""
    cfg, choice = ctx.cfg, read_choice(item_path(paths.choices, seed, ".json"))
    first = seed == cfg.generator_seeds[0]
    pick = lambda key: choice[key] if not first or getattr(cfg, key) is None else getattr(cfg, key)  # noqa: E731
    return Member(seed, pick("checkpoint"), pick("stddev"), pick("threshold"))


def cells(ctx, paths):
    return [Cell("gafi", (member(ctx, paths, ctx.cfg.generator_seeds[0]),), ctx.cfg.accurate_recycle)]


def quality(ctx, paths, run):
    """Generator quality of this stage's generator and cas_multi's others (their searched choices)."""
    if not ctx.cfg.quality.images:
        return {}
    weights = ctx.cfg.quality.inception_weights and repo_root() / ctx.cfg.quality.inception_weights
    if weights:
        check_inception_weights(weights, "gafi.quality.inception_weights")
    seeds = ctx.cfg.generator_seeds[: max(ctx.cfg.num_generators)]
    rows = measure_generators(ctx, [member(ctx, paths, s) for s in seeds], weights)
    run.log_metrics({f"{r['variant']}_{k}_g{r['generator_seed']}": r[k] for r in rows for k in ("fid", "is", "kid")})
    return {"quality": rows}


if __name__ == "__main__":
    run_main(lambda: run_gafi_grid(STAGE, cells, quality, inputs=("choices",), headline=True))
