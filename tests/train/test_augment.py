import torch

from synthgap.seeding import torch_generator
from synthgap.train.augment import augment, cutout, random_crop, random_flip


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
