import pytest
import torch

from synthgap.gafi.filtering import filter_probs, filtered_sample, keep_mask
from synthgap.gafi.sampling import balanced_counts, candidate_seeds, generate, split_quota
from synthgap.metrics import predict_logits
from synthgap.models import ClassifierSpec, build_classifier
from synthgap.models.biggan import GanSpec, Generator


def tiny_generator(num_classes=3) -> Generator:
    torch.manual_seed(0)
    spec = GanSpec(num_classes, 8, 1, z_dim=8, shared_dim=8, g_width=4, d_width=4, depth=1, attention_resolution=0)
    return Generator(spec).eval()


class FixedClassifier(torch.nn.Module):
    """Logits from a fixed rule on the image, so tests control what the filter sees."""

    def __init__(self, rule):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.rule = rule

    def forward(self, x):
        return self.rule(x) + 0 * self.anchor


def test_keep_rule_on_hand_made_probabilities():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0], [0.34, 0.33, 0.33]])
    labels = torch.tensor([0, 0, 2, 0, 0])
    assert keep_mask(probs, labels, 0.0).tolist() == [True, False, True, True, True]
    assert keep_mask(probs, labels, 0.5).tolist() == [True, False, False, False, False]  # strictly above
    assert keep_mask(probs, labels, 0.69).tolist() == [True, False, False, False, False]
    assert keep_mask(probs, labels, 0.7).tolist() == [False] * 5


def test_balanced_counts_and_multi_generator_split():
    assert balanced_counts(23, 5).tolist() == [5, 5, 5, 4, 4]
    parts = split_quota(torch.tensor([10, 7, 3]), 4)
    assert [p.tolist() for p in parts] == [[3, 2, 1], [3, 2, 1], [2, 2, 1], [2, 1, 0]]
    assert sum(parts).tolist() == [10, 7, 3]


def test_quotas_are_met_with_only_accepted_samples():
    generator = tiny_generator()
    accept_all = FixedClassifier(lambda x: torch.nn.functional.one_hot(x.new_zeros(len(x), dtype=torch.long), 3).float() * 0)
    quota = torch.tensor([4, 5, 6])
    # a uniform classifier predicts class 0 for every image (argmax ties go to the first class)
    x, y, stats = filtered_sample(generator, accept_all, quota, 1.0, 0.0, base_seed=0, max_rounds=3, batch_size=4)
    assert y.tolist() == [0] * 4 + [1] * 5 + [2] * 6 and x.shape == (15, 1, 8, 8) and x.dtype == torch.uint8
    assert stats.accepted[0] == 4 and stats.filled[0] == 0  # class 0 is always "recognised"
    assert stats.accepted[1:] == [0, 0] and stats.filled[1:] == [5, 6]  # never recognised: bounded fallback
    assert stats.rounds == 3


def test_a_classifier_that_rejects_everything_cannot_loop_forever():
    generator = tiny_generator()
    reject = FixedClassifier(lambda x: torch.full((len(x), 3), 0.0))
    x, y, stats = filtered_sample(generator, reject, torch.tensor([3, 3, 3]), 1.0, 0.9, base_seed=1, max_rounds=5)
    assert len(y) == 9 and stats.accepted == [0, 0, 0] and stats.filled == [3, 3, 3]
    assert stats.rounds == 5 and stats.drawn == [18, 18, 18]  # its quota per round, then the fallback's quota
    assert stats.summary()["filter_acceptance"] == 0.0  # of the 45 judged candidates; the 9 fill draws are not judged


def test_each_round_draws_what_the_gafi_code_draws_per_attempt():
    generator = tiny_generator(num_classes=2)

    def rule(x):  # class 1 is recognised iff the image is bright enough
        bright = x.float().mean((1, 2, 3)) > 0.5
        return torch.stack([torch.zeros(len(x)), bright.float() * 10 - 5], 1)

    quota, rounds = 6, 4
    _, _, stats = filtered_sample(generator, FixedClassifier(rule), torch.tensor([0, quota]), 1.0, 0.5,
                                  base_seed=2, max_rounds=rounds, batch_size=5)
    # the GaFi code's loop on the same candidate stream: attempt k draws (quota - i) * (1 + (i != 0))
    stream = generate(generator, torch.ones(500, dtype=torch.long), candidate_seeds(2, 1, 0, 500), 1.0)
    ok = (stream.float().div(255).mean((1, 2, 3)) > 0.5).tolist()
    i = pos = 0
    doubled = False
    for _ in range(rounds):
        if i >= quota:
            break
        doubled |= 0 < i
        n = (quota - i) * (1 + (i != 0))
        i, pos = min(quota, i + sum(ok[pos : pos + n])), pos + n
    assert 0 < sum(ok[:pos]) and not all(ok[:pos]), "the rule must accept some but not all candidates"
    assert doubled, "a round after a partial acceptance (twice the missing count) must be exercised"
    assert stats.drawn == [0, pos + quota - i] and stats.accepted == [0, i] and stats.filled == [0, quota - i]
    assert stats.summary()["filter_acceptance"] == pytest.approx(i / pos)  # of the judged candidates


def test_unfiltered_set_and_independence_of_batch_size():
    generator = tiny_generator()
    quota = torch.tensor([5, 5, 5])
    a = filtered_sample(generator, None, quota, 1.5, None, base_seed=3, batch_size=2)
    b = filtered_sample(generator, None, quota, 1.5, None, base_seed=3, batch_size=64)
    c = filtered_sample(generator, None, quota, 1.5, None, base_seed=4, batch_size=64)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert a[2].accepted == [5, 5, 5] and a[2].filled == [0, 0, 0]


def test_filtered_set_keeps_exactly_the_first_accepted_candidates():
    generator = tiny_generator(num_classes=2)

    def rule(x):  # class 1 is recognised iff the image is bright enough
        bright = x.float().mean((1, 2, 3)) > 0.47
        return torch.stack([torch.zeros(len(x)), bright.float() * 10 - 5], 1)

    x, y, stats = filtered_sample(generator, FixedClassifier(rule), torch.tensor([0, 4]), 1.0, 0.5,
                                  base_seed=9, max_rounds=20, batch_size=3)
    # the same candidate stream, generated and judged independently
    seeds = candidate_seeds(9, 1, 0, 400)
    candidates = generate(generator, torch.ones(400, dtype=torch.long), seeds, 1.0)
    accepted = candidates[(candidates.float().div(255).mean((1, 2, 3)) > 0.47)]
    assert 4 <= len(accepted) < 400, "the rule must accept some but not all candidates"
    assert stats.filled == [0, 0] and stats.accepted == [0, 4]
    assert torch.equal(x, accepted[:4]) and y.tolist() == [1, 1, 1, 1]


def test_saved_sets_keep_labels_with_images(tmp_path):
    import numpy as np

    from synthgap.gafi.sampling import save_synthetic

    generator = tiny_generator()
    x, y, _ = filtered_sample(generator, None, torch.tensor([2, 1, 3]), 1.0, None, base_seed=0)
    save_synthetic(tmp_path / "set.npz", x, y, ("a", "b", "c"))
    with np.load(tmp_path / "set.npz") as saved:
        assert saved["x_train"].shape == (6, 8, 8, 1) and saved["y_train"].tolist() == [0, 0, 1, 2, 2, 2]
        np.testing.assert_array_equal(saved["x_train"], x.permute(0, 2, 3, 1).numpy())
        assert saved["class_names"].tolist() == ["a", "b", "c"]


def test_filter_probabilities_are_fp32_even_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_classifier(ClassifierSpec("resnet20", 3, 1, 8, width=4, mean=(0.5,), std=(0.3,))).eval()
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        reference = torch.softmax(model(images.float() / 255.0), dim=1)  # a plain fp32 forward pass
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = filter_probs(model, images, batch_size=16)
        bf16 = torch.softmax(predict_logits(model, images, 16, precision="auto"), dim=1)  # what autocast alone gives
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, reference, rtol=1e-6, atol=1e-7)
    assert (bf16 - reference).abs().max() > 1e-4  # bf16 would have moved them
