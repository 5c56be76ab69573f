"""Stage compare_generators on a tiny workspace: real prepare_data / train_reference, and the upstream searches
and generators stood in by files in their formats (a random-weight GAN checkpoint, cas_final's choice, pools
with known generation seconds, an Equivalence real-data curve), so the table's cost and equivalence columns
have answers known by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthgap.gafi.sampling import save_synthetic
from synthgap.models.biggan import Generator, GanSpec
from synthgap.train.gan import save_generator
from tests.stages.test_stages import assert_one_error_line, run_in_process, run_stage_here, snapshot, workspace

SECTION = """compare_generators:
  edm_base: 50
  images: 100
  filter_rounds: 1             # a random-weight GAN: one round, then GaFi's unfiltered fallback
  classifier:
    model: {arch: resnet20, width: 4}
    train: {epochs: 2, batch_size: 64, milestones: [1], crop_padding: 1, flip: false}
"""
CLASSES = tuple(str(c) for c in range(10))


def write_pool(path: Path, count: int, seconds: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=g)
    save_synthetic(path, images, torch.arange(count) % 10, CLASSES, seconds=seconds)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    ws = workspace(tmp_path_factory.mktemp("compare"))
    (ws / "params.yaml").write_text((ws / "params.yaml").read_text() + SECTION)
    (ws / ".git").mkdir()  # a workspace root, as a clone is
    for stage in ("prepare_data", "train_reference"):
        run_in_process(ws, stage)
    torch.manual_seed(0)
    spec = GanSpec(10, 8, 1, z_dim=8, shared_dim=8, g_width=4, d_width=4, depth=1, attention_resolution=0, dataset="digits")
    for epoch in (1, 2):
        save_generator(Generator(spec).eval(), ws / "models" / "train_generator" / "0" / f"epoch_{epoch:04d}.pt", epoch)
    (ws / "reports" / "gafi").mkdir(parents=True)
    member = {"generator_seed": 0, "checkpoint": 1, "stddev": 1.5, "threshold": 0.0}
    (ws / "reports" / "gafi" / "cas_final.json").write_text(json.dumps({"best": {"members": [member], "recycle": 1}}))
    cells = [{"setting": "real", "n_base": 50, "n_real_added": 0, "accuracy": 5.0},
             {"setting": "real", "n_base": 50, "n_real_added": 150, "accuracy": 95.0},
             {"setting": "closed", "n_base": 50, "n_real_added": 0, "accuracy": 99.0}]
    (ws / "reports" / "equivalence" / "augment").mkdir(parents=True)
    (ws / "reports" / "equivalence" / "augment" / "50.json").write_text(json.dumps({"cells": cells}))
    write_pool(ws / "data" / "synthetic" / "sample_diffusion" / "50.npz", 400, seconds=2.0, seed=1)
    for mode, seed in (("txt2img", 2), ("img2img", 3)):
        write_pool(ws / "data" / "synthetic" / "synthesize_realfake" / f"full_{mode}.npz", 400, seconds=8.0, seed=seed)
    run_in_process(ws, "compare_generators")
    return ws


def table(ws: Path) -> dict[str, dict]:
    with (ws / "reports" / "synthgap" / "table.csv").open() as f:
        return {row["source"]: row for row in csv.DictReader(f)}


def test_every_source_is_a_row_with_cas_gap_equivalent_quality_and_cost(ws):
    rows = table(ws)
    assert list(rows) == ["gan", "gan_gafi", "edm", "edm_gafi", "txt2img", "txt2img_gafi", "img2img", "img2img_gafi"]
    # pools: the seconds the file records per image, x 1,000 (2 s / 400 images; 8 s / 400 images)
    assert float(rows["edm"]["s / 1,000 images"]) == pytest.approx(5.0, abs=1e-3)
    assert float(rows["txt2img"]["s / 1,000 images"]) == pytest.approx(20.0, abs=1e-3)
    assert float(rows["edm_gafi"]["s / 1,000 images"]) >= 5.0  # rejected images cost too
    assert float(rows["gan"]["s / 1,000 images"]) > 0  # measured while the sets are made
    data = json.loads((ws / "reports" / "synthgap" / "compare_generators.json").read_text())
    for source, row in data["sources"].items():
        assert len(row["cas_trials"]) == 2 and row["cas"] == pytest.approx(np.mean(row["cas_trials"]))
        # the curve runs from 5 % at 50 images to 95 % at 200: n = 50 * 4 ** ((CAS - 5) / 90) inside it
        relation, n = row["equivalent"]["relation"], row["equivalent"]["n"]
        expected = 50 * 4 ** ((row["cas"] - 5) / 90)
        assert (relation, n) == ("=", pytest.approx(expected, abs=0.1)) if 5 <= row["cas"] <= 95 else relation != "="
        assert set(row["quality"]) == {"frechet_distance", "diversity", "domain_accuracy"}
    assert data["real_curve"] == [[50.0, 5.0], [200.0, 95.0]]
    assert (ws / "reports" / "synthgap" / "cas_vs_cost.png").stat().st_size > 0


def test_sources_share_trial_seeds_and_each_trial_is_a_child_run(ws):
    from mlflow.tracking import MlflowClient

    data = json.loads((ws / "reports" / "synthgap" / "compare_generators.json").read_text())
    seeds = {(r["cell"], r["trial"]): r["trial_seed"] for r in data["trials"]}
    for trial in (0, 1):
        assert len({s for (cell, t), s in seeds.items() if t == trial}) == 1  # paired: one seed per trial
    assert seeds[("gan", 0)] != seeds[("gan", 1)]
    parent = json.loads((ws / "reports" / "metrics" / "compare_generators.json").read_text())["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    assert client.get_experiment(client.get_run(parent).info.experiment_id).name == "synthgap"
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted((r.data.params["source"], r.data.params["trial"]) for r in children) == sorted(
        (s, str(t)) for s in table(ws) for t in (0, 1))
    assert {r.data.params["post_processing"] for r in children if r.data.params["source"] == "gan_gafi"} == {
        "GaFi: checkpoint 1, stddev 1.5, threshold 0.0, recycle 1"}


def test_summary_pairs_post_processing_within_and_families_across(ws):
    summary = json.loads((ws / "reports" / "synthgap" / "summary.json").read_text())
    names = [c["name"] for c in summary["comparisons"]]
    assert names[:4] == ["gan_gafi_vs_gan", "edm_gafi_vs_edm", "txt2img_gafi_vs_txt2img", "img2img_gafi_vs_img2img"]
    assert len(names) == 4 + 6 + 6 and "img2img_gafi_vs_edm_gafi" in names
    data = json.loads((ws / "reports" / "synthgap" / "compare_generators.json").read_text())["sources"]
    first = summary["comparisons"][0]
    assert first["diff_mean"] == pytest.approx(np.mean(np.subtract(data["gan_gafi"]["cas_trials"], data["gan"]["cas_trials"])), abs=1e-5)
    assert all(c["trials"] == 2 and c["verdict"] in ("better", "worse", "no_difference") for c in summary["comparisons"])


def test_a_set_larger_than_a_pool_and_a_missing_input_end_with_one_line_and_touch_nothing(ws):
    before, params = snapshot(ws), (ws / "params.yaml").read_text()
    try:
        (ws / "params.yaml").write_text(params.replace("images: 100", "images: 1000"))
        assert_one_error_line(run_stage_here("compare_generators", ws), "50.npz holds 40 images of class 0",
                              "compare_generators.images")
        (ws / "params.yaml").write_text(params.replace("edm_base: 50", "edm_base: 60"))
        assert_one_error_line(run_stage_here("compare_generators", ws), "sample_diffusion/60.npz not found", "dvc repro sample_diffusion@60")
    finally:
        (ws / "params.yaml").write_text(params)
    assert snapshot(ws) == before
