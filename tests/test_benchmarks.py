"""The benchmark scripts run in their CI-sized mode (`--quick`) and print one JSON object with their keys.
Speed targets are checked by reading the results files, not here: timing on a shared CI machine is noise.
The generator benchmarks are in test_benchmarks_generators.py, so two xdist workers run them at once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # minutes each on a 2-core CPU: `pytest -m slow` runs them


def run_benchmark(name: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--device", "cpu", "--quick", "--no-save"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    return json.loads(out[out.index("{\n"):])


@pytest.mark.parametrize("name,keys", [
    ("classifier", {"ours_img_per_s", "baseline_img_per_s", "ratio", "projected_s_100_epochs_50k", "profile_ours"}),
    ("stacked", {"shapes", "goal"}),
])
def test_benchmark_prints_its_json(name, keys):
    result = run_benchmark(name)
    assert keys <= set(result) and result["device_type"] == "cpu" and result["command"].startswith("python -m benchmarks.")
    if name == "classifier":  # the derived numbers follow from the measured ones (up to the printed rounding)
        ours, base = result["ours_img_per_s"], result["baseline_img_per_s"]
        assert result["ratio"] == pytest.approx(ours / base, abs=0.02)
        assert result["projected_s_100_epochs_50k"]["ours"] == pytest.approx(100 * 50_000 / ours, rel=0.01)
        assert 0 < sum(r["share"] for r in result["profile_ours"]) <= 1.0 + 1e-6
    else:
        for shape in result["shapes"].values():
            assert shape["ratio"] == pytest.approx(shape["sequential_s"] / shape["stacked_s"], abs=0.02)
