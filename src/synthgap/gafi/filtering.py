"""Dynamic Sample Filtering with a bounded number of rounds.

The rule: a sample generated for class c is kept iff the real-data classifier predicts c AND its softmax
probability of c is strictly above the threshold (``p[c] > t``, as in the GaFi code; with ``t = 0`` only
wrongly classified samples are dropped). Candidates of each class are numbered 0, 1, 2, ... and each has its
own seed, and a class keeps its first ``quota`` accepted candidates in that order, so a set does not depend
on the batch size. Each round draws, for every class still short, as many candidates as the GaFi code's
``generate_dataset`` does per attempt: the missing count while the class has accepted nothing, twice the
missing count once it has accepted something (``(class_samples - i) * (1 + (i != 0))``). After
``max_rounds`` rounds (the code's ``filtering_attempts``), classes still short are filled with fresh
unfiltered candidates (the code appends its last attempt's batch again, unfiltered, which can repeat images it
accepted), and the shortfall is reported (``filled``): the loop can never run forever, and a class the
generator has collapsed on draws its quota per round, ``max_rounds + 1`` quotas with the fill (a class that
accepts a little draws up to twice that). ``filter_acceptance`` is accepted / filtered candidates (the
fill's draws left out). The classifier predicts in fp32 whatever the precision settings (:func:`filter_probs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from synthgap.distributed import all_sum, current, gather_variable
from synthgap.gafi.sampling import candidate_seeds, generate
from synthgap.metrics import predict_logits
from synthgap.models.biggan import Generator


def filter_probs(classifier: torch.nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities (N, C) of uint8 images, always computed in fp32 (also inside an autocast region or
    on a GPU where training uses bf16): a bf16 probability can land on the other side of the threshold."""
    device = next(classifier.parameters()).device
    with torch.autocast(device.type, enabled=False):
        return torch.softmax(predict_logits(classifier, images, batch_size, precision="fp32"), dim=1)


def keep_mask(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """The filter rule on softmax probabilities (N, C) for intended labels (N,)."""
    predicted = probs.argmax(1) == labels
    confident = probs.gather(1, labels[:, None]).squeeze(1) > threshold
    return predicted & confident


@dataclass
class FilterStats:
    drawn: list[int] = field(default_factory=list)  # candidates generated per class
    accepted: list[int] = field(default_factory=list)  # kept by the rule per class
    filled: list[int] = field(default_factory=list)  # unfiltered fallback images per class
    rounds: int = 0

    def merge(self, other: FilterStats) -> FilterStats:
        if not self.drawn:
            return other
        add = lambda a, b: [x + y for x, y in zip(a, b)]  # noqa: E731
        return FilterStats(add(self.drawn, other.drawn), add(self.accepted, other.accepted),
                           add(self.filled, other.filled), max(self.rounds, other.rounds))

    def summary(self) -> dict[str, float]:
        drawn, accepted, filled = sum(self.drawn), sum(self.accepted), sum(self.filled)
        judged = drawn - filled  # the fill's candidates are drawn but never judged
        return {"filter_drawn": drawn, "filter_accepted": accepted, "filter_filled": filled,
                "filter_acceptance": accepted / judged if judged else 1.0, "filter_rounds": self.rounds}


@torch.no_grad()
def filtered_sample(generator: Generator, classifier: torch.nn.Module | None, quota: torch.Tensor, stddev: float,
                    threshold: float | None, **kw) -> tuple[torch.Tensor, torch.Tensor, FilterStats]:
    """A set with ``quota[c]`` images of class c; ``threshold=None`` (or no classifier) means no filtering.

    Under ``torchrun`` each process generates and filters the classes ``c % world == rank`` and every process
    gets the whole set back: classes are independent and candidates have their own seeds, so the set equals
    the one-process set exactly."""
    dist = current()
    if dist.world == 1:
        return _filtered_sample(generator, classifier, quota, stddev, threshold, **kw)
    mine = torch.zeros_like(quota)
    mine[dist.rank :: dist.world] = quota[dist.rank :: dist.world]
    x, y, stats = _filtered_sample(generator, classifier, mine, stddev, threshold, **kw)
    xs, ys = torch.cat(gather_variable(x)), torch.cat(gather_variable(y))
    order = torch.argsort(ys, stable=True)  # class-major, each class from one process in its own order
    device = ys.device
    total = lambda v: [int(t) for t in all_sum(torch.tensor(v, device=device))]  # noqa: E731
    rounds = int(all_sum(torch.tensor(stats.rounds, device=device), op="MAX"))
    merged = FilterStats(total(stats.drawn), total(stats.accepted), total(stats.filled), rounds)
    return xs[order], ys[order], merged


def _filtered_sample(
    generator: Generator,
    classifier: torch.nn.Module | None,
    quota: torch.Tensor,
    stddev: float,
    threshold: float | None,
    *,
    base_seed: int,
    key: tuple = (),
    max_rounds: int = 10,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor, FilterStats]:
    device = next(generator.parameters()).device
    num_classes = len(quota)
    kept: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    have = [0] * num_classes
    drawn = [0] * num_classes
    quota_list = [int(q) for q in quota]
    stats = FilterStats()
    filtering = threshold is not None and classifier is not None
    for round_index in range(max_rounds if filtering else 1):
        need = [q - h for q, h in zip(quota_list, have)]
        if max(need) <= 0:
            break
        stats.rounds = round_index + 1
        labels, seeds, starts = [], [], []
        for c in range(num_classes):
            if need[c] <= 0:
                continue
            count = need[c] * (2 if filtering and have[c] > 0 else 1)
            labels.append(torch.full((count,), c, dtype=torch.long))
            seeds.append(candidate_seeds(base_seed, c, drawn[c], count, *key))
            starts.append((c, count))
            drawn[c] += count
        labels_t, seeds_t = torch.cat(labels), torch.cat(seeds)
        images = generate(generator, labels_t, seeds_t, stddev, batch_size)
        labels_t = labels_t.to(device)
        if filtering:
            probs = filter_probs(classifier, images, batch_size)
            mask = keep_mask(probs, labels_t, threshold)
        else:
            mask = torch.ones(len(labels_t), dtype=torch.bool, device=device)
        offset = 0
        for c, count in starts:
            accepted = images[offset : offset + count][mask[offset : offset + count]]
            take = accepted[: need[c]]
            kept[c].append(take)
            have[c] += len(take)
            offset += count
    stats.drawn = drawn
    stats.accepted = list(have)
    stats.filled = [0] * num_classes
    short = [q - h for q, h in zip(quota_list, have)]
    for c in range(num_classes):  # bounded fallback: unfiltered candidates fill what filtering could not
        if short[c] > 0:
            seeds = candidate_seeds(base_seed, c, drawn[c], short[c], *key)
            kept[c].append(generate(generator, torch.full((short[c],), c, dtype=torch.long), seeds, stddev, batch_size))
            stats.filled[c] = short[c]
            stats.drawn[c] += short[c]
    spec = generator.spec
    empty = torch.zeros((0, spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8, device=device)
    x = torch.cat([torch.cat(parts) for parts in kept if parts]) if any(kept) else empty
    y = torch.cat([torch.full((quota_list[c],), c, dtype=torch.long, device=device) for c in range(num_classes)])
    return x, y, stats
