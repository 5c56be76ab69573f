"""GaFi's tables and comparisons from summarised grid rows (hand-made per-trial values)."""

import pytest

from synthgap.errors import UserError
from synthgap.gafi import report
from tests.conftest import REPO


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
    assert len(t4) == 4 and {r["Source"] for r in t4} == {"ours"}  # no published rows given
    assert report.table1("digits", baseline, filtering)[0]["0.5"].startswith("62.00 ± ")
    comps = {c["name"]: c for c in report.comparisons(real, baseline, final, multi, filtering, recycle, stddev)}
    assert comps["gafi_vs_baseline"]["verdict"] == "better" and comps["gafi_vs_real"]["verdict"] == "worse"
    assert comps["filter_threshold_0.5_vs_none"]["diff_mean"] == pytest.approx(1.0)
    assert comps["filter_threshold_0.5_vs_none"]["ci95"] == pytest.approx([1.0, 1.0])  # identical gain in every trial
    assert comps["filter_threshold_0.5_vs_none"]["verdict"] == "better"
    assert comps["recycle_n5_vs_none"]["verdict"] == "no_difference"
    assert comps["filtered_vs_unfiltered_chosen_stddev"]["diff_mean"] == pytest.approx(2.0)  # stddev 2.0 was chosen
    assert comps["gafi_k2_vs_k1"]["diff_mean"] == pytest.approx((-1 - 1 - 0.5) / 3)


PUBLISHED = REPO / "src" / "synthgap" / "gafi" / "published_table4.csv"


def test_published_table4_is_the_papers_and_its_gaps_are_real_minus_cas():
    rows = report.read_published(PUBLISHED)
    by = {(r["dataset"], r["method"], r["num_generators"]): r for r in rows}
    assert {d for d, _, _ in by} == {"fashion_mnist", "cifar10", "cifar100", "cinic10", "dermamnist"}
    assert len(rows) == 5 * 6 + 2 * 4  # Real Data, Baseline, GaFi K = 1, 2, 4, 6; Dat et al. only on CIFAR-10/100
    for r in rows:
        real = by[(r["dataset"], "Real Data", None)]["cas"]
        assert r["gap_to_real"] == (None if r["method"] == "Real Data" else pytest.approx(real - r["cas"], abs=0.005))
    # spot values of the paper's Table 4
    assert by[("cifar10", "Real Data", None)]["cas"] == 94.98 and by[("cifar100", "Baseline", None)]["cas"] == 57.74
    assert by[("cifar10", "GaFi", 1)]["cas"] == 92.60 and by[("dermamnist", "GaFi", 6)]["cas"] == 75.21
    assert by[("cifar100", "Dat et al.", 4)]["cas"] == 67.22 and by[("fashion_mnist", "GaFi", 2)]["cas"] == 93.98
    # the paper's "(+x%)": GaFi over Dat et al. with the same K (CIFAR-10 K=1 +4.35, CIFAR-100 K=6 +4.39)
    assert by[("cifar10", "GaFi", 1)]["cas"] - by[("cifar10", "Dat et al.", 1)]["cas"] == pytest.approx(4.35)
    assert by[("cifar100", "GaFi", 6)]["cas"] - by[("cifar100", "Dat et al.", 6)]["cas"] == pytest.approx(4.39)
    # the gaps its text quotes: Baseline 7.31 / 7.87 / 17.9 / 13.47 / 9.77, GaFi (K = 6) 1.78 on CIFAR-10
    assert [by[(d, "Baseline", None)]["gap_to_real"] for d in ("fashion_mnist", "cifar10", "cifar100", "cinic10", "dermamnist")] \
        == [7.31, 7.87, 17.90, 13.47, 9.77]
    assert by[("cifar10", "GaFi", 6)]["gap_to_real"] == 1.78


def test_table4_quotes_the_published_rows_of_its_dataset_under_ours():
    published = report.read_published(PUBLISHED)
    real, baseline = [94.0, 95.0, 94.5], row([86.0, 87.0, 86.5])
    t4 = report.table4("cifar10", real, baseline, row([90.0, 91.0, 90.5]), [], published)
    assert [r["Source"] for r in t4[:3]] == ["ours"] * 3 and all(r["Source"].startswith("quoted") for r in t4[3:])
    assert [(r["Method"], r["#Generators"], r["cifar10"], r["Gap to Real Data"]) for r in t4[3:6]] == [
        ("Real Data", "", "94.98", ""), ("Baseline", "", "87.11", "7.87"), ("Dat et al.", 1, "88.25", "6.73")]
    assert len(t4) == 3 + 10 and len(report.table4("digits", real, baseline, row([90.0]), [], published)) == 3
    wide = report.published_table4(published)
    assert [(r["Method"], r["#Generators"]) for r in wide[:4]] == [("Real Data", ""), ("Baseline", ""), ("Dat et al.", 1), ("GaFi", 1)]
    assert wide[2]["fashion_mnist"] == "-" and wide[3]["cifar10"] == "92.60 (2.38)" and wide[0]["cinic10"] == "89.05"


def test_real_data_follows_the_cas_protocol():
    summary = {"test_top1_trials": [90.0, 91.0], "best_test_top1_trials": [92.0, 93.0]}
    assert report.real_data(summary, "val") == [90.0, 91.0] and report.real_data(summary, "test") == [92.0, 93.0]
    with pytest.raises(UserError, match="best_test_top1_trials"):
        report.real_data({"test_top1_trials": [90.0]}, "test")


def test_quality_table_names_the_samples_and_the_feature_space():
    rows = [{"generator_seed": 0, "checkpoint": 20, "variant": v, "stddev": s, "threshold": t, "fid": 1.5, "is": 3.0,
             "is_std": 0.1, "kid": 0.01, "kid_std": 0.001, "features": "classifier"}
            for v, s, t in (("raw", 1.0, "none"), ("gafi", 2.0, 0.9))]
    table = report.quality_table(rows)
    assert [r["Samples"] for r in table] == ["raw (stddev 1, unfiltered)", "GaFi (stddev 2.0, threshold 0.9)"]
    assert table[0]["FID"] == "1.500" and table[0]["KID"] == "0.0100 ± 0.0010" and table[0]["Features"] == "classifier"


def test_figure2_draws_identical_trials_whose_rounded_interval_misses_the_mean(tmp_path):
    """Two identical trials: mean 10.000000149 (not rounded), interval [10.0, 10.0] (rounded): no negative error bar."""
    from synthgap.gafi.report import figure2

    rows = [{"stddev": 1.0, "threshold": t, "cas": 10.000000149011612, "cas_ci95": [10.0, 10.0]} for t in ("none", 0.0)]
    points = figure2(rows, tmp_path / "figure2.png", "cifar10")
    assert (tmp_path / "figure2.png").is_file() and len(points) == 2
