"""The font-rendered digits: the Real-Fake stand-in's corpus and the held-out-fonts test set."""

from __future__ import annotations

import numpy as np
import pytest

from synthgap.data.fonts import (DEFECTS, HELD_OUT_FACES, PRETRAIN_FACES, TEMPLATES, UNNAMED, glyph, held_out_digits,
                                 render_corpus)
from synthgap.realfake.synthesis import NEGATIVE_PROMPT

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def corpus():
    return render_corpus(2000, NAMES, 8, 1, seed=3)


@pytest.mark.parametrize("face", [*PRETRAIN_FACES, *HELD_OUT_FACES])
def test_every_face_draws_ten_different_digits(face):
    shapes = [glyph(face, d) for d in "0123456789"]
    assert all(g.max() > 0.9 and min(g.shape) >= 8 for g in shapes)  # ink, at 96 px per em
    assert len({g.tobytes() for g in shapes}) == 10


def test_held_out_faces_never_enter_the_corpus(corpus):
    assert not set(PRETRAIN_FACES) & set(HELD_OUT_FACES)
    assert set(corpus.faces) == set(PRETRAIN_FACES)


def test_corpus_is_balanced_seeded_and_drawn_like_scikit_learns_digits(corpus):
    assert corpus.x.shape == (2000, 8, 8, 1) and corpus.x.dtype == np.uint8
    assert np.bincount(corpus.y).tolist() == [200] * 10
    # 32 x 32 bitmaps averaged over 4 x 4 blocks: 17 grey levels, 0..16 scaled to 0..255 (sources.load_digits)
    assert set(np.unique(corpus.x)) <= {round(k * 255 / 16) for k in range(17)}
    assert (corpus.x.reshape(2000, -1).max(1) >= 191).mean() > 0.95  # (almost) every digit has a full block of ink
    again = render_corpus(2000, NAMES, 8, 1, seed=3)
    assert np.array_equal(again.x, corpus.x) and again.captions == corpus.captions
    assert not np.array_equal(render_corpus(2000, NAMES, 8, 1, seed=4).x, corpus.x)


def test_captions_name_the_digit_vary_in_wording_and_name_the_defects(corpus):
    named = np.array([NAMES[y] in c.split(",")[0].split() for y, c in zip(corpus.y, corpus.captions)])
    assert 0.87 < named.mean() < 0.93  # a tenth of web captions say nothing of the digit
    assert not any(name in c.split() for c in np.array(corpus.captions)[~named] for name in NAMES)
    openings = {c.split(",")[0].replace(NAMES[y], "{name}") for y, c in zip(corpus.y, corpus.captions)}
    assert {t for t in TEMPLATES + UNNAMED if "{face}" not in t} <= openings
    for defect in DEFECTS:  # each on about 7.5 % of the images
        share = np.mean([c.endswith(", " + defect) for c in corpus.captions])
        assert 0.05 < share < 0.10, (defect, share)
    # together the defects say what Real-Fake's negative prompt says
    assert set(NEGATIVE_PROMPT.replace(",", " ").split()) <= set(" ".join(DEFECTS).replace(",", " ").split())
    noisy = np.array([c.endswith("unrealistic") for c in corpus.captions])
    rough = np.abs(np.diff(corpus.x[..., 0].astype(float), axis=1)).mean((1, 2))
    assert rough[noisy].mean() > 1.2 * rough[~noisy].mean()
    blurry = np.array([c.endswith("blurry") for c in corpus.captions])
    cropped = np.array([c.endswith("out of frame") for c in corpus.captions])
    sharpness = np.abs(np.diff(corpus.x[..., 0].astype(float), axis=2)).mean((1, 2))
    assert sharpness[blurry].mean() < 0.8 * sharpness[~blurry].mean()  # blurred: smaller neighbour differences
    # pushed 3.5 px off centre: the ink's centre of mass is far from the middle
    ys, xs = np.mgrid[:8, :8] + 0.5
    mass = corpus.x[..., 0].astype(float) + 1e-9
    offset = np.hypot((mass * xs).sum((1, 2)) / mass.sum((1, 2)) - 4, (mass * ys).sum((1, 2)) / mass.sum((1, 2)) - 4)
    assert offset[cropped].mean() > 2 * offset[~cropped].mean()


def test_a_classifier_of_the_font_digits_reads_handwritten_digits(corpus):
    """Labels and digits agree with the real thing: a linear classifier trained on the corpus alone reads
    scikit-learn's handwritten digits far above chance (10 %), and the held-out fonts too."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(max_iter=2000).fit(corpus.x.reshape(len(corpus.y), -1) / 255.0, corpus.y)
    real = load_digits()
    assert fit.score(real.images.reshape(len(real.target), -1) / 16.0, real.target) > 0.3
    x, y = held_out_digits(500, 8, 1, seed=0)
    assert x.shape == (500, 8, 8, 1) and np.bincount(y).tolist() == [50] * 10
    assert fit.score(x.reshape(500, -1) / 255.0, y) > 0.3


def test_the_corpus_draws_digits_only():
    with pytest.raises(ValueError, match="ten digits"):
        render_corpus(10, NAMES[:3], 8, 1, seed=0)
