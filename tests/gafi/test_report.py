"""GaFi's tables and comparisons from summarised grid rows (hand-made per-trial values)."""

import pytest

from synthgap.gafi import report


def row(values, **params):
    return {"cas": sum(values) / len(values), "cas_trials": values, **params}


def test_tables_show_mean_and_interval_and_comparisons_pair_trials():
    real = [98.0, 99.0, 98.5]
    baseline = row([60.0, 62.0, 61.0], stddev=1.0, threshold="none")
    final = row([80.0, 83.0, 81.0], checkpoint=30, stddev=2.0, threshold=0.0)
    multi = [row([79.0, 82.0, 80.5], num_generators=2)]
    filtering = [row([61.0, 63.0, 62.0], threshold=0.5)]  # +1 in every trial
    recycle = [row([59.0, 64.0, 61.0], recycle=5)]  # -1, +2, 0
    stddev = [row([60.0, 62.0, 61.0], stddev=1.0, threshold="none"), row([70.0, 71.0, 72.0], stddev=2.0, threshold="none"),
              row([72.0, 73.0, 74.0], stddev=2.0, threshold=0.0), row([61.0, 62.5, 61.5], stddev=1.0, threshold=0.0)]
    t4 = report.table4("digits", real, baseline, final, multi)
    assert t4[0]["digits"].startswith("98.50 ± ") and t4[2]["Gap to Real Data"] == f"{98.5 - 81.333333:.2f}"
    assert report.table1("digits", baseline, filtering)[0]["0.5"].startswith("62.00 ± ")
    comps = {c["name"]: c for c in report.comparisons(real, baseline, final, multi, filtering, recycle, stddev)}
    assert comps["gafi_vs_baseline"]["verdict"] == "better" and comps["gafi_vs_real"]["verdict"] == "worse"
    assert comps["filter_threshold_0.5_vs_none"]["diff_mean"] == pytest.approx(1.0)
    assert comps["filter_threshold_0.5_vs_none"]["ci95"] == pytest.approx([1.0, 1.0])  # identical gain in every trial
    assert comps["filter_threshold_0.5_vs_none"]["verdict"] == "better"
    assert comps["recycle_n5_vs_none"]["verdict"] == "no_difference"
    assert comps["filtered_vs_unfiltered_chosen_stddev"]["diff_mean"] == pytest.approx(2.0)  # stddev 2.0 was chosen
    assert comps["gafi_k2_vs_k1"]["diff_mean"] == pytest.approx((-1 - 1 - 0.5) / 3)
