"""The stand-in's pretraining as SD's: contrastive CLIP towers, and caption dropout in the UNet's training."""

from __future__ import annotations

import copy

import pytest
import torch

from synthgap.data.fonts import render_corpus
from synthgap.realfake.base_model import build_tiny, encode_prompts
from synthgap.realfake.clip import pretrain_clip, zero_shot_accuracy
from synthgap.realfake.finetune import UnetTraining, train_unet

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def corpus():
    c = render_corpus(1000, NAMES, 8, 1, seed=0)
    return c, torch.from_numpy(c.x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(c.y)


@pytest.fixture(scope="module")
def model(tmp_path_factory, corpus):
    words = " ".join(corpus[0].captions + ["photo of digit"]).replace(",", " ").split()
    return build_tiny(8, words, tmp_path_factory.mktemp("tok"), seed=0, width=16, text_width=32)


def test_contrastive_training_aligns_the_towers_so_digits_are_read_zero_shot(model, corpus):
    c, x, y = corpus
    prompts = [f"photo of digit {n}" for n in NAMES]
    trained = copy.deepcopy(model)
    projection, log = pretrain_clip(trained, x, c.captions, steps=300, batch_size=128, lr=1e-3, seed=0)
    assert log[-1]["clip_loss"] < log[0]["clip_loss"] - 0.5
    assert zero_shot_accuracy(trained, projection, x, y, prompts) > 0.25  # chance: 0.1
    # random towers (same projection) read the digits at chance
    assert zero_shot_accuracy(model, projection, x, y, prompts) < 0.17
    held_out = render_corpus(500, NAMES, 8, 1, seed=1)  # new images and captions, same faces
    x2 = torch.from_numpy(held_out.x).permute(0, 3, 1, 2).contiguous()
    assert zero_shot_accuracy(trained, projection, x2, torch.from_numpy(held_out.y), prompts) > 0.22
    assert not any(p.requires_grad for p in trained.text_encoder.parameters())
    assert not trained.image_encoder.training


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_caption_dropout_feeds_the_empty_prompts_states_to_that_share(model, dropout, monkeypatch):
    prompts = ["photo of digit zero", "photo of digit one"] * 8
    x = torch.zeros(16, 1, 8, 8, dtype=torch.uint8)
    trained = copy.deepcopy(model)
    seen, forward = [], trained.unet.forward
    monkeypatch.setattr(trained.unet, "forward", lambda *a, **kw: seen.append(kw["encoder_hidden_states"].detach())
                        or forward(*a, **kw))
    settings = UnetTraining(steps=10, batch_size=32, lr=1e-3, resolution=8, lora=None, snr_gamma=None,
                            distribution="none", guidance="none", flip=False, caption_dropout=dropout)
    train_unet(trained, x, prompts, None, settings, seed=0, log_every=10)
    states = torch.cat(seen)
    known = encode_prompts(model, ["", "photo of digit zero", "photo of digit one"])  # the text encoder is frozen
    match = (states[:, None] - known[None]).abs().amax((2, 3)) < 1e-5  # (rows, 3)
    assert torch.all(match.sum(1) == 1)  # every row is one of the three prompts' states
    empty = match[:, 0].float().mean().item()
    assert (empty == 0.0) if dropout == 0 else (0.3 < empty < 0.5), empty


def test_the_font_corpus_refuses_a_dataset_that_is_not_the_ten_digits(tmp_path):
    import numpy as np

    from synthgap.config import RealFakeConfig
    from synthgap.data.processed import ProcessedData
    from synthgap.errors import UserError
    from synthgap.realfake.pipeline import pretrain_corpus

    x, y = np.zeros((4, 8, 8, 1), np.uint8), np.arange(4) % 2
    shirts = ProcessedData("fashion", ("shirt", "shoe"), x, y, x[:0], y[:0], x, y)
    with pytest.raises(UserError, match="set realfake.pretrain.corpus: train"):
        pretrain_corpus(RealFakeConfig(), shirts, tmp_path, seed=0)
    cfg = RealFakeConfig(pretrain={"corpus": "train"}, class_names=["shirt", "shoe"], prompt_template="photo of {name}")
    corpus = pretrain_corpus(cfg, shirts, tmp_path, seed=0)  # the train split with its prompts
    assert corpus.x is x and corpus.captions == ["photo of shirt, best quality", "photo of shoe, best quality"] * 2
    digits = ProcessedData("digits", tuple("0123456789"), x, y, x[:0], y[:0], x, y)
    fonts = pretrain_corpus(RealFakeConfig(class_names=list(NAMES)), digits, tmp_path, seed=0)
    assert len(fonts.y) == RealFakeConfig().pretrain.corpus_images and fonts.x.shape[1:] == (8, 8, 1)
