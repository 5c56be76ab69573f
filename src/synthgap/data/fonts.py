"""Digits rendered from the fonts that ship with matplotlib: the Real-Fake stand-in's "web" corpus, and a
held-out-fonts test set.

Stable Diffusion was pretrained on web images, not on the data Real-Fake finetunes it on; closing the gap
between the two is what the method is for. The embedded stand-in gets a corpus of that kind without a download:
the digits 0-9 in the TrueType faces of matplotlib's ``mpl-data/fonts/ttf`` (DejaVu Sans, Sans Mono and Serif,
STIX General, Computer Modern), drawn the way scikit-learn's digits were made (a 32 x 32 bitmap with the glyph's
height filling it, averaged over 4 x 4 blocks, 17 grey levels), with random affine (rotation, shear for slant,
scale, shift), pen width and pixel noise. Some of the images (7.5 % each) are also blurred, distorted, pushed out
of frame or drowned in noise, and their captions say so: captions vary in wording, name the digit, often the face, and any defect,
so the words of Real-Fake's negative prompt mean something to a model pretrained on them; a tenth say nothing
of the digit.

:data:`PRETRAIN_FACES` make the corpus (:func:`render_corpus`); :data:`HELD_OUT_FACES` (the Computer Modern
family) never enter it: they are the ``digits_fonts`` out-of-distribution test set (:func:`held_out_digits`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from synthgap.errors import UserError

DIGITS = "0123456789"

# face (file stem in mpl-data/fonts/ttf) -> the words a caption uses for it
PRETRAIN_FACES = {
    "DejaVuSans": "sans", "DejaVuSans-Bold": "bold sans", "DejaVuSans-Oblique": "italic sans",
    "DejaVuSans-BoldOblique": "bold italic sans",
    "DejaVuSansMono": "mono", "DejaVuSansMono-Bold": "bold mono", "DejaVuSansMono-Oblique": "italic mono",
    "DejaVuSansMono-BoldOblique": "bold italic mono",
    "DejaVuSerif": "serif", "DejaVuSerif-Bold": "bold serif", "DejaVuSerif-Italic": "italic serif",
    "DejaVuSerif-BoldItalic": "bold italic serif",
    "STIXGeneral": "roman", "STIXGeneralBol": "bold roman", "STIXGeneralItalic": "italic roman",
    "STIXGeneralBolIta": "bold italic roman",
}
HELD_OUT_FACES = {"cmr10": "roman", "cmb10": "bold roman", "cmss10": "sans", "cmtt10": "mono", "cmti10": "italic roman"}

# caption wordings; {name}: the class word, {face}: the face's words. Web captions do not always name what is
# shown: UNNAMED_RATE of them say nothing of the digit (so a prompt of defects alone, a negative prompt, is known)
TEMPLATES = ("photo of digit {name}", "the number {name}", "digit {name}", "{name}", "a {face} {name}",
             "the digit {name} in {face} type", "a printed {name}")
UNNAMED = ("a photo", "a {face} character", "an image")
UNNAMED_RATE = 0.1
# each on DEFECT_RATE of the images; together the words of Real-Fake's negative prompt
DEFECTS = ("blurry", "distorted, deformed", "cropped, out of frame", "noisy, unrealistic")
DEFECT_RATE = 0.075


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def glyph(face: str, char: str, px: int = 96) -> np.ndarray:
    """The antialiased bitmap of ``char`` in ``face`` at ``px`` pixels per em, cropped to its ink, float in [0, 1]."""
    from matplotlib import ft2font

    font = ft2font.FT2Font(str(font_dir() / f"{face}.ttf"))
    font.set_size(px, 72)
    flags = ft2font.LoadFlags.NO_HINTING if hasattr(ft2font, "LoadFlags") else ft2font.LOAD_NO_HINTING
    font.set_text(char, 0.0, flags=flags)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(image > 0.05)
    if not len(rows):
        raise ValueError(f"font {face} draws nothing for {char!r}")
    return image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def canvas(face: str, char: str, size: int) -> torch.Tensor:
    """(size, size) with the glyph's height at 15/16 of ``size`` (its width in proportion, at most that), centred."""
    ink = torch.from_numpy(glyph(face, char))
    h, w = ink.shape
    scale = (size * 15 / 16) / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = F.interpolate(ink[None, None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0, 0]
    out = torch.zeros(size, size)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = small.clamp(0, 1)
    return out


@dataclass(frozen=True)
class Corpus:
    x: np.ndarray          # uint8 (N, H, W, C)
    y: np.ndarray          # int64 digit
    captions: list[str]    # one per image
    faces: list[str]       # the face each image was drawn in


def draw(faces: list[str], digits: np.ndarray, size: int, channels: int, gen: torch.Generator,
         defects: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, size, size, channels): each digit in its face, on a 4*size canvas, randomly transformed
    (``defects[i]``: -1 none, else an index into :data:`DEFECTS`), averaged over 4 x 4 blocks to ``size``,
    plus noise, at 17 grey levels like scikit-learn's digits."""
    n, big = len(digits), 4 * size
    defects = np.full(n, -1) if defects is None else defects
    images = torch.stack([canvas(f, DIGITS[d], big) for f, d in zip(faces, digits)])[:, None]

    def uniform(lo, hi):
        return torch.empty(n).uniform_(lo, hi, generator=gen)

    angle, shear, scale = uniform(-10, 10), uniform(-0.3, 0.3), uniform(0.85, 1.05)
    shift = uniform(-1.5, 1.5), uniform(-1.5, 1.5)  # pixels of the 8 x 8 image
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    distorted, cropped = torch.from_numpy(defects == 1), torch.from_numpy(defects == 2)
    angle = torch.where(distorted, sign * uniform(25, 45), angle)
    shear = torch.where(distorted, sign * uniform(0.5, 0.8), shear)
    away = uniform(0, 2 * math.pi)
    shift = (torch.where(cropped, 3.5 * away.cos(), shift[0]), torch.where(cropped, 3.5 * away.sin(), shift[1]))
    theta = angle * math.pi / 180
    # affine_grid maps output to input coordinates: the inverse of "shear, rotate, scale, shift"
    forward = torch.zeros(n, 3, 3)
    forward[:, 0, 0], forward[:, 0, 1] = scale * theta.cos(), scale * (theta.cos() * shear - theta.sin())
    forward[:, 1, 0], forward[:, 1, 1] = scale * theta.sin(), scale * (theta.sin() * shear + theta.cos())
    forward[:, 0, 2], forward[:, 1, 2], forward[:, 2, 2] = shift[0] * 2 / size, shift[1] * 2 / size, 1.0
    grid = F.affine_grid(torch.linalg.inv(forward)[:, :2], [n, 1, big, big], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # pen width: a type face's strokes are ~1/10 em, a pen's on scikit-learn's 32 x 32 forms up to 4 px wider
    stroke = torch.randint(0, 3, (n, 1, 1, 1), generator=gen)  # 0-2 dilations by a 3 x 3 square
    widened = images
    for k in (1, 2):
        widened = F.max_pool2d(widened, 3, 1, 1)
        images = torch.where(stroke == k, widened, images)
    blurred = torch.from_numpy(defects == 0).view(n, 1, 1, 1)
    images = torch.where(blurred, gaussian_blur(images, sigma=0.6 * 4), images)
    small = F.avg_pool2d(images, 4)
    noise = torch.where(torch.from_numpy(defects == 3), uniform(0.2, 0.3), uniform(0.0, 0.06))
    small = small + noise.view(n, 1, 1, 1) * torch.randn(small.shape, generator=gen)
    levels = small.clamp(0, 1).mul(16).round().mul(255 / 16).round().to(torch.uint8)
    return levels.permute(0, 2, 3, 1).expand(-1, -1, -1, channels).numpy().copy()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    images = F.conv2d(images, k.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(images, k.view(1, 1, -1, 1), padding=(radius, 0))


def require_digits(classes: tuple[str, ...], what: str, fix: str) -> None:
    """One line saying that ``what`` draws the digits 0-9 when the dataset's classes are something else."""
    if tuple(classes) != tuple(DIGITS):
        raise UserError(f"{what} draws the digits 0-9, but the classes are {', '.join(classes[:3])}, ...", fix)


def render_corpus(n: int, names: tuple[str, ...], size: int, channels: int, seed: int) -> Corpus:
    """``n`` captioned digits (classes balanced, faces of :data:`PRETRAIN_FACES` uniform); ``names`` are the
    words for 0-9 in the captions. The same corpus for the same arguments."""
    if len(names) != 10:
        raise ValueError(f"the font corpus draws the ten digits; got {len(names)} class names")
    rng = np.random.default_rng(seed)
    digits = np.arange(n) % 10
    faces = list(rng.choice(list(PRETRAIN_FACES), size=n))
    roll = rng.random(n)
    defects = np.where(roll < len(DEFECTS) * DEFECT_RATE, (roll // DEFECT_RATE).astype(int), -1)
    captions = []
    for d, face, defect in zip(digits, faces, defects):
        wordings = UNNAMED if rng.random() < UNNAMED_RATE else TEMPLATES
        text = rng.choice(wordings).format(name=names[d], face=PRETRAIN_FACES[face])
        if defect >= 0:
            text += ", " + DEFECTS[defect]
        elif rng.random() < 0.3:
            text += ", best quality"
        captions.append(text)
    x = draw(faces, digits, size, channels, torch.Generator().manual_seed(seed), defects)
    return Corpus(x, digits.astype(np.int64), captions, faces)


def held_out_digits(n: int, size: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digits (classes balanced) in the faces of :data:`HELD_OUT_FACES`, transformed as the corpus is
    but without defects: (uint8 (n, size, size, channels), int64 labels)."""
    rng = np.random.default_rng(seed)
    digits = np.arange(n) % 10
    faces = list(rng.choice(list(HELD_OUT_FACES), size=n))
    return draw(faces, digits, size, channels, torch.Generator().manual_seed(seed)), digits.astype(np.int64)
