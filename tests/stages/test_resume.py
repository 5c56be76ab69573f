"""A training stage killed with SIGKILL resumes, when rerun, to the weights of an uninterrupted run (CPU); the GAN
stage trains on what gafi.gan.merge_train_val says, with the step counts the official loop makes."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tests.stages.test_stages import run_killed, run_stage_here, workspace

GAFI = """
gafi:
  generator_seeds: [0]
  num_generators: [1]
  gan: {z_dim: 8, shared_dim: 8, g_width: 4, d_width: 4, depth: 1, attention_resolution: 0, epochs: 4,
        batch_size: 64, d_steps: 1, ema_start: 1, ema_decay: 0.9, checkpoint_every: 2, state_every: 1}
"""


def final_weights(ws: Path) -> dict:
    payload = torch.load(ws / "models" / "train_generator" / "0" / "epoch_0004.pt", weights_only=True)
    return payload["state_dict"]


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    (tmp_path / "reference").mkdir()
    reference = workspace(tmp_path / "reference")
    (reference / "params.yaml").write_text((reference / "params.yaml").read_text() + GAFI)
    assert run_stage_here("prepare_data", reference).returncode == 0
    killed = tmp_path / "killed"
    shutil.copytree(reference, killed)
    assert run_stage_here("train_generator", reference, "0").returncode == 0  # uninterrupted, in this process

    proc = run_killed("train_generator", killed, "synthgap.train.gan", 3, "0")  # epoch 3 of 4 is lost
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state_dir = killed / ".synthgap" / "state"
    assert any(state_dir.glob("train_generator@0-*.pt")) and any((killed / "models").rglob("epoch_0002.pt"))
    assert not (killed / "models" / "train_generator" / "0" / "epoch_0004.pt").exists()

    resumed = run_stage_here("train_generator", killed, "0")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr
    a, b = final_weights(reference), final_weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(state_dir.glob("*.pt"))  # a finished run leaves no state behind


@pytest.mark.parametrize("merge", [False, True])
def test_the_gan_trains_on_train_plus_val_when_merged_and_counts_its_steps(tmp_path, merge):
    """gafi.gan.merge_train_val (the official code's GAN sees the validation images): one G step per real batch
    of 64 over 1,247 train (+ 100 val) digits, d_steps D steps each, in the stage's metrics file."""
    ws = workspace(tmp_path)
    gan = GAFI.replace("epochs: 4", "epochs: 2").replace("d_steps: 1", f"d_steps: 2, merge_train_val: {str(merge).lower()}")
    (ws / "params.yaml").write_text((ws / "params.yaml").read_text() + gan)
    assert run_stage_here("prepare_data", ws).returncode == 0
    proc = run_stage_here("train_generator", ws, "0")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((ws / "reports" / "metrics" / "train_generator@0.json").read_text())
    per_epoch = (1247 + 100) // 64 if merge else 1247 // 64
    assert (metrics["g_steps"], metrics["d_steps"]) == (2 * per_epoch, 2 * 2 * per_epoch)
