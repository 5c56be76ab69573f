"""Stage compare_generators: the synthgap table, every generator family under one CAS protocol.

The sources of ``compare_generators.sources`` (:mod:`synthgap.compare`): the GAN plain and as GaFi ran it
(cas_final's checkpoint, stddev, threshold and recycle), the EDM closed-set pool of ``edm_base``
(sample_diffusion) and the Real-Fake stand-in's txt2img / img2img sets of ``realfake_variant``
(synthesize_realfake), each plain and with GaFi's post-processing (the filter rule at cas_final's threshold,
a fresh draw from the accepted images every N epochs). Every source makes sets of the same size; every
(source, trial) trains the same CAS classifier with the same trial seed, so sources compare trial by trial.

For each source: CAS with its 95 % interval, the paired gap to Real Data (train_reference's trials), the
real-image equivalent (CAS read on the Equivalence grid's real-data learning curve, the real cells of
augment's outputs, ``--grids``), Fréchet distance / diversity / domain accuracy of trial 0's first set
in the filter classifier's feature space (the classifier that filters: filtered sets are favoured there), and
the generation cost in seconds per 1,000 training images on this machine. Writes ``--out`` (``reports/synthgap/``):
``table.{md,csv}``, ``comparisons.{md,csv}``, ``cas_vs_cost.png``, ``compare_generators.json`` (every trial)
and ``summary.json`` (paired comparisons for summarize_results).
"""

from __future__ import annotations

import json

from synthgap import compare
from synthgap.config import load_stage_params
from synthgap.data import load_processed
from synthgap.equivalence.quality import diversity, domain_accuracy, extract_features, frechet_distance
from synthgap.errors import UserError, run_main
from synthgap.gafi.cas import GeneratorChoice, cas_model, synthetic_set
from synthgap.gafi.recycle import RecycledSet
from synthgap.gafi.report import real_data
from synthgap.gafi.sampling import balanced_counts
from synthgap.grid import Job, run_jobs, summarise
from synthgap.models import check_compatible, load_classifier
from synthgap.paths import atomic_write_json, item_path, read_upstream_json, upstream, workspace_root
from synthgap.realfake.pipeline import set_path
from synthgap.runtime import resolve_device
from synthgap.seeding import trial_seed
from synthgap.stats import estimate
from synthgap.tables import write_table
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from synthgap.train.gan import checkpoint_path, list_checkpoints, load_generator
from stages.common import stage_paths

STAGE = "compare_generators"


def main() -> None:
    params = load_stage_params(STAGE, workspace_root() / "params.yaml")
    paths = stage_paths(STAGE, "data", "reference", "real", "generators", "gafi", "grids", "edm", "realfake", "out")
    cfg, device = params.section, resolve_device(params.device)
    families = [f for f in dict.fromkeys(compare.family(s) for s in cfg.sources) if f != "gan"]  # pool families
    # every input is checked before any compute
    final = read_upstream_json(paths.gafi, "cas_final")["best"]
    real = real_data(read_upstream_json(paths.real, "train_reference")["summary"][0], "val")
    grids = sorted(upstream(paths.grids, "augment").glob("*.json"))
    curve = compare.real_curve([cell for g in grids for cell in json.loads(g.read_text())["cells"]])
    if not curve:
        raise UserError(f"{paths.grids} holds no real cells", "rerun `dvc repro augment`")
    pools = {"edm": paths.edm,
             "txt2img": set_path(paths.realfake, cfg.realfake_variant, "txt2img"),
             "img2img": set_path(paths.realfake, cfg.realfake_variant, "img2img")}
    for fam in families:
        upstream(pools[fam], f"sample_diffusion@{cfg.edm_base}" if fam == "edm" else "synthesize_realfake")
    if len(real) < params.trials:
        raise UserError(f"train_reference ran {len(real)} trials, this run has {params.trials}",
                        "rerun `dvc repro train_reference` with the current trials")
    real = real[: params.trials]  # the trials every source shares (train_reference.trials may run more)
    (member,) = final["members"]  # cas_final runs one generator
    threshold = cfg.threshold if cfg.threshold is not None else member["threshold"]
    recycle = cfg.recycle or final["recycle"]

    data = load_processed(paths.data)
    classifier = load_classifier(paths.reference, device).eval()
    check_compatible(classifier, data.num_classes, data.image_shape, data.name, paths.reference)
    size = cfg.images or len(data.y_train)
    quota = balanced_counts(size, data.num_classes)
    loaded = {}
    for fam in families:
        loaded[fam] = compare.read_pool(pools[fam], data.num_classes, device)
        if short := loaded[fam].shortfall(quota):
            c, have, want = short[0]
            raise UserError(f"{pools[fam]} holds {have} images of class {c}, a set of {size} needs {want}",
                            "generate a larger pool or lower compare_generators.images")

    with StageRun(params, experiment="synthgap") as run:
        evals = {s: to_device_tensors(*data.split(s), device) for s in ("val", "test") if len(data.split(s)[1])}
        for pool in loaded.values():
            pool.judge(classifier, threshold, cfg.batch_size)

        def gan_choice(seed_: int, epoch: int, stddev: float, thr):
            file = checkpoint_path(item_path(paths.generators, seed_), epoch)
            if not file.is_file():
                raise UserError(f"generator checkpoint {file} not found", f"run `dvc repro train_generator@{seed_}`")
            return GeneratorChoice(load_generator(file, device), stddev, thr)

        def describe(source: str) -> tuple[object, int | None, str]:
            """(maker, recycle period, post-processing text) of a source."""
            fam, gafi = compare.family(source), compare.post_processed(source)
            if fam == "gan":
                if gafi:
                    choice = gan_choice(member["generator_seed"], member["checkpoint"], member["stddev"], member["threshold"])
                    text = (f"GaFi: checkpoint {member['checkpoint']}, stddev {member['stddev']}, "
                            f"threshold {member['threshold']}, recycle {final['recycle']}")
                    period = final["recycle"]
                else:
                    last = max(list_checkpoints(item_path(paths.generators, member["generator_seed"])) or [0])
                    choice, text, period = gan_choice(member["generator_seed"], last, 1.0, None), f"none (checkpoint {last})", None
                return (lambda s: synthetic_set([choice], classifier, quota, s, max_rounds=cfg.filter_rounds,
                                                batch_size=cfg.batch_size)), period, text
            pool = loaded[fam]
            text = f"GaFi: threshold {threshold}, recycle {recycle} (from the pool)" if gafi else "none"
            return (lambda s: compare.pool_draw(pool, quota, s, gafi)), (recycle if gafi else None), text

        jobs, timers, notes, first_sets = [], {}, {}, {}
        for source in cfg.sources:
            make, period, notes[source] = describe(source)
            timers[source] = compare.Timed(make)
            for trial in range(params.trials):
                seed = trial_seed(params.seed, trial)
                train_set = RecycledSet(timers[source], period, seed)
                model = cas_model(cfg.classifier, train_set, data.num_classes, seed)  # makes the first set
                if trial == 0:
                    first_sets[source] = train_set(0)
                cell = {"source": source, "family": compare.family(source), "post_processing": notes[source],
                        "images": size, "recycle": "none" if period is None else period}
                jobs.append(Job(source, cell, trial, seed, model, train_set, size, cfg.classifier.train))

        def score(job, result) -> dict:
            finals = {k: v for k, v in result.final.items() if not k.endswith("per_class")}
            return {"cas": finals["test_top1"], **job.train_set.stats(), **finals}

        trials = run_jobs(run, STAGE, jobs, score, device=device, evals=evals)
        summary = {row["cell"]: row for row in summarise(trials, ("cas", "val_top1", "test_top1"))}
        run.record_cells(list(summary.values()), ("cas",))

        # ---- per source: quality in one feature space, real-image equivalent, cost
        real_features = extract_features(classifier, evals["test"][0])
        rows = {}
        for source, row in summary.items():
            x, y = first_sets[source]
            features = extract_features(classifier, x)
            fam = compare.family(source)
            cost = timers[source].seconds_per_image() if fam == "gan" else (
                loaded[fam].seconds_per_kept() if compare.post_processed(source) else loaded[fam].seconds_per_image)
            rows[source] = {
                "cas": row["cas"], "cas_ci95": row["cas_ci95"], "cas_trials": row["cas_trials"],
                "post_processing": notes[source], "filled": 100 * row["filter_filled"] / (row["sets_generated"] * size),
                "equivalent": compare.real_equivalents(curve, row["cas_trials"]),
                "quality": {"frechet_distance": frechet_distance(real_features, features),
                            "diversity": diversity(features, y.cpu().numpy()),
                            "domain_accuracy": domain_accuracy(real_features, features, params.seed)},
                "seconds_per_1000": None if cost is None else 1000 * cost,
            }

        out = paths.out
        comparisons = compare.comparisons({s: r["cas_trials"] for s, r in rows.items()})
        title = (f"synthgap: CAS of every generator family ({data.name}; {size:,} synthetic images per set; "
                 f"mean ± 95 % interval over {params.trials} trials; Real Data {estimate(real).text(2)})")
        appendix = (f"Real-image equivalent: the real training images that reach the same accuracy on the Equivalence "
                    f"grid's real-data curve ({', '.join(f'{n:,.0f}' for n, _ in curve)} images). The EDM model learned "
                    f"from its {cfg.edm_base:,}-image base subset; the GAN and the LoRA from the train split. Quality: "
                    f"trial 0's first set against the real test split in the filter classifier's feature space.\n")
        for file in write_table(compare.table_rows(rows, real), out / "table", title, appendix):
            run.log_artifact(file)
        for file in write_table([{k: c[k] for k in ("name", "diff_mean", "ci95", "trials", "verdict")} for c in comparisons],
                                out / "comparisons", "synthgap: paired comparisons (CAS points, 95 % interval over trials)"):
            run.log_artifact(file)
        compare.cost_figure(rows, real, out / "cas_vs_cost.png", data.name)
        run.log_artifact(out / "cas_vs_cost.png")
        atomic_write_json(out / f"{STAGE}.json", {"sources": rows, "real_top1_trials": real, "real_curve": curve,
                                                  "trials": trials})
        atomic_write_json(out / "summary.json", {"headline": {}, "comparisons": comparisons})
        run.log_metrics({f"{s}_cas": r["cas"] for s, r in rows.items()})
        for source, r in rows.items():
            print(f"{STAGE}: {source}: CAS {estimate(r['cas_trials']).text(2)}, "
                  f"real-image equivalent {r['equivalent']['text']}")


if __name__ == "__main__":
    run_main(main)
