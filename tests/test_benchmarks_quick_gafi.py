"""benchmarks/quick_gafi.py, the quick CIFAR-10 GaFi run of the GPU check, on the CPU: a fabricated CIFAR-10
ImageFolder of JPEGs, the quick preset's recipes with everything that scales run time cut (as the preset runs
cut them), a slice of 12 images per class: the 13 stages run and the results file holds their times, the
headline numbers and the GaFi verdicts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO
from tests.preset_data import CINIC10_CLASSES, balanced_labels, class_images
from tests.test_preset_runs import shrink

pytestmark = pytest.mark.slow  # thirteen stage processes: minutes on a 2-core CPU


def test_quick_gafi_runs_the_gafi_stages_on_a_slice_and_reports_them(tmp_path):
    for split, n, seed in (("train", 15, 0), ("test", 15, 1)):
        y = balanced_labels(10, n, seed)
        for i, (img, label) in enumerate(zip(class_images(y, 10, 32, 3, seed), y)):
            folder = tmp_path / "cifar" / split / CINIC10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:05d}.jpg")
    preset = shrink(yaml.safe_load((REPO / "params" / "cifar10-quick.yaml").read_text()), 10, 120, 120)
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.quick_gafi", "--cifar10", str(tmp_path / "cifar"),
                           "--preset", str(tmp_path / "quick.yaml"), "--per-class", "12", "--device", "cpu",
                           "--no-save", "--out", str(tmp_path / "tables")],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    result = json.loads(out[out.index("{\n"):])
    assert len(result["stage_seconds"]) == 13 and result["total_s"] == pytest.approx(sum(result["stage_seconds"].values()), abs=0.2)
    assert {"real_top1", "baseline_cas", "gafi_cas"} <= set(result["headline"])
    assert {"gafi_vs_baseline", "gafi_vs_real"} == set(result["comparisons"])
    assert all(result["comparisons"][c]["verdict"] in ("better", "worse", "no_difference") for c in result["comparisons"])
    assert {f"table{i}.md" for i in (1, 2, 3, 4)} <= {p.name for p in (tmp_path / "tables").iterdir()}
    assert np.isfinite(result["headline"]["gafi_cas"]["mean"])
