import numpy as np

from synthgap.equivalence.figures import contour, contour_grid
from synthgap.equivalence.fit import AccuracyModel, SettingFit


def steep_fit() -> SettingFit:
    # accuracy = 30 ln(n_real) - 100: 107.9 % at n_real = 1000 (n_base 250 + 3x real), 24.3 % at n_real = 64
    model = AccuracyModel(("log_real",), np.array([30.0, -100.0]), 1e-3, 1.0)
    return SettingFit("closed", 0.9, 2.0, 1e-4, 1.0, ("log_real",), {64: model, 250: model}, [])


def test_contour_values_are_clipped_at_100_percent(tmp_path):
    fit = steep_fit()
    assert fit.models[250](1000, 0)[0] > 107  # the surface itself overshoots
    real, syn, acc = contour_grid(fit, 250, points=30)
    assert acc.max() == 100.0 and acc.min() >= 0
    assert real.max() == 3.0 and syn.max() == 5.0
    # below 100 the values are the model's
    _, _, low = contour_grid(fit, 64, points=30)
    assert low.max() < 100 and np.isclose(low[0, 0], 30 * np.log(64 + 1e-3) - 100)
    contour(fit, 250, tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").is_file()
