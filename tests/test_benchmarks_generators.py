"""The generator benchmarks in their CI-sized mode (`--quick`); a file of their own so that the two xdist workers
run them beside the classifier benchmarks (each takes minutes on a 2-core CPU)."""

from __future__ import annotations

import pytest

from tests.test_benchmarks import run_benchmark

pytestmark = pytest.mark.slow  # minutes each on a 2-core CPU: `pytest -m slow` runs them


@pytest.mark.parametrize("name,keys", [
    ("recycle", {"seconds_per_epoch", "filter_acceptance", "projected_s_per_100_epochs"}),
    ("sampling", {"img_per_s"}),
])
def test_generator_benchmark_prints_its_json(name, keys):
    result = run_benchmark(name)
    assert keys <= set(result) and result["device_type"] == "cpu" and result["command"].startswith("python -m benchmarks.")
    if name == "sampling":
        assert result["img_per_s"]["gan"] and result["img_per_s"]["edm_18_steps"]
