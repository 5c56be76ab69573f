import torch

from synthgap.gafi.filtering import FilterStats
from synthgap.gafi.recycle import RecycledSet, period_start
from synthgap.seeding import derive_seed


def maker(calls):
    def make(seed):
        calls.append(seed)
        return torch.full((2, 1, 1, 1), seed % 256, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), FilterStats([2], [2], [0], 1)
    return make


def test_regenerates_every_n_epochs_with_seeds_from_run_seed_and_epoch():
    calls = []
    source = RecycledSet(maker(calls), every=3, run_seed=11)
    for epoch in range(8):
        source(epoch)
    assert [entry["epoch"] for entry in source.log] == [0, 3, 6]
    assert calls == [derive_seed(11, "recycle", e) for e in (0, 3, 6)]
    assert source.stats()["sets_generated"] == 3


def test_none_generates_once_and_every_epoch_regenerates_each_time():
    once, each = [], []
    a, b = RecycledSet(maker(once), None, 0), RecycledSet(maker(each), 1, 0)
    for epoch in range(5):
        a(epoch), b(epoch)
    assert len(once) == 1 and len(each) == 5 and len(set(each)) == 5


def test_a_resumed_run_rebuilds_the_current_period_from_the_same_seed():
    calls = []
    RecycledSet(maker(calls), every=4, run_seed=2)(6)
    assert calls == [derive_seed(2, "recycle", 4)] and period_start(6, 4) == 4 and period_start(6, None) == 0
