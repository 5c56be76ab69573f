"""The GaFi, Equivalence and Real-Fake stage chains and compare_generators succeed in order on one shared tiny
workspace (the embedded default's params cut to the minimum, as the preset runs cut them), and what they write
holds together. (fit_equivalence cannot fit classifiers at chance: it runs here on the augment results that
`dvc repro` committed, and tests/equivalence/test_fit.py refits the paper's tables; attack_membership and
detect_copies run in tests/stages/test_realfake.py; summarize_results runs here on the chain's summaries plus a
hand-written Equivalence one.)

The stages run in this process, as ``python -m stages.<stage> [item]`` would run them (``runpy``, the same
error convention and staging), so the chain costs its compute and not 17 interpreter and torch start-ups.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from tests.stages.test_stages import run_in_process
from tests.test_preset_runs import shrink_all

GAFI = [("prepare_data",), ("train_reference",), ("train_generator", "0"), ("select_checkpoint", "0"),
        ("tune_stddev", "0"), ("tune_threshold", "0"), ("cas_final",), ("cas_multi",), ("cas_baseline",),
        ("ablate_filtering",), ("ablate_recycle",), ("ablate_stddev",), ("report_gafi",)]
REALFAKE = [("pretrain_base_model",), ("finetune_lora",), ("synthesize_realfake",), ("evaluate_realfake",)]


class ParamReads:
    """The params.yaml keys each stage reads: every field read on its params (the ``StageParams`` and the
    section models ``load_stage_params`` validates) while the stage runs, leaf by leaf; logging them
    (``StageParams.flat``) is no read."""

    def __init__(self, mp: pytest.MonkeyPatch):
        from synthgap import config

        self.stage, self.paused = "", False
        self.paths: dict[int, set[str]] = {}          # id(model) -> its dotted paths in params.yaml
        self.reads: dict[str, set[str]] = {}
        original_validate, original_flat = config.validate_section, config.StageParams.flat
        reads = self

        def validate(model, raw, where, source="params.yaml"):
            out = original_validate(model, raw, where, source)
            reads.index(out, where.rstrip("."), itself=bool(where))  # the shared keys: read on StageParams
            return out

        def flat(params):
            reads.paused = True
            try:
                return original_flat(params)
            finally:
                reads.paused = False

        def section_field(obj, name):
            value = object.__getattribute__(obj, name)
            if not reads.paused and name in type(obj).model_fields and not isinstance(value, config.Section):
                for prefix in object.__getattribute__(reads, "paths").get(id(obj), ()):
                    reads.record(f"{prefix}.{name}" if prefix else name)
            return value

        def stage_field(obj, name):
            value = object.__getattribute__(obj, name)
            copying = sys._getframe(1).f_code.co_filename == dataclasses.__file__  # replace(params, stage=...)
            if not reads.paused and not copying and name in ("seed", "trials", "device"):
                reads.record(name)
            return value

        mp.setattr(config, "validate_section", validate)
        mp.setattr(config.StageParams, "flat", flat)
        mp.setattr(config.Section, "__getattribute__", section_field)
        mp.setattr(config.StageParams, "__getattribute__", stage_field)

    def index(self, model, prefix: str, itself: bool = True) -> None:
        from synthgap.config import Section

        if itself:
            self.paths.setdefault(id(model), set()).add(prefix)
        for name in type(model).model_fields:
            value = object.__getattribute__(model, name)
            if isinstance(value, Section):
                self.index(value, f"{prefix}.{name}" if prefix else name)

    def record(self, key: str) -> None:
        if self.stage:
            self.reads.setdefault(self.stage, set()).add(key)

    def run(self, ws: Path, stage: str, *args: str) -> None:
        self.stage, self.paths = "@".join((stage, *args)), {}
        try:
            run_in_process(ws, stage, *args)
        finally:
            self.stage = ""


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("chain")
    (ws / ".git").mkdir()  # a workspace root, as a clone is
    shutil.copy(REPO / "dvc.yaml", ws / "dvc.yaml")  # what the stages declare: what they log, and may read
    params = shrink_all(yaml.safe_load((REPO / "params.yaml").read_text()), 10, 1347, 40)
    params["realfake"]["ablation"] = ["base", "full"]  # synthesis is the chain's cost: 2 of the 5 variants
    params["train_reference"]["trials"] = params["gafi"]["headline_trials"] = 3  # headline cells: one more than trials
    n_base = params["equivalence"]["base_sizes"][0]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    mp = pytest.MonkeyPatch()
    for name in [k for k in os.environ if k.startswith(("DVC_", "SYNTHGAP_DEBUG"))]:
        mp.delenv(name)
    try:
        reads = ParamReads(mp)
        for step in (*GAFI, *REALFAKE, ("train_diffusion", str(n_base)), ("sample_diffusion", str(n_base)),
                     ("augment", str(n_base)), ("measure_synthetic",), ("compare_generators",)):
            reads.run(ws, *step)
    finally:
        mp.undo()
    (ws / "reads.json").write_text(json.dumps({k: sorted(v) for k, v in reads.reads.items()}))
    return ws


def read(ws: Path, *parts: str):
    return json.loads(ws.joinpath(*parts).read_text())


def test_every_stage_of_the_chains_writes_its_metrics_file_with_a_run_id(chain):
    n_base = yaml.safe_load((chain / "params.yaml").read_text())["equivalence"]["base_sizes"][0]
    names = [s if len(rest) == 0 else f"{s}@{rest[0]}" for s, *rest in GAFI]
    names += [f"{s}@{n_base}" for s in ("train_diffusion", "sample_diffusion", "augment")]
    names += [s for s, in REALFAKE] + ["measure_synthetic", "compare_generators"]
    for name in names:
        assert len(read(chain, "reports", "metrics", f"{name}.json")["mlflow_run_id"]) == 32, name


def test_every_table_cell_is_in_its_stages_metrics_file(chain):
    """Each grid stage's DVC metrics file holds every cell's mean over trials under ``per_cell`` (so `dvc metrics
    diff --targets reports/metrics -R` compares Table 1's thresholds, each Equivalence cell, each source), equal
    to the cell's mean in the stage's report."""
    n_base = yaml.safe_load((chain / "params.yaml").read_text())["equivalence"]["base_sizes"][0]
    for stage, report, key in (("ablate_filtering", ("gafi", "ablate_filtering.json"), "cas"),
                               ("tune_threshold@0", ("gafi", "tune_threshold", "0.json"), "cas"),
                               (f"augment@{n_base}", ("equivalence", "augment", f"{n_base}.json"), "accuracy")):
        table = read(chain, "reports", *report)
        rows = table.get("cells") or table["rows"]  # augment: rows are trials, cells their means
        per_cell = read(chain, "reports", "metrics", f"{stage}.json")["per_cell"]
        assert {r["cell"]: r[key] for r in rows} == {cell: values[key] for cell, values in per_cell.items()}, stage
        assert len(per_cell) >= (2 if stage.startswith("augment") else 1), stage
    sources = read(chain, "reports", "synthgap", "compare_generators.json")["sources"]
    per_cell = read(chain, "reports", "metrics", "compare_generators.json")["per_cell"]
    assert {s: row["cas"] for s, row in sources.items()} == {c: v["cas"] for c, v in per_cell.items()}


def test_the_searches_hand_their_choice_down_the_chain(chain):
    checkpoint = read(chain, "reports", "gafi", "select_checkpoint", "0.json")["best"]["checkpoint"]
    stddev = read(chain, "reports", "gafi", "tune_stddev", "0.json")
    assert {row["checkpoint"] for row in stddev["rows"]} == {checkpoint}  # tune_stddev searches at the chosen checkpoint
    threshold = read(chain, "reports", "gafi", "tune_threshold", "0.json")
    assert {(r["checkpoint"], r["stddev"]) for r in threshold["rows"]} == {(checkpoint, stddev["best"]["stddev"])}
    (member,) = read(chain, "reports", "gafi", "cas_final.json")["best"]["members"]
    assert (member["checkpoint"], member["stddev"], member["threshold"]) == (
        checkpoint, stddev["best"]["stddev"], threshold["best"]["threshold"])


def test_cas_final_trials_log_what_the_filter_did(chain):
    """Each trial of the final CAS run logs the filter's counts (drawn, accepted, and the images that filled a
    class the filter could not, when filter_rounds ran out): the bounded filtering is visible, not silent."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{chain / 'mlflow.db'}")
    parent = read(chain, "reports", "metrics", "cas_final.json")["mlflow_run_id"]
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    (member,) = read(chain, "reports", "gafi", "cas_final.json")["best"]["members"]
    assert len(children) == yaml.safe_load((chain / "params.yaml").read_text())["gafi"]["headline_trials"]
    for run in children:
        m = run.data.metrics
        assert float(run.data.params["threshold"]) == member["threshold"]
        assert m["filter_drawn"] >= m["filter_accepted"] >= 0 and m["filter_filled"] >= 0
        judged = m["filter_drawn"] - m["filter_filled"]  # the fill's candidates are never judged
        assert m["filter_acceptance"] == pytest.approx(m["filter_accepted"] / judged if judged else 1.0, abs=1e-3)


def test_report_gafi_writes_the_papers_rows_with_intervals_and_verdicts(chain):
    table4 = (chain / "reports" / "gafi" / "table4.md").read_text()
    ours = [line.split("|")[1].strip() for line in table4.splitlines() if line.endswith("| ours |")]
    assert ours == ["Real Data", "Baseline", "GaFi"]
    assert "±" in (chain / "reports" / "gafi" / "table1.md").read_text()
    summary = read(chain, "reports", "gafi", "summary.json")
    real = summary["headline"]["real_top1"]
    assert real["trials"] == 3 and real["mean"] > 30  # digits are learnt well above the 10 % of chance
    assert summary["headline"]["baseline_cas"]["trials"] == summary["headline"]["gafi_cas"]["trials"] == 3
    trials = {c["name"]: c["trials"] for c in summary["comparisons"]}
    assert trials["gafi_vs_baseline"] == trials["gafi_vs_real"] == 3  # headline against headline: all three
    others = {n: t for n, t in trials.items() if n not in ("gafi_vs_baseline", "gafi_vs_real", "baseline_vs_real")}
    assert set(others.values()) == {2} and any(n.endswith("_vs_none") for n in others)  # vs Baseline: the shared two
    assert "| Trials |" in table4 and "over 2 trials, No Filtering 3)" in (chain / "reports" / "gafi" / "table1.md").read_text()
    names = {c["name"] for c in summary["comparisons"]}
    assert {"gafi_vs_baseline", "gafi_vs_real"} <= names
    assert all(c["verdict"] in ("better", "worse", "no_difference") for c in summary["comparisons"])


def test_each_cas_cell_and_trial_is_an_mlflow_child_run_with_its_params(chain):
    from mlflow.tracking import MlflowClient

    parent = read(chain, "reports", "metrics", "ablate_filtering.json")["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{chain / 'mlflow.db'}")
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    thresholds = yaml.safe_load((chain / "params.yaml").read_text())["gafi"]["ablation"]["thresholds"]
    assert sorted((r.data.params["threshold"], r.data.params["trial"]) for r in children) == sorted(
        (str(t), str(i)) for t in thresholds for i in (0, 1))
    assert all({"checkpoint", "stddev", "recycle"} <= r.data.params.keys() and "cas" in r.data.metrics for r in children)


def test_the_equivalence_chain_trains_samples_augments_and_measures(chain):
    n_base = yaml.safe_load((chain / "params.yaml").read_text())["equivalence"]["base_sizes"][0]
    import numpy as np

    with np.load(chain / "data" / "synthetic" / "sample_diffusion" / f"{n_base}.npz") as pool:
        assert pool["x_train"].dtype == np.uint8 and float(pool["seconds"]) > 0
        assert np.bincount(pool["y_train"], minlength=10).min() >= len(pool["y_train"]) // 10  # class-balanced
    grid = read(chain, "reports", "equivalence", "augment", f"{n_base}.json")
    assert {c["setting"] for c in grid["cells"]} == {"real", "closed", "open"}  # open: the stand-in's txt2img digits
    assert all(len(c["accuracy_trials"]) == 2 for c in grid["cells"])
    measured = read(chain, "reports", "equivalence", "measure_synthetic.json")
    assert list(measured["pools"]) == [f"closed_{n_base}", "open"]  # the pools augment draws from
    for pool in measured["pools"].values():
        assert pool["frechet_distance"] >= 0 and 0 <= pool["domain_accuracy"] <= 100 and pool["n_synthetic"] > 0


def test_quality_images_sizes_the_closed_pool_and_the_sample_every_pool_is_measured_on(chain, tmp_path, capsys):
    """equivalence.quality.images above the grid's pool size: sample_diffusion makes that many, and
    measure_synthetic measures that many of the closed pool, a random subset of an open pool larger than
    that, and an open pool smaller than that whole, saying so."""
    ws = tmp_path / "ws"
    shutil.copytree(chain, ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    n_base = params["equivalence"]["base_sizes"][0]
    with np.load(ws / "data" / "synthetic" / "sample_diffusion" / f"{n_base}.npz") as pool:
        grid_size = len(pool["y_train"])
    with np.load(ws / "data" / "synthetic" / "synthesize_realfake" / "base_txt2img.npz") as pool:
        open_size = len(pool["y_train"])
    assert grid_size + 7 < open_size  # the first size subsets the open pool, the second exceeds it
    for images in (grid_size + 7, open_size + 1):
        params["equivalence"]["quality"]["images"] = images
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        capsys.readouterr()
        run_in_process(ws, "sample_diffusion", str(n_base))
        run_in_process(ws, "measure_synthetic")
        with np.load(ws / "data" / "synthetic" / "sample_diffusion" / f"{n_base}.npz") as pool:
            assert len(pool["y_train"]) == images
        measured = read(ws, "reports", "equivalence", "measure_synthetic.json")["pools"]
        assert measured[f"closed_{n_base}"]["n_synthetic"] == images
        assert measured["open"]["n_synthetic"] == min(images, open_size)
        warned = f"the open pool has {open_size:,} images, fewer than equivalence.quality.images {images:,}"
        assert (warned in capsys.readouterr().out) == (open_size < images)


def test_compare_generators_runs_on_what_the_chains_made(chain):
    data = read(chain, "reports", "synthgap", "compare_generators.json")
    sources = yaml.safe_load((chain / "params.yaml").read_text())["compare_generators"]["sources"]
    table = (chain / "reports" / "synthgap" / "table.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == sources and set(data["sources"]) == set(sources)
    assert all(len(row["cas_trials"]) == 2 and row["seconds_per_1000"] > 0 for row in data["sources"].values())
    (member,) = read(chain, "reports", "gafi", "cas_final.json")["best"]["members"]
    assert data["sources"]["gan_gafi"]["post_processing"].startswith(f"GaFi: checkpoint {member['checkpoint']}, ")


def test_summarize_results_merges_every_part_into_one_metrics_file(chain):
    equivalence = {"headline": {"equivalence_closed_c1": {"mean": 1.5, "ci95": [1.2, 1.8], "trials": 2}},
                   "comparisons": [{"name": "equivalence_made_up", "paper": "equivalence", "diff_mean": 1.0,
                                    "ci95": [0.5, 1.5], "trials": 2, "verdict": "better"}]}
    (chain / "reports" / "equivalence" / "summary.json").write_text(json.dumps(equivalence))
    run_in_process(chain, "summarize_results")
    summary = read(chain, "reports", "summary.json")
    parts = {"gafi": read(chain, "reports", "gafi", "summary.json"), "equivalence": equivalence,
             "realfake": read(chain, "reports", "realfake", "summary.json"),
             "synthgap": read(chain, "reports", "synthgap", "summary.json")}
    assert summary["comparisons"] == [c for part in parts.values() for c in part["comparisons"]]
    assert summary["headline"] == {k: v for part in parts.values() for k, v in part["headline"].items()}
    assert "| equivalence_made_up | equivalence | +1.00 | [+0.50, +1.50] | 2 | better |" in (
        chain / "reports" / "summary.md").read_text()
    view = read(chain, "reports", "headline.json")     # the narrow file dvc metrics show displays
    assert view["equiv"] == {"c1": 1.5} and view["gafi"]["gafi"] == round(summary["headline"]["gafi_cas"]["mean"], 2)
    assert sum(view["verdict"].values()) == len(summary["comparisons"]) and view["verdict"]["better"] == sum(
        c["verdict"] == "better" for c in summary["comparisons"])


def test_fit_equivalence_refits_the_committed_grid_to_the_committed_formula(tmp_path):
    """The pipeline mode of fit_equivalence (dvc.yaml's paths) on the augment results that `dvc repro` wrote and
    committed, in a fresh workspace whose MLflow holds none of their runs (so the JSON rows are read): the
    same c1, c2, R² and intervals as the committed reports/equivalence/equivalence.json."""
    (tmp_path / ".git").mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "reports" / "equivalence" / "augment", tmp_path / "reports" / "equivalence" / "augment")
    run_in_process(tmp_path, "prepare_data")       # the class names; a clean clone has no data/processed
    run_in_process(tmp_path, "fit_equivalence")
    got, committed = (json.loads((root / "reports" / "equivalence" / "equivalence.json").read_text())["closed"]
                      for root in (tmp_path, REPO))
    for key in ("c1", "c2", "r2", "tau"):
        assert got[key] == pytest.approx(committed[key], rel=1e-6), key
    assert got["c1_ci95"] == pytest.approx(committed["c1_ci95"], rel=1e-6)
    np.testing.assert_allclose(got["tuples"], committed["tuples"], rtol=1e-6)
    summary = read(tmp_path, "reports", "equivalence", "summary.json")
    assert summary["headline"]["equivalence_closed_c1"]["mean"] == pytest.approx(committed["c1"], rel=1e-6)


def test_each_stage_reads_only_params_that_dvc_yaml_declares_for_it(chain):
    """A key a stage reads but does not declare would leave its outputs "up to date" after the key changed."""
    from synthgap.staging import declared_params, is_declared

    reads = read(chain, "reads.json")
    n_base = yaml.safe_load((chain / "params.yaml").read_text())["equivalence"]["base_sizes"][0]
    assert len(reads) == len(GAFI) + 4 + len(REALFAKE) + 1 and all(reads.values())
    assert {"gafi.threshold", "gafi.stddev", "gafi.cas.train.lr", "seed", "gafi.headline_trials"} <= set(reads["cas_final"])
    # A foreach stage checks that its item is one of its list's (DVC's foreach), and augment@<n> stops before
    # training when no base size of the grid gets a real cell: reads that change no output. Declaring the
    # lists would rerun every instance when one is added.
    lists = {"gafi.generator_seeds": "@0", "equivalence.base_sizes": f"@{n_base}"}
    undeclared = {stage: [k for k in keys if not is_declared(k, declared_params(chain, stage))
                          and not (k in lists and stage.endswith(lists[k]))] for stage, keys in reads.items()}
    assert {stage: keys for stage, keys in undeclared.items() if keys} == {}


def test_each_stage_logs_exactly_the_params_dvc_yaml_declares_for_it(chain):
    from mlflow.tracking import MlflowClient

    from synthgap.config import flatten
    from synthgap.staging import declared_params, is_declared

    written = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))  # every key written out there
    client = MlflowClient(f"sqlite:///{chain / 'mlflow.db'}")
    for stage in ("train_generator@0", "select_checkpoint@0", "cas_final", "augment@40", "evaluate_realfake"):
        run_id = read(chain, "reports", "metrics", f"{stage}.json")["mlflow_run_id"]
        logged = set(client.get_run(run_id).data.params)
        declared = declared_params(chain, stage)
        assert logged == {k for k in written if is_declared(k, declared)}, stage
    assert not any(k.startswith("gafi.gan.") for k in client.get_run(
        read(chain, "reports", "metrics", "cas_final.json")["mlflow_run_id"]).data.params)
