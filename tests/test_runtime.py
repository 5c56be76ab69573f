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


def test_a_process_without_torch_yet_gets_the_threads_when_torch_loads(tmp_path):
    """A report stage never loads torch (1.5 s per stage); one that does later still gets the shared cores."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from synthgap.runtime import share_cores; "
            f"p = Path({str(tmp_path)!r}); n = share_cores(p, p); loaded = 'torch' in sys.modules; "
            "import torch; print(n, loaded, torch.get_num_threads())")
    env = {**os.environ, "SYNTHGAP_THREADS": "1", "OMP_NUM_THREADS": str(CORES + 1)}  # ours wins over a stale one
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False", "1"]
