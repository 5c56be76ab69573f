"""Intervals and verdicts on inputs whose answers are computed by hand."""

import math

import pytest

from synthgap.grid import summarise
from synthgap.stats import compare, estimate, verdict

T_0975_DF2 = 4.302652729911275  # Student t quantile, two degrees of freedom (tables)
T_0975_DF4 = 2.7764451051977987


def test_interval_of_three_values_by_hand():
    est = estimate([1.0, 2.0, 3.0])  # mean 2, sample sd 1
    half = T_0975_DF2 * 1.0 / math.sqrt(3)
    assert est.mean == pytest.approx(2.0)
    assert (est.lo, est.hi) == pytest.approx((2.0 - half, 2.0 + half))
    assert est.text(2) == f"2.00 ± {half:.2f}"
    assert est.as_dict() == {"mean": 2.0, "ci95": [round(2 - half, 6), round(2 + half, 6)], "trials": 3}


def test_single_trial_has_no_interval_and_no_verdict():
    est = estimate([74.0])
    assert est.lo is None and est.text(1) == "74.0"
    assert verdict(est) == "no_difference"
    assert estimate([5.0, 5.0, 5.0]).half_width == 0.0


def test_paired_difference_uses_per_trial_differences():
    # Unpaired, these overlap heavily; paired, every trial gains exactly 1 +- 0.5.
    a = [60.0, 70.0, 80.0, 65.0, 75.0]
    b = [59.0, 68.5, 79.5, 64.0, 73.5]
    diffs = [x - y for x, y in zip(a, b)]  # 1, 1.5, 0.5, 1, 1.5
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    half = T_0975_DF4 * sd / math.sqrt(5)
    c = compare("a_vs_b", "gafi", a, b)
    assert c["diff_mean"] == pytest.approx(mean)
    assert c["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-6)
    assert c["verdict"] == "better" and c["trials"] == 5 and c["paper"] == "gafi"
    assert compare("b_vs_a", "gafi", b, a)["verdict"] == "worse"


def test_interval_containing_zero_is_no_difference():
    assert compare("x", "p", [1.0, 2.0, 3.0], [2.0, 1.0, 3.0])["verdict"] == "no_difference"


def test_cells_with_more_trials_pair_over_the_trials_both_ran():
    # a headline cell (5 trials) against a cell of 3: trial i shares its seeds on both sides, so the pairs are
    # the first three; the extra trials of the headline cell do not enter the difference
    more, fewer = [10.0, 12.0, 11.0, 0.0, 100.0], [9.0, 10.0, 10.5]
    c = compare("x", "p", more, fewer)
    assert c["trials"] == 3 and c["diff_mean"] == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    assert compare("y", "p", fewer, more)["diff_mean"] == pytest.approx(-c["diff_mean"])
    with pytest.raises(ValueError):
        estimate([])


def test_summarise_groups_trials_per_cell_in_trial_order():
    rows = [
        {"cell": "a", "threshold": 0.5, "trial": 1, "trial_seed": 11, "cas": 70.0, "filter_drawn": 10, "mlflow_run_id": "r1"},
        {"cell": "a", "threshold": 0.5, "trial": 0, "trial_seed": 10, "cas": 60.0, "filter_drawn": 20, "mlflow_run_id": "r0"},
        {"cell": "b", "threshold": 0.9, "trial": 0, "trial_seed": 10, "cas": 50.0, "filter_drawn": 5, "mlflow_run_id": "r2"},
    ]
    a, b = summarise(rows, ("cas",))
    assert a["cell"] == "a" and a["threshold"] == 0.5 and a["trials"] == 2
    assert a["cas_trials"] == [60.0, 70.0]  # sorted by trial, so cells pair trial by trial
    assert a["cas"] == 65.0 and a["filter_drawn"] == 15
    assert a["cas_ci95"] == pytest.approx([65 - 12.706204736174707 * 5, 65 + 12.706204736174707 * 5], abs=1e-4)
    assert b["cas_ci95"] is None and "trial_seed" not in a and "mlflow_run_id" not in a
