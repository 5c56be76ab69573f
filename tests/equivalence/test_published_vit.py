"""The Equivalence paper's ViT-B/32 tables (17-19, ImageNet-100) as transcribed, and their refit (Eq. 8 and 9)."""

import pandas as pd
import pytest

from synthgap.equivalence.fit import fit_all
from tests.conftest import REPO

CSV = REPO / "reports" / "equivalence" / "published" / "imagenet100_vit.csv"
RATIOS = (0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 3.0, 4.0)  # as for the ResNet-50 ImageNet-100 refit (REFIT.md)
N_TOTAL = 130000  # Eq. 8 and 9 write tau n_base as n_base / 13,000


@pytest.fixture(scope="module")
def table():
    return pd.read_csv(CSV)


def test_row_counts_per_table(table):
    # Table 17: bases 6,500 (6 rows) and 26,000 (5); Tables 18 and 19: 6,500 (6), 26,000 (6), 130,000 (4)
    assert table.groupby("source").size().to_dict() == {"Table 17": 11, "Table 18": 16, "Table 19": 16}
    assert table.groupby("source").setting.unique().map(list).to_dict() == {
        "Table 17": ["real"], "Table 18": ["closed"], "Table 19": ["open"]}
    assert not table.duplicated(["setting", "n_base", "n_real_added", "n_syn_added"]).any()


@pytest.mark.parametrize("setting,n_base,n_real_added,n_syn_added,accuracy,source", [
    ("real", 6500, 65000, 0, 41.21, "Table 17"),      # 6,500 + 65,000 = 71,500, 1:10
    ("real", 26000, 104000, 0, 48.91, "Table 17"),    # 26,000 + 104,000 = 130,000, 1:4
    ("closed", 6500, 0, 650, 15.54, "Table 18"),      # 1:0.1, printed (-0.03): below the base
    ("closed", 26000, 0, 130000, 32.78, "Table 18"),  # 1:5, below the 1:4 row's 33.07
    ("open", 6500, 0, 65000, 27.40, "Table 19"),      # 1:10
    ("open", 130000, 0, 130000, 52.31, "Table 19"),   # 1:1
])
def test_rows_match_the_paper(table, setting, n_base, n_real_added, n_syn_added, accuracy, source):
    row = table[(table.setting == setting) & (table.n_base == n_base) & (table.n_real_added == n_real_added)
                & (table.n_syn_added == n_syn_added)]
    assert len(row) == 1 and row.accuracy.item() == pytest.approx(accuracy, abs=1e-9) and row.source.item() == source


def test_shared_base_accuracies(table):
    # every table starts each base from the same real-only run: 15.57 (6,500), 27.59 (26,000), 48.91 (130,000,
    # which is Table 17's 26,000 + 104,000 row)
    base = table[(table.n_real_added == 0) & (table.n_syn_added == 0)]
    assert base.groupby("n_base").accuracy.unique().map(list).to_dict() == {6500: [15.57], 26000: [27.59], 130000: [48.91]}


def test_refit_of_eq9_open_set(table):
    fit = fit_all(table, N_TOTAL, ratios=RATIOS)["open"]
    assert fit.c1 == pytest.approx(1.48, rel=0.10) and fit.c2 == pytest.approx(2.16, rel=0.10)  # published Eq. 9
    assert len(fit.tuples) == 16  # 8 ratios x bases 6,500 and 26,000


def test_refit_of_eq8_closed_set(table):
    # Not reproduced: Eq. 8 publishes c1 = 0.97, c2 = 38.45. The closed-set ViT curves barely rise (at 6,500 the
    # fitted surface tops out near 20.1 % at 100 x n_base, below the real-augmentation accuracy at ratio 0.8), so
    # only 8 tuples are solvable (ratios 0.2-0.6 at 6,500, 0.2-1 at 26,000) and the pair is ill-determined. These
    # are the refit's actual values (reports/equivalence/published/REFIT.md).
    fit = fit_all(table, N_TOTAL, ratios=RATIOS)["closed"]
    assert fit.c1 == pytest.approx(0.05846, rel=1e-3) and fit.c2 == pytest.approx(6870.6, rel=1e-3)
    assert fit.r2 == pytest.approx(0.926, abs=1e-3) and len(fit.tuples) == 8
