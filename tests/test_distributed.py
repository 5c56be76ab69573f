"""Two processes on the CPU (gloo), as `torchrun --nproc_per_node 2` would start them: the GroupNorm training
loops (EDM, LoRA) give the one-process loss at every logged step to 1e-5, the BatchNorm ones (classifier, GAN;
statistics stay per process on gloo) the one-process metrics within tolerance, sharded synthesis gives exactly
the one-process set, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from synthgap.config import GanConfig, TrainConfig


def digits(n: int = 512):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images[:n] * 255 / 16).round().astype(np.uint8)).unsqueeze(1)
    return x, torch.from_numpy(d.target[:n].astype(np.int64))


def classifier_job():
    from synthgap.models import ClassifierSpec, build_classifier
    from synthgap.train.classifier import train_classifier

    x, y = digits(1500)
    torch.manual_seed(0)
    model = build_classifier(ClassifierSpec("resnet20", 10, 1, 8, width=8, mean=(0.3,), std=(0.4,)))
    cfg = TrainConfig(epochs=8, batch_size=64, lr=0.05, milestones=(6,), crop_padding=1, flip=False)
    result = train_classifier(model, (x[:1200], y[:1200]), cfg, seed=0, device="cpu",
                              evals={"test": (x[1200:], y[1200:])}, eval_every_epoch=False)
    return {"train_loss": result.history[-1]["train_loss"], "test_top1": result.final["test_top1"]}


def gan_job(out_dir):
    from synthgap.models.biggan import GanSpec
    from synthgap.train.gan import train_gan

    x, y = digits(256)
    spec = GanSpec(10, 8, 1, z_dim=16, shared_dim=8, g_width=8, d_width=8, depth=1, attention_resolution=0)
    cfg = GanConfig(z_dim=16, shared_dim=8, g_width=8, d_width=8, depth=1, attention_resolution=0, epochs=2,
                    batch_size=32, d_steps=2, ema_start=0)
    history = train_gan(spec, x, y, cfg, seed=0, device="cpu", out_dir=out_dir)
    return {"d_loss": history[-1]["d_loss"], "g_loss": history[-1]["g_loss"]}


def diffusion_job():
    from synthgap.models.unet import UNetSpec
    from synthgap.train.diffusion import train_diffusion

    x, y = digits(256)
    spec = UNetSpec(10, 8, 1, width=8, channel_mult=(1, 2), blocks=1, attention_resolution=0, dropout=0.0)
    _, history = train_diffusion(spec, x, y, steps=30, batch_size=32, lr=2e-3, ema_decay=0.9, seed=0, device="cpu",
                                 log_every=10)
    return {"losses": [h["loss"] for h in history]}


def lora_job(folder):
    from synthgap.realfake.base_model import load_base_model
    from synthgap.realfake.finetune import UnetTraining, lora_state, train_unet

    x, _ = digits(64)
    model = load_base_model(folder)
    settings = UnetTraining(steps=6, batch_size=8, lr=1e-2, resolution=8, guidance="none")
    _, history = train_unet(model, x, ["photo of digit one"] * len(x), None, settings, seed=0, log_every=2)
    return {"losses": [h["loss"] for h in history],
            "lora_norm": float(sum(v.norm() for v in lora_state(model.unet).values()))}


def synthesis_job(folder):
    from synthgap.diffusion.edm import Denoiser, sample_set
    from synthgap.gafi.filtering import filtered_sample
    from synthgap.models import ClassifierSpec, build_classifier
    from synthgap.models.biggan import GanSpec, Generator
    from synthgap.models.unet import UNet, UNetSpec
    from synthgap.noise import image_seeds
    from synthgap.realfake.base_model import load_base_model
    from synthgap.realfake.synthesis import SynthesisSpec, synthesize

    torch.manual_seed(0)
    gen = Generator(GanSpec(4, 8, 1, z_dim=16, shared_dim=8, g_width=8, depth=1, attention_resolution=0)).eval()
    judge = build_classifier(ClassifierSpec("resnet20", 4, 1, 8, width=4, mean=(0.5,), std=(0.3,))).eval()
    x, y, stats = filtered_sample(gen, judge, torch.tensor([7, 5, 6, 3]), 1.2, 0.2, base_seed=3, batch_size=8)
    denoiser = Denoiser(UNet(UNetSpec(4, 8, 1, width=8, channel_mult=(1,), blocks=1, attention_resolution=0))).eval()
    labels = torch.arange(9) % 4
    edm = sample_set(denoiser, labels, image_seeds(0, torch.arange(9)), (1, 8, 8), steps=3, batch_size=4)
    sd = synthesize(load_base_model(folder), SynthesisSpec(steps=2, resolution=8), ["photo of digit one"] * 5,
                    [1, 2, 3, 4, 5], sources=digits(5)[0], out_channels=1, out_size=8)
    return {"gan_x": x, "gan_y": y, "drawn": stats.drawn, "accepted": stats.accepted, "edm": edm, "sd": sd}


def all_jobs(tmp, folder) -> dict:
    return {"classifier": classifier_job(), "gan": gan_job(tmp / f"gan{os.environ.get('RANK', 'single')}"),
            "diffusion": diffusion_job(), "lora": lora_job(folder), "synthesis": synthesis_job(folder)}


def worker(rank: int, world: int, port: int, tmp, folder) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from synthgap.paths import atomic_write_text

    atomic_write_text(tmp / f"written_by_{rank}.txt", "x")  # rank 0 alone writes
    results = all_jobs(tmp, folder)
    torch.save(results, tmp / f"rank{rank}.pt")  # plain torch.save: the test reads every rank's results
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from synthgap.realfake.base_model import build_tiny, save_base_model

    tmp = tmp_path_factory.mktemp("ddp")
    model = build_tiny(8, ["photo", "of", "digit", "one"], tmp / "tok", seed=0, width=16, text_width=16)
    save_base_model(model, tmp / "sd")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(worker, args=(2, port, tmp, tmp / "sd"), nprocs=2, join=True)
    single = all_jobs(tmp, tmp / "sd")
    return tmp, single, [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_training_loops_match_one_process(runs):
    _, single, (rank0, rank1) = runs
    for job in ("classifier", "gan", "diffusion", "lora"):
        assert rank0[job] == rank1[job], job  # every process ends with the same model and metrics
    assert rank0["classifier"]["test_top1"] == pytest.approx(single["classifier"]["test_top1"], abs=3.0)
    assert rank0["classifier"]["train_loss"] == pytest.approx(single["classifier"]["train_loss"], abs=0.1)  # BatchNorm: per process on gloo
    for key in ("d_loss", "g_loss"):
        assert rank0["gan"][key] == pytest.approx(single["gan"][key], abs=0.15)
    # GroupNorm networks: each logged step's loss (the global batch's, all-reduced) equals one process's up to
    # float summation order; averaging gradients wrongly (a sum, or one rank's) moves them by far more
    assert len(single["diffusion"]["losses"]) == 3 and len(single["lora"]["losses"]) == 3
    assert rank0["diffusion"]["losses"] == pytest.approx(single["diffusion"]["losses"], rel=1e-5)
    assert rank0["lora"]["losses"] == pytest.approx(single["lora"]["losses"], rel=1e-5)
    assert rank0["lora"]["lora_norm"] == pytest.approx(single["lora"]["lora_norm"], rel=1e-5)


def test_sharded_synthesis_equals_one_process(runs):
    _, single, ranks = runs
    for result in ranks:
        for key in ("gan_x", "gan_y", "edm", "sd"):
            assert torch.equal(result["synthesis"][key], single["synthesis"][key]), key
        assert result["synthesis"]["drawn"] == single["synthesis"]["drawn"]
        assert result["synthesis"]["accepted"] == single["synthesis"]["accepted"]


def test_only_rank_zero_writes(runs):
    tmp, _, _ = runs
    assert (tmp / "written_by_0.txt").is_file() and not (tmp / "written_by_1.txt").exists()
    assert not list(tmp.glob(".written_by_1.txt.*"))  # no temporary file left behind either


def test_a_stage_under_torchrun_logs_one_run_and_writes_its_outputs_once(tmp_path):
    """`torchrun --nproc_per_node 2 -m stages.train_reference` (gloo on the CPU), as the README says to run
    any stage on several devices: one MLflow run, finished, whose id the one metrics file holds; the
    classifier and the tables written once by rank 0."""
    import subprocess
    import sys

    from synthgap.tracking import get_client
    from tests.stages.test_stages import run_stage_here, stage_env, workspace

    ws = workspace(tmp_path, **{"trials: 2": "trials: 1"})
    assert run_stage_here("prepare_data", ws).returncode == 0
    env = stage_env() | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "stages.train_reference"], cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = get_client(f"sqlite:///{ws / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("common")
    runs = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'train_reference'")
    assert [r.info.status for r in runs] == ["FINISHED"]
    metrics = json.loads((ws / "reports" / "metrics" / "train_reference.json").read_text())
    assert metrics["mlflow_run_id"] == runs[0].info.run_id and metrics["test_top1"] > 25
    assert (ws / "models" / "train_reference" / "classifier.pt").is_file()
    assert not list(ws.rglob("*.tmp*")) and not list((ws / "reports").rglob(".*"))  # no leftover temporary file
