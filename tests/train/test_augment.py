import torch

from synthgap.seeding import torch_generator
from synthgap.train.augment import augment, cutout, erasing_mask, random_crop, random_erasing, random_flip


def image_batch(n=16, c=2, h=6, w=7):
    return (torch.arange(n * c * h * w) % 250 + 1).reshape(n, c, h, w).to(torch.uint8)


def test_crop_is_a_window_of_the_zero_padded_image():
    x = image_batch()
    out = random_crop(x, 2, torch_generator(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[i, :, dy:dy + 6, dx:dx + 7], out[i])]
        assert hits, "every output must be one window of the padded input"
    assert (out == 0).any()  # some windows include the zero border
    assert torch.equal(random_crop(x, 0, torch_generator(0)), x)


def test_crop_fill_pads_with_that_value_and_draws_the_same_windows():
    x = image_batch()  # pixels 1..250: never 0 or 128
    black, grey = random_crop(x, 2, torch_generator(0)), random_crop(x, 2, torch_generator(0), fill=128)
    border = black == 0
    assert border.any() and torch.equal(grey[border], torch.full_like(grey[border], 128))
    assert torch.equal(grey[~border], black[~border])
    assert not (grey == 0).any()


def test_flip_mirrors_about_half_the_images():
    x = image_batch(n=400)
    out = random_flip(x, torch_generator(1))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 150 < sum(flipped) < 250


def test_cutout_zeroes_at_most_a_square():
    x = image_batch(n=50, h=10, w=10)
    out = cutout(x, 4, torch_generator(2))
    zeroed = (out == 0).all(1).sum((1, 2))
    assert zeroed.max() == 16 and zeroed.min() >= 4  # clipped at the border: at least 2x2 remains inside
    assert torch.equal(out[out != 0], x[out != 0])


def test_same_generator_seed_same_augmentation():
    x = image_batch()
    a = augment(x, torch_generator(5), 2, True, 3)
    b = augment(x, torch_generator(5), 2, True, 3)
    c = augment(x, torch_generator(6), 2, True, 3)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_erasing_rectangles_span_20_to_50_percent_of_each_side():
    masks = erasing_mask(2000, 32, 20, torch_generator(3), "cpu")
    rows, cols = masks.any(2), masks.any(1)
    heights, widths = rows.sum(1), cols.sum(1)
    inside = ~rows[:, 0] & ~rows[:, -1] & ~cols[:, 0] & ~cols[:, -1]  # not clipped at the border
    assert inside.sum() > 500
    # ceil(u * side), u in [0.2, 0.5): rows ceil(6.4..16) = 7..16, columns ceil(4..10) = 5..10 (4 needs u = 0.2
    # exactly), every size drawn
    assert set(heights[inside].tolist()) == set(range(7, 17)) and set(widths[inside].tolist()) == set(range(5, 11))
    assert torch.equal(masks.sum((1, 2)), heights * widths)  # one solid rectangle per image
    assert heights.min() >= 1 and widths.min() >= 1  # the centre pixel is always inside


def test_erasing_fills_the_rectangle_with_range_scaled_gaussian_noise_and_keeps_the_rest():
    n, c, h, w = 400, 3, 32, 32
    x = torch.full((n, c, h, w), 100, dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 1, 5, 5] = 40, 240  # every image's range is [40, 240]
    out = random_erasing(x, torch_generator(4))
    mask = erasing_mask(n, h, w, torch_generator(4), "cpu")[:, None].expand(-1, c, -1, -1)  # drawn first: same boxes
    assert torch.equal(out[~mask], x[~mask])
    fill = out[mask].double()
    assert fill.min() >= 40 and fill.max() <= 240
    # a standard normal min-max scaled onto [40, 240]: mean ~ 140 (mid-range), std ~ 200 / E[max - min] of
    # 3072 normals (~ 2 x 3.4); and Gaussian shape: ~68 % within one std, skew ~ 0, kurtosis ~ 3
    mean, std = fill.mean().item(), fill.std().item()
    assert abs(mean - 140) < 2 and 26 < std < 32
    z = (fill - mean) / std
    assert abs((z.abs() < 1).double().mean().item() - 0.683) < 0.01
    assert abs((z**3).mean().item()) < 0.05 and abs((z**4).mean().item() - 3) < 0.1


def test_erasing_comes_last_and_is_off_by_default():
    x = image_batch(h=10, w=10)
    plain = augment(x, torch_generator(5), 2, True, 3)
    assert torch.equal(augment(x, torch_generator(5), 2, True, 3, erasing=False), plain)
    erased = augment(x, torch_generator(5), 2, True, 3, erasing=True)
    gen = torch_generator(5)
    augment(x, gen, 2, True, 3)  # the generator as crop, flip and cutout leave it
    mask = erasing_mask(len(x), 10, 10, gen, "cpu")[:, None]
    assert torch.equal(erased.masked_fill(mask, 0), plain.masked_fill(mask, 0)) and not torch.equal(erased, plain)
