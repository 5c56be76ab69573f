"""Reading another stage's output: the JSON it wrote, or one line naming the stage to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgap.errors import UserError
from synthgap.gafi.pipeline import read_choice
from synthgap.paths import instance_of, item_path, read_upstream_json, upstream


def test_a_missing_upstream_output_names_the_stage_that_writes_it(tmp_path):
    with pytest.raises(UserError) as err:
        upstream(tmp_path / "cas_final.json", "cas_final")
    assert err.value.line() == f"synthgap: error: {tmp_path / 'cas_final.json'} not found; run `dvc repro cas_final` first"
    (tmp_path / "cas_final.json").write_text('{"best": {"cas": 81.5}}')
    assert read_upstream_json(tmp_path / "cas_final.json", "cas_final") == {"best": {"cas": 81.5}}


def test_a_search_choice_names_the_seeded_stage_instance(tmp_path):
    path = tmp_path / "reports" / "gafi" / "tune_stddev" / "3.json"
    with pytest.raises(UserError, match=r"run `dvc repro tune_stddev@3` first"):
        read_choice(path)
    path.parent.mkdir(parents=True)
    path.write_text('{"rows": [], "best": {"stddev": 1.2}}')
    assert read_choice(path) == {"stddev": 1.2}


def test_an_instance_of_a_foreach_stage_has_one_name_in_its_paths(tmp_path):
    assert item_path(tmp_path / "models" / "train_generator", 0) == tmp_path / "models" / "train_generator" / "0"
    assert item_path(Path("reports/equivalence/augment"), 100, ".json") == Path("reports/equivalence/augment/100.json")
    assert instance_of(Path("reports/equivalence/augment/100.json")) == "augment@100"
    assert instance_of(Path("data/synthetic/sample_diffusion/400.npz")) == "sample_diffusion@400"
    assert instance_of(Path("models/train_generator/1")) == "train_generator@1"
