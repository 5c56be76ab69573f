"""The one seed rule: trial seeds differ across trials and are identical on both sides of a comparison."""

from types import SimpleNamespace

import numpy as np
import torch

from synthgap.config import GafiConfig, TrainConfig
from synthgap.equivalence.grid import Cell as EqCell, cell_training_set
from synthgap.gafi.pipeline import Cell, GafiContext, Member
from synthgap.grid import Job, run_jobs
from synthgap.seeding import derive_seed, trial_seed
from tests.gafi.test_cas import BandGenerator


class FakeRun:
    """Records child runs as MLflow would receive them."""

    def __init__(self):
        self.children = []

    def child(self, name, params):
        record = {"name": name, "params": params, "metrics": {}}
        self.children.append(record)
        run = SimpleNamespace(run_id=f"run{len(self.children)}", log_metrics=lambda m: record["metrics"].update(m))

        class Ctx:
            def __enter__(self_inner):
                return run

            def __exit__(self_inner, *exc):
                return False

        return Ctx()


def test_trial_seed_depends_on_run_seed_and_trial_only():
    seeds = [trial_seed(0, t) for t in range(5)]
    assert len(set(seeds)) == 5
    assert seeds == [trial_seed(0, t) for t in range(5)]
    assert trial_seed(1, 0) != trial_seed(0, 0)
    assert seeds[0] == derive_seed(0, "trial", 0)


def gafi_context(trials: int) -> GafiContext:
    ctx = object.__new__(GafiContext)  # the stage loads these from a workspace; the seed rule needs none of it
    ctx.cfg = GafiConfig(cas={"model": {"width": 4}, "train": {"epochs": 1, "batch_size": 32, "milestones": [], "schedule": "constant"}})
    ctx.seed, ctx.trials, ctx.filter, ctx.synthetic_size = 0, trials, None, 64
    ctx.data = SimpleNamespace(num_classes=4)
    ctx._generators = {(0, 1): BandGenerator(), (0, 2): BandGenerator()}
    return ctx


def test_gafi_cells_share_trial_seeds_and_latents_within_a_trial():
    ctx = gafi_context(trials=3)
    cells = [Cell("a", (Member(0, 1, 1.0, None),), None), Cell("b", (Member(0, 2, 1.0, None),), 2)]
    jobs = ctx.jobs(cells)
    by_cell = {c: [j for j in jobs if j.cell == c] for c in ("a", "b")}
    assert [j.seed for j in by_cell["a"]] == [j.seed for j in by_cell["b"]] == [trial_seed(0, t) for t in range(3)]
    # same trial: the same latents (identical generators give identical sets); other trials: other sets
    xa = [j.train_set(0)[0] for j in by_cell["a"]]
    xb = [j.train_set(0)[0] for j in by_cell["b"]]
    assert all(torch.equal(a, b) for a, b in zip(xa, xb))
    assert not torch.equal(xa[0], xa[1])
    # same trial: the same classifier initialisation on both sides
    wa = [j.model.backbone.head.weight for j in by_cell["a"]]
    wb = [j.model.backbone.head.weight for j in by_cell["b"]]
    assert torch.equal(wa[0], wb[0]) and not torch.equal(wa[0], wa[1])


def test_equivalence_additions_are_redrawn_per_trial_and_paired_across_settings():
    rng = np.random.default_rng(0)
    y_train = np.repeat(np.arange(4), 50)
    x_train = np.arange(len(y_train), dtype=np.uint8).reshape(-1, 1, 1, 1)
    pool = (np.arange(400, dtype=np.int64).reshape(-1, 1, 1, 1), np.tile(np.arange(4), 100))
    base = rng.choice(len(y_train), 20, replace=False)
    real, syn = EqCell("real", 20, 20, 0), EqCell("closed", 20, 0, 20)
    picks = {t: (cell_training_set(real, x_train, y_train, base, {"closed": pool}, 4, trial_seed(0, t))[0][20:].ravel(),
                 cell_training_set(syn, x_train, y_train, base, {"closed": pool}, 4, trial_seed(0, t))[0][20:].ravel())
             for t in range(2)}
    assert not np.array_equal(picks[0][0], picks[1][0])  # real additions redrawn per trial
    assert not np.array_equal(picks[0][1], picks[1][1])  # synthetic additions redrawn per trial
    again = cell_training_set(syn, x_train, y_train, base, {"closed": pool}, 4, trial_seed(0, 0))[0][20:].ravel()
    assert np.array_equal(again, picks[0][1])
    bigger = cell_training_set(EqCell("closed", 20, 0, 40), x_train, y_train, base, {"closed": pool}, 4, trial_seed(0, 0))
    assert set(picks[0][1]) <= set(bigger[0][20:].ravel())  # nested across ratios within a trial
    assert np.bincount(pool[1][picks[0][1]], minlength=4).tolist() == [5, 5, 5, 5]  # class-balanced


def test_run_jobs_logs_one_child_per_cell_and_trial_with_its_seed(fast_train):
    from tests.conftest import separable_images
    from synthgap.models import ClassifierSpec, build_classifier
    from synthgap.train.classifier import to_device_tensors

    data = to_device_tensors(*separable_images(16), "cpu")
    jobs = []
    for cell in ("x", "y"):
        for trial in range(2):
            seed = trial_seed(5, trial)
            torch.manual_seed(derive_seed(seed, "init"))
            model = build_classifier(ClassifierSpec("resnet20", 4, 1, 8, width=4, mean=(0.3,), std=(0.3,)))
            jobs.append(Job(cell, {"cell_param": cell}, trial, seed, model, data, 64, fast_train.model_copy(update={"epochs": 1})))
    run = FakeRun()
    rows = run_jobs(run, "stage", jobs, lambda job, result: {"accuracy": result.final["test_top1"]}, device="cpu",
                    evals={"test": data})
    assert [c["name"] for c in run.children] == ["stage/x/trial=0", "stage/x/trial=1", "stage/y/trial=0", "stage/y/trial=1"]
    assert run.children[1]["params"] == {"cell_param": "x", "trial": 1, "trial_seed": trial_seed(5, 1)}
    assert all("accuracy" in c["metrics"] for c in run.children)
    assert [r["mlflow_run_id"] for r in rows] == ["run1", "run2", "run3", "run4"]
    # same data, same seed, same init: the two cells' trial 0 are the same model
    assert rows[0]["accuracy"] == rows[2]["accuracy"]
