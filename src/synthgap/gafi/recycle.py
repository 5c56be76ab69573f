"""Dynamic Dataset Recycle: the synthetic training set is regenerated in full every N epochs.

:class:`RecycledSet` is a training set for :func:`synthgap.train.classifier.train_classifier`: called with the
epoch index, it returns the set of the current period. The set of the period starting at epoch ``e`` is
built with seed ``derive_seed(run_seed, "recycle", e)`` (the original code reseeds randomly, so its runs
cannot be repeated). ``every=None`` generates one set at epoch 0 and keeps it. A resumed run that starts
in the middle of a period regenerates that period's set from the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from synthgap.gafi.filtering import FilterStats
from synthgap.seeding import derive_seed

Maker = Callable[[int], tuple[torch.Tensor, torch.Tensor, FilterStats]]


def period_start(epoch: int, every: int | None) -> int:
    return 0 if every is None else (epoch // every) * every


@dataclass
class RecycledSet:
    make: Maker  # seed -> (x, y, stats)
    every: int | None
    run_seed: int
    log: list[dict] = field(default_factory=list)  # one entry per generated set
    _current: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = period_start(epoch, self.every)
        if self._current is None or self._current[0] != start:
            seed = derive_seed(self.run_seed, "recycle", start)
            x, y, stats = self.make(seed)
            self._current = (start, x, y)
            self.log.append({"epoch": start, "seed": seed, **stats.summary()})
        return self._current[1], self._current[2]

    def stats(self) -> dict[str, float]:
        """Totals over every set generated so far."""
        drawn = sum(entry["filter_drawn"] for entry in self.log)
        accepted = sum(entry["filter_accepted"] for entry in self.log)
        filled = sum(entry["filter_filled"] for entry in self.log)
        return {"sets_generated": len(self.log), "filter_drawn": drawn, "filter_accepted": accepted,
                "filter_filled": filled, "filter_acceptance": accepted / (drawn - filled) if drawn > filled else 1.0}
