"""A finished LoRA finetune stays in its state file until the stage commits, and a rerun loads it instead of training."""

import copy

import numpy as np
import pytest
import torch

from synthgap import staging
from synthgap.realfake import finetune
from synthgap.realfake.base_model import build_tiny
from synthgap.realfake.finetune import UnetTraining, lora_state, save_adapter, train_unet
from synthgap.train.state import load_state

WORDS = ["photo", "of", "digit", "zero"]
SETTINGS = UnetTraining(steps=4, batch_size=8, lr=1e-2, resolution=8)


@pytest.fixture(scope="module")
def images():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy((d.images[:32] * 255 / 16).round().astype(np.uint8)).unsqueeze(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny(8, WORDS, tmp_path_factory.mktemp("tok"), seed=0, width=16, text_width=16)


def finetuned(tmp_path, base, x, state, **kw):
    model = copy.deepcopy(base)
    tokens = torch.randn(len(x), 12, generator=torch.Generator().manual_seed(0))  # 12 wide: a projection trains
    projection, log = train_unet(model, x, ["photo of digit zero"] * len(x), tokens, SETTINGS, seed=1, log_every=1,
                                 state_path=state, **kw)
    adapter = tmp_path / f"adapter{len(list(tmp_path.glob('adapter*')))}.pt"
    save_adapter(adapter, model.unet, SETTINGS.lora, projection, {"variant": "full"})
    return model, projection, log, adapter


def test_a_finished_run_is_kept_until_the_stage_commits_and_loaded_instead_of_trained(tmp_path, base, images,
                                                                                     monkeypatch):
    state = tmp_path / ".synthgap" / "state" / "finetune.pt"
    with pytest.raises(RuntimeError), staging.transaction(tmp_path):  # the stage fails after its training
        model, projection, log, adapter = finetuned(tmp_path, base, images, state, state_every=3)
        raise RuntimeError("a later step of the stage fails")
    assert load_state(state, {"cfg": finetune.asdict(SETTINGS), "seed": 1, "n": 32, "world": 1}, "cpu")["step"] == 4

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(finetune, "diffusion_loss", no_training)
    with staging.transaction(tmp_path):  # the rerun loads the finished result, and the stage succeeds
        again, projection2, log2, adapter2 = finetuned(tmp_path, base, images, state, state_every=3)
        assert state.exists()  # until the outputs are in place
    assert not state.exists()
    assert log2 == log
    assert all(torch.equal(a, b) for a, b in zip(lora_state(model.unet).values(), lora_state(again.unet).values()))
    assert projection is not None and all(torch.equal(a, b) for a, b in zip(projection.state_dict().values(),
                                                                            projection2.state_dict().values()))
