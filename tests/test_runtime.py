import os

import pytest
import torch

from synthgap.errors import UserError
from synthgap.runtime import share_cores

CORES = len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    monkeypatch.delenv("SYNTHGAP_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_stage_in_the_repository_uses_every_core(tmp_path):
    torch.set_num_threads(1)
    assert share_cores(tmp_path, tmp_path) == CORES == torch.get_num_threads()


def test_queued_experiments_divide_the_cores_among_them(tmp_path):
    exps = tmp_path / ".dvc" / "tmp" / "exps"
    for name in ("tmpa1", "tmpb2", "celery"):  # two running experiments; celery is the queue's own folder
        (exps / name).mkdir(parents=True)
    assert share_cores(exps / "tmpa1", tmp_path) == max(1, CORES // 2) == torch.get_num_threads()


def test_the_environment_variable_wins_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHGAP_THREADS", "1")
    assert share_cores(tmp_path, tmp_path) == 1 == torch.get_num_threads()
    monkeypatch.setenv("SYNTHGAP_THREADS", "two")
    with pytest.raises(UserError, match="SYNTHGAP_THREADS='two' is not a positive integer"):
        share_cores(tmp_path, tmp_path)
