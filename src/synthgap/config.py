"""Typed, validated ``params.yaml``.

Every section of ``params.yaml`` maps to a frozen pydantic model below; the field descriptions are the
documentation of each option. A stage calls :func:`load_stage_params` with the sections it reads (the same
ones its ``dvc.yaml`` entry lists under ``params:``). Validation happens before any compute, and a bad value
ends the stage with one line that names the key, the value and what is allowed::

    synthgap: error: params.yaml: train_reference.classifier.train.lr = -0.1 is invalid (Input should be
    greater than 0); set it to an allowed value

Top-level keys that belong to no known section are rejected too, so a misspelt section is never ignored.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr, ValidationError
from pydantic import model_validator

from synthgap.errors import UserError

Float = Annotated[float, Strict()]


def _int64(value: int) -> int:
    if not -(2**63) <= value <= 2**63 - 1:
        raise ValueError("must fit in 64 bits, the integers torch accepts")
    return value


StrictInt = Annotated[int, Strict(), AfterValidator(_int64)]  # every integer setting: no bools, within int64

DATASETS = (
    "digits",
    "cifar10",
    "cifar100",
    "fashion_mnist",
    "cinic10",
    "dermamnist",
    "bloodmnist",
    "dermamnist_64",
    "bloodmnist_64",
    "imagefolder",
    "npz",
)
DatasetName = Literal[
    "digits", "cifar10", "cifar100", "fashion_mnist", "cinic10", "dermamnist", "bloodmnist", "dermamnist_64",
    "bloodmnist_64", "imagefolder", "npz"
]


class Section(BaseModel):
    """Base of every params section: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- shared keys
class DataConfig(Section):
    name: DatasetName = Field("digits", description="Dataset; `digits` is embedded and needs no download.")
    path: StrictStr | None = Field(
        None,
        description="Folder (or .npz file for `npz`) holding the raw files; null means data/raw/<name>. "
        "Relative paths are taken from the repository root.",
    )
    download: StrictBool = Field(True, description="Download public datasets that are missing from `path`.")
    image_size: StrictInt | None = Field(
        None,
        ge=4,
        le=1024,
        description="imagefolder: resize the shorter side to this and centre-crop to a square; npz: resize "
        "(Lanczos) to this square size, e.g. 28 -> 32 for the GAN, whose image size must be 4 * 2^k. "
        "Null keeps the files' size (all images must then share one size).",
    )


class TrackingConfig(Section):
    uri: StrictStr | None = Field(
        None, description="MLflow tracking URI; null means sqlite:///<repository root>/mlflow.db."
    )


Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")]


# --------------------------------------------------------------------------------------------- classifiers
class ModelConfig(Section):
    arch: Literal["resnet20", "resnet110", "resnet50", "vit_b_32"] = Field(
        "resnet20", description="resnet20/resnet110: CIFAR ResNets (6n+2); resnet50, vit_b_32: torchvision."
    )
    width: StrictInt = Field(
        64, ge=1, le=1024, description="CIFAR ResNets: stage widths w, 2w, 4w (GaFi: 64; classic: 16)."
    )
    vit_image_size: StrictInt = Field(
        224, ge=32, le=1024, multiple_of=32, description="vit_b_32: inputs are resized to this size."
    )
    shortcut: Literal["B", "A"] = Field(
        "B", description="CIFAR ResNets, where a block halves the size: B a 1x1 conv + BN projection; A (GaFi code, "
        "He et al.) parameter-free, stride-2 subsampling with the new channels zero-padded."
    )
    init: Literal["kaiming_fan_out", "he_normal"] = Field(
        "kaiming_fan_out", description="CIFAR ResNets: kaiming_fan_out = normal conv weights with std sqrt(2/fan_out), "
        "torch-default head; he_normal (GaFi code, Keras HeNormal) = conv and head weights truncated normal (2 std) "
        "with std sqrt(2/fan_in), zero head bias."
    )


class TrainConfig(Section):
    epochs: StrictInt = Field(100, ge=1, le=100_000)
    batch_size: StrictInt = Field(128, ge=2, le=65_536)
    lr: Float = Field(0.1, gt=0, le=10)
    momentum: Float = Field(0.9, ge=0, lt=1)
    nesterov: StrictBool = Field(True, description="Nesterov momentum (the GaFi code uses it).")
    weight_decay: Float = Field(1e-4, ge=0, lt=1)
    optimizer: Literal["sgd", "sgdw"] = Field(
        "sgd", description="sgd: weight decay as an L2 term in the gradient (scaled by the lr); sgdw (GaFi code, "
        "tfa SGDW): decoupled, every step multiplies each weight by 1 - weight_decay, not scaled by the lr schedule."
    )
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: tuple[StrictInt, ...] = Field(
        (60, 80), description="multistep: epochs at which lr is multiplied by `gamma`."
    )
    gamma: Float = Field(0.1, gt=0, le=1)
    warmup_epochs: StrictInt = Field(0, ge=0, description="Linear lr warm-up from 0 over this many epochs.")
    label_smoothing: Float = Field(0.0, ge=0, lt=1)
    crop_padding: StrictInt = Field(4, ge=0, le=64, description="Pad by this many pixels, then crop back.")
    crop_fill: StrictInt = Field(
        0, ge=0, le=255, description="Value of the padded pixels (uint8): 0 black (paper); the GaFi code pads 0 on "
        "images scaled to [-1, 1], mid-grey, i.e. 128.")
    flip: StrictBool = Field(True, description="Random horizontal flip.")
    cutout: StrictInt = Field(0, ge=0, le=256, description="Side of the zeroed square; 0 disables cutout.")
    erasing: StrictBool = Field(
        False, description="Random erasing, last augmentation (GaFi code: keras_cv RandomCutout): in every image a "
        "rectangle, each side 20-50 % of the image, centred at a uniform pixel and clipped at the border, is filled "
        "with Gaussian noise min-max scaled to the image's own pixel range."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU; bf16 also on CPU (fast with AMX); fp32 for strict runs."
    )
    eval_batch_size: StrictInt = Field(1024, ge=1)
    checkpoint_every: StrictInt = Field(
        5, ge=0, description="Write resumable state (.synthgap/state) every k epochs, so a killed run resumes "
        "to the weights of an uninterrupted one; 0: never.",
    )
    stack: StrictInt = Field(
        16, ge=1, le=1024, description="Train up to this many classifiers of one CIFAR-ResNet shape (the trials "
        "of a cell, the cells of a grid) as one stacked network (grouped convolutions); 1 trains them one by one. "
        "Each model's result equals its run alone up to float rounding.",
    )
    restore_best: StrictBool = Field(
        False, description="Score the val split after every epoch and end with the weights of the epoch with the "
        "best val top-1 (the first of ties; GaFi code: checkpoint on val_accuracy); needs a val split.",
    )

    @model_validator(mode="after")
    def _milestones_inside_run(self) -> TrainConfig:
        if self.schedule == "multistep":
            bad = [m for m in self.milestones if not 0 < m < self.epochs]
            if bad:
                raise ValueError(f"milestones {list(self.milestones)} must lie in 1..{self.epochs - 1} (epochs - 1)")
            if list(self.milestones) != sorted(set(self.milestones)):
                raise ValueError(f"milestones {list(self.milestones)} must be strictly increasing")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} must be smaller than epochs {self.epochs}")
        return self


class ClassifierConfig(Section):
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


# ------------------------------------------------------------------------------------------ stage sections
class PrepareDataConfig(Section):
    split_seed: StrictInt = Field(0, ge=0, description="Seed of the train/validation split and base subsets.")
    val_size: StrictInt | None = Field(
        None, ge=0, description="Validation images held out of train; null: as many as test (GaFi code)."
    )


class TrainReferenceConfig(Section):
    classifier: ClassifierConfig = ClassifierConfig()
    trials: StrictInt | None = Field(
        None, ge=1, le=100, description="Real Data trials (a headline cell, compared with Baseline and GaFi over "
        "gafi.headline_trials); null: the shared trials. Comparisons pair the trials two cells share.")
    filter: ClassifierConfig | None = Field(
        None, description="GaFi's sample filter trained with its own recipe (the GaFi code: 300 epochs, the "
        "best-validation weights) and saved as models/train_reference/classifier.pt; null: trial 0 of the Real "
        "Data classifiers is the filter.")


def check_grid(name: str, values: tuple, ok, rule: str, allow_empty: bool = False) -> None:
    """Every value of the grid ``name`` passes ``ok`` (else ``rule`` is the error); empty only with ``allow_empty``."""
    bad = [v for v in values if not ok(v)]
    if bad:
        raise ValueError(f"{name}: {rule}, got {bad}")
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")


class GanConfig(Section):
    """BigGAN-deep size and training (GaFi code: z 128, shared 128, width 128, depth 2, attention,
    Adam 2e-4 (0.5, 0.999) eps 1e-6, 3 D steps on each real batch of 192 then 1 G step, EMA 0.9999 after
    iteration 1000, flips, train + validation, fake labels = real labels)."""

    z_dim: StrictInt = Field(128, ge=1, le=4096)
    shared_dim: StrictInt = Field(128, ge=1, le=4096, description="Shared class-embedding size.")
    g_width: StrictInt = Field(128, ge=1, le=2048, description="Generator base width (stages use 4x).")
    d_width: StrictInt = Field(128, ge=1, le=2048, description="Discriminator base width (stages use 4x).")
    depth: StrictInt = Field(2, ge=1, le=8, description="Residual blocks per resolution.")
    attention_resolution: StrictInt = Field(16, ge=0, description="Self-attention at this size; 0 disables.")
    blocks: Literal["studiogan", "compact"] = Field(
        "studiogan", description="Residual block layout: 'studiogan' (the GaFi code's: learned 1x1 skips, D stem at "
        "base width, pool before the last ReLU) or 'compact' (lighter: identity skips, D stem at 4x width)."
    )
    epochs: StrictInt = Field(500, ge=1)
    batch_size: StrictInt = Field(
        192, ge=2, description="Real images per step, used by all d_steps D updates and the G update. 192 in the "
        "paper text and in effect in the official code: its config says batch_size 64 but train_gan.py feeds "
        "batches of 64 x d_updates_per_step 3 = 192, each used whole by every D step (split_batch_d_steps False).",
    )
    lr_g: Float = Field(2e-4, gt=0, le=1)
    lr_d: Float = Field(2e-4, gt=0, le=1)
    betas: tuple[Float, Float] = Field((0.5, 0.999))
    eps: Float = Field(1e-6, gt=0)
    d_steps: StrictInt = Field(
        3, ge=1, le=20, description="Discriminator updates on each real batch (fresh latents each) before its one "
        "generator update (paper and official d_updates_per_step: 3).",
    )
    random_labels: bool = Field(
        False, description="Fake labels: false = the real batch's labels for the D fake passes and the G pass "
        "(official random_labels: False); true = uniform random labels drawn for every step.",
    )
    flip: bool = Field(
        True, description="Mirror each real image left-right with probability 1/2 (official horizontal_flip: "
        "True; paper section 4).",
    )
    merge_train_val: bool = Field(
        True, description="Train the GAN on train + validation splits (official merge_train_val: True). With "
        "gafi.select_on: val the checkpoint/stddev/threshold selection then scores images the GAN was trained on.",
    )
    ema_decay: Float = Field(
        0.9999, ge=0, lt=1, description="EMA decay of G: 0.9999 in the paper text and the official config at HEAD "
        "(its first release said 0.999, fixed as a typo in commit 0f80431).",
    )
    ema_start: StrictInt = Field(
        1000, ge=0, description="The EMA is a plain copy of G up to this generator step and an average after it "
        "(official g_ema_start).",
    )
    checkpoint_every: StrictInt = Field(1, ge=1, description="Save the EMA generator every k epochs.")
    state_every: StrictInt = Field(1, ge=1, description="Write resumable training state every k epochs.")


class SearchConfig(Section):
    """GaFi's search grids (paper: checkpoints 150..500/10, stddev 1.0..2.0/0.05, threshold 0.0..0.9/0.1)."""

    checkpoints: tuple[StrictInt, ...] | None = Field(None, description="Checkpoint epochs; null: all saved.")
    stddevs: tuple[Float, ...] = Field((1.0, 1.5, 2.0))
    thresholds: tuple[Float, ...] = Field((0.0, 0.3, 0.6, 0.9))
    fast_recycle: StrictInt = Field(10, ge=1, description="N of the fast pipeline (regenerate every N epochs).")

    @model_validator(mode="after")
    def _grids(self) -> SearchConfig:
        check_grid("stddevs", self.stddevs, lambda v: v > 0, "each noise stddev must be > 0")
        check_grid("thresholds", self.thresholds, lambda v: 0 <= v < 1, "each filter threshold must lie in [0, 1)")
        return self


class AblationConfig(Section):
    """Grids of the paper's ablations on the last checkpoint: Table 1, Table 2, Figure 2."""

    thresholds: tuple[Float, ...] = Field((0.0, 0.3, 0.6, 0.9), description="Table 1 (no recycle, stddev 1).")
    recycle: tuple[StrictInt, ...] = Field((10, 5, 1), description="Table 2 (no filtering, stddev 1).")
    stddevs: tuple[Float, ...] = Field((1.0, 1.5, 2.0), description="Figure 2, with and without filtering.")

    @model_validator(mode="after")
    def _grids(self) -> AblationConfig:
        check_grid("thresholds", self.thresholds, lambda v: 0 <= v < 1, "each filter threshold must lie in [0, 1)")
        check_grid("recycle", self.recycle, lambda v: v >= 1, "each recycle period must be >= 1")
        check_grid("stddevs", self.stddevs, lambda v: v > 0, "each noise stddev must be > 0")
        return self


class GeneratorQualityConfig(Section):
    """cas_final: FID / IS / KID of the chosen generator checkpoints against the real test split."""

    images: StrictInt = Field(10_000, ge=0, description="Generated images per measurement, and real test images "
                              "(at most the test split); 0: no quality measurement.")
    inception_weights: StrictStr | None = Field(
        None, description="torch-fidelity's pt_inception-2015-12-05-6726825d.pth (relative to the repo root); "
        "null: FID / IS / KID in the filter classifier's feature space (not comparable with published numbers).")
    batch_size: StrictInt = Field(100, ge=1, le=4096, description="Images per Inception forward pass.")


class GafiConfig(Section):
    generator_seeds: tuple[StrictInt, ...] = Field((0, 1, 2, 3, 4, 5), min_length=1, description="One GAN per seed.")
    gan: GanConfig = GanConfig()
    cas: ClassifierConfig = ClassifierConfig()
    headline_trials: StrictInt | None = Field(
        None, ge=1, le=100, description="Trials of cas_baseline and cas_final (Baseline and GaFi, the headline cells "
        "of Table 4); null: the shared trials. Comparisons pair the trials two cells share.")
    synthetic_size: StrictInt | None = Field(
        None, ge=1, description="Images in a synthetic set (class-balanced); null: as many as the real train split."
    )
    filter_rounds: StrictInt = Field(10, ge=1, le=1000, description="Bounded generate-and-filter rounds per set (the "
                                     "GaFi code's filtering_attempts); each draws the code's per-attempt count.")
    filter_batch_size: StrictInt = Field(1024, ge=1)
    search: SearchConfig = SearchConfig()
    accurate_recycle: StrictInt = Field(1, ge=1, description="N of the accurate pipeline.")
    select_on: Literal["val", "test"] = Field(
        "val", description="val: select on the validation split; test: the original code (best-epoch test accuracy)."
    )
    num_generators: tuple[StrictInt, ...] = Field((1, 2, 4, 6), description="K values of the multi-generator table.")
    checkpoint: StrictInt | None = Field(None, ge=1, description="cas_final: force this checkpoint epoch.")
    stddev: Float | None = Field(None, gt=0, description="cas_final: force this noise stddev (Expansion Trick).")
    threshold: Float | None = Field(None, ge=0, lt=1, description="cas_final: force this filter threshold.")
    ablation: AblationConfig = AblationConfig()
    quality: GeneratorQualityConfig = Field(GeneratorQualityConfig(), description="Generator quality in cas_final.")

    @model_validator(mode="after")
    def _generators(self) -> GafiConfig:
        if len(set(self.generator_seeds)) != len(self.generator_seeds):
            raise ValueError(f"generator_seeds must be distinct, got {list(self.generator_seeds)}")
        too_many = [k for k in self.num_generators if not 1 <= k <= len(self.generator_seeds)]
        if too_many:
            raise ValueError(
                f"num_generators {too_many} need 1..{len(self.generator_seeds)} generators (one per generator_seeds entry)"
            )
        return self


class DiffusionConfig(Section):
    """EDM denoiser trained from scratch on a base subset (the closed-set generator). Defaults follow EDM's
    CIFAR-10 recipe (NVlabs/edm train.py / training_loop.py): the DDPM++ network, 200 Mimg in batches of 512,
    Adam lr 1e-3 ramped up over 10 Mimg, EMA half-life 500 kimg with ramp-up ratio 0.05, augmentation p = 0.12
    with augment labels, dropout 0.13."""

    width: StrictInt = Field(128, ge=4, le=1024, description="UNet base width.")
    channel_mult: tuple[StrictInt, ...] = Field((2, 2, 2), min_length=1)
    blocks: StrictInt = Field(4, ge=1, le=8, description="Residual blocks per resolution.")
    layout: Literal["ddpm++", "compact"] = Field(
        "ddpm++", description="ddpm++: EDM's DDPM++ network (residual resampling blocks, class before the mapping "
        "layers; 56 M parameters at the defaults); compact: pooling between levels (synthgap.models.unet).")
    attention_resolution: StrictInt = Field(16, ge=0, description="Self-attention at this size; 0 disables.")
    dropout: Float = Field(0.13, ge=0, lt=1)
    steps: StrictInt = Field(200_000, ge=1, description="Optimizer steps (unless duration_mimg is set).")
    duration_mimg: Float | None = Field(200.0, gt=0, description="Training length in millions of images (EDM's "
                                        "--duration, 200 on CIFAR-10); set, it decides the steps; null: steps.")
    batch_size: StrictInt = Field(512, ge=2)
    lr: Float = Field(1e-3, gt=0, le=1)
    lr_rampup_kimg: Float = Field(10_000, ge=0, description="Linear lr ramp over this many thousand images; 0: none.")
    ema_decay: Float = Field(0.9999, ge=0, lt=1, description="Per-step EMA decay, used when ema_halflife_kimg is null.")
    ema_halflife_kimg: Float | None = Field(500, gt=0, description="EMA half-life in thousands of images; null: "
                                            "ema_decay per step.")
    ema_rampup_ratio: Float | None = Field(0.05, gt=0, description="Half-life at most this fraction of the images "
                                           "seen so far; null: no ramp-up.")
    augment_p: Float = Field(0.12, ge=0, le=1, description="EDM augmentation: probability of each transform, with "
                             "augment labels fed to the network; 0: no augmentation.")
    augment_xflip: StrictBool = Field(True, description="Horizontal flips among the augmentations (off for digits).")
    state_every: StrictInt = Field(1000, ge=0, description="Write resumable state every k steps (0: never).")
    sampler_steps: StrictInt = Field(18, ge=2, le=1000, description="Heun steps N (2N - 1 evaluations).")

    def total_steps(self, batch: int) -> int:
        """Optimizer steps: ``duration_mimg`` million images in batches of ``batch``, else ``steps``."""
        return self.steps if self.duration_mimg is None else math.ceil(self.duration_mimg * 1e6 / batch)


class OpenSetConfig(Section):
    """The open-set pool of the augment stages: synthetic images from a generator trained on data beyond the
    base subset (the paper: Stable Diffusion prompted with class names)."""

    source: Literal["none", "stand_in", "path"] = Field(
        "none", description="none: closed-set runs only; stand_in: the Real-Fake base model's text-to-image set "
        "(synthesize_realfake's base_txt2img.npz: class-name prompts, no adapter; one image per training image and "
        "trial); path: the pool at `path`.")
    path: StrictStr | None = Field(None, description="source: path: labelled synthetic images made elsewhere "
                                   "(relative to the repository root).")
    format: Literal["npz", "imagefolder"] = Field("npz", description="npz: x_train/y_train; imagefolder: <class>/* with exactly the dataset's class names as folders.")

    @model_validator(mode="after")
    def _path_matches_source(self) -> OpenSetConfig:
        if (self.source == "path") != (self.path is not None):
            raise ValueError("path is read with source: path and only then (set source: path with a path, "
                             "or path: null)")
        return self


class QualityConfig(Section):
    """measure_synthetic: FID and IS need Inception weights, which cannot be downloaded here."""

    inception_weights: StrictStr | None = Field(
        None, description="torch-fidelity's pt_inception-2015-12-05-6726825d.pth (relative to the repo root); "
        "null: no FID/IS, only the reference classifier's feature-space metrics.")
    batch_size: StrictInt = Field(100, ge=1, le=4096, description="Images per Inception forward pass.")
    domain_classifier: Literal["features", "images"] = Field(
        "features", description="How domain_accuracy tells real from synthetic: features: logistic regression on "
        "the reference classifier's features (5-fold); images: the paper's appendix F, a classifier of "
        "equivalence.classifier.model's architecture trained on half of each set's images, tested on the other half.")
    domain_epochs: StrictInt = Field(10, ge=1, description="domain_classifier images: training epochs (the "
                                     "equivalence.classifier.train recipe, lr x0.1 at 50 % and 75 %).")
    images: StrictInt | None = Field(
        None, ge=2, description="Synthetic images every pool metric is computed on (paper, Table 2: 50,000 for FID "
        "and IS): sample_diffusion makes the closed-set pool at least this large, and a pool larger than this is "
        "measured on a seeded random subset of this size; an open-set pool that is smaller is measured whole "
        "(with a warning). The report states the count (n_synthetic). null: every pool as it is.")
    diversity_features: Literal["reference", "inception"] = Field(
        "reference", description="Feature space of the diversity score (mean per-class standard deviation of the "
        "features): reference: the reference classifier's penultimate features; inception: Inception-v3's 2048-d "
        "pool features, as FID uses them (needs inception_weights).")

    @model_validator(mode="after")
    def _inception_for_diversity(self) -> QualityConfig:
        if self.diversity_features == "inception" and not self.inception_weights:
            raise ValueError("diversity_features: inception needs inception_weights (torch-fidelity's Inception-v3 file)")
        return self


class BaseRatios(Section):
    """The addition ratios of one base size where they differ from the section's ``real_ratios`` /
    ``syn_ratios`` (the paper adds real images at 0.4 / 0.8 / 1.0 x n_base to CIFAR-10-Mid, none to
    CIFAR-10-Large, and open-set images at its own ratios there: Tables 9-11)."""

    n_base: StrictInt = Field(ge=1, description="One of equivalence.base_sizes.")
    real: tuple[Float, ...] | None = Field(None, description="Real additions (x n_base); null: real_ratios; []: none.")
    closed: tuple[Float, ...] | None = Field(None, min_length=1, description="Closed-set synthetic additions; null: syn_ratios.")
    open: tuple[Float, ...] | None = Field(None, description="Open-set synthetic additions; null: syn_ratios; []: none.")


class EquivalenceConfig(Section):
    base_sizes: tuple[StrictInt, ...] = Field((500, 5000, 25000), min_length=1,
                                              description="n_base values: class-proportional subsets of the train split.")
    diffusion: DiffusionConfig = DiffusionConfig()
    open_set: OpenSetConfig = OpenSetConfig()
    quality: QualityConfig = QualityConfig()
    real_ratios: tuple[Float, ...] = Field((1.0, 2.0, 3.0), description="Real additions as multiples of n_base.")
    syn_ratios: tuple[Float, ...] = Field((1.0, 2.0, 3.0, 4.0, 5.0), description="Synthetic additions as multiples of n_base.")
    classifier: ClassifierConfig = ClassifierConfig(model=ModelConfig(arch="resnet110", width=16))
    epochs_by_base: tuple[tuple[StrictInt, StrictInt], ...] = Field(
        ((500, 480), (5000, 320), (10**9, 160)),
        description="(largest n_base, epochs) pairs, appendix B: smaller bases train longer; lr x0.1 at 50 % and 75 %.",
    )
    ratios_by_base: tuple[BaseRatios, ...] = Field((), description="Per-base exceptions to real_ratios / syn_ratios.")
    merge_train_val: StrictBool = Field(
        False, description="Draw base subsets and real additions from the train and validation splits together (the "
        "paper's CIFAR-10 grid uses all 50,000 training images; prepare_data.val_size keeps GaFi's validation split).")
    fit_ratios: tuple[Float, ...] = Field((1.0, 2.0, 3.0), description="n_real+ / n_base values the fitter solves at.")
    n_total: StrictInt | None = Field(None, ge=1, description="tau = 10 / n_total; null: the full training split.")

    @model_validator(mode="after")
    def _sizes(self) -> EquivalenceConfig:
        check_grid("base_sizes", self.base_sizes, lambda v: v > 0, "each base size must be positive")
        check_grid("real_ratios", self.real_ratios, lambda v: v > 0, "each ratio must be positive")
        check_grid("syn_ratios", self.syn_ratios, lambda v: v > 0, "each ratio must be positive")
        check_grid("fit_ratios", self.fit_ratios, lambda v: v > 0, "each ratio must be positive")
        named = [r.n_base for r in self.ratios_by_base]
        for n_base in named:
            if n_base not in self.base_sizes:
                raise ValueError(f"ratios_by_base names n_base {n_base}, which is not in base_sizes {list(self.base_sizes)}")
            if named.count(n_base) > 1:
                raise ValueError(f"ratios_by_base names n_base {n_base} twice")
        for own in self.ratios_by_base:
            for setting in ("real", "closed", "open"):  # [] is allowed: no such cells
                check_grid(f"ratios_by_base[{own.n_base}].{setting}", getattr(own, setting) or (), lambda v: v > 0,
                           "each ratio must be positive", allow_empty=True)
        return self

    def ratios(self, n_base: int, setting: str) -> tuple[float, ...]:
        """The addition ratios of ``setting`` (real, closed or open) at ``n_base``: its ``ratios_by_base``
        entry, else ``real_ratios`` (real) or ``syn_ratios`` (closed, open)."""
        own = next((getattr(r, setting) for r in self.ratios_by_base if r.n_base == n_base), None)
        if own is not None:
            return tuple(own)
        return tuple(self.real_ratios if setting == "real" else self.syn_ratios)

    def train_recipe(self, epochs: int) -> TrainConfig:
        """``classifier.train`` for ``epochs`` epochs with lr x0.1 at 50 % and 75 % of them (appendix B)."""
        milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)} - {epochs})
        return TrainConfig.model_validate(self.classifier.train.model_dump() | {"epochs": epochs, "milestones": milestones})


class PretrainConfig(Section):
    """The tiny Stable Diffusion stand-in (same classes as SD-1.5, small configs), pretrained as SD was: its
    CLIP towers contrastively, then the VAE, then the UNet as a text-conditioned latent diffusion model with
    caption dropout, all on a "web" corpus that is not the data LoRA later finetunes on. Not used when
    ``base_model`` is set."""

    corpus: Literal["fonts", "train"] = Field(
        "fonts", description="fonts: digits rendered from matplotlib's fonts with varied captions "
        "(synthgap.data.fonts; digits datasets only); train: the train split with its prompts (no domain gap).")
    corpus_images: StrictInt = Field(4000, ge=10, description="Images in the fonts corpus.")
    width: StrictInt = Field(32, ge=16, le=512, multiple_of=16,
                            description="UNet base width (VAE: width/2, width; group norms of 8 channels).")
    text_width: StrictInt = Field(32, ge=8, le=1024, description="CLIP text / vision width (= cross-attention dim).")
    clip_steps: StrictInt = Field(500, ge=0, description="Contrastive steps of the CLIP towers; 0: left random.")
    clip_batch_size: StrictInt = Field(128, ge=2, description="Pairs per contrastive batch.")
    vae_steps: StrictInt = Field(300, ge=1)
    unet_steps: StrictInt = Field(600, ge=1)
    caption_dropout: Float = Field(0.1, ge=0, lt=1, description="Share of empty prompts in UNet pretraining (SD: "
                                   "0.1), the unconditional branch of classifier-free guidance.")
    batch_size: StrictInt = Field(64, ge=2)
    lr: Float = Field(1e-3, gt=0, le=1)


class FinetuneConfig(Section):
    """LoRA finetuning (released code: rank 4 on all attention projections, lr 1e-4, batch 8, min-SNR 5)."""

    rank: StrictInt = Field(4, ge=1, le=256)
    alpha: Float = Field(4.0, gt=0, description="LoRA alpha (scale alpha / rank).")
    targets: tuple[StrictStr, ...] = Field(("to_q", "to_k", "to_v", "to_out.0"), min_length=1)
    steps: StrictInt = Field(200, ge=1)
    batch_size: StrictInt = Field(8, ge=2)
    lr: Float = Field(1e-4, gt=0, le=1)
    weight_decay: Float = Field(1e-2, ge=0, lt=1, description="AdamW (decoupled) weight decay of the LoRA and "
                                "guidance-projection weights (released code: adam_weight_decay 1e-2).")
    max_grad_norm: Float | None = Field(1.0, gt=0, description="Clip the global gradient norm of the trained "
                                        "weights to this before each step (released code: 1.0); null: no clipping.")
    snr_gamma: Float | None = Field(5.0, gt=0, description="min-SNR weighting gamma; null: plain MSE.")
    distribution: Literal["mean", "kernel"] = Field(
        "mean", description="mean: the released code's linear mean match (weight 0.003); kernel: the paper's MMD (0.05).")
    distribution_weight: Float | None = Field(None, ge=0, description="null: 0.003 (mean) or 0.05 (kernel).")
    guidance: Literal["image", "class_mean"] = Field(
        "image", description="Visual guidance token: per-image CLIP embedding (code) or class mean (paper).")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field("auto", description="auto: bf16 on CUDA, none on CPU.")
    state_every: StrictInt = Field(50, ge=0, description="Write resumable state every k steps (0: never).")

    @property
    def weight(self) -> float:
        if self.distribution_weight is not None:
            return self.distribution_weight
        return 0.003 if self.distribution == "mean" else 0.05


class SynthesisConfig(Section):
    strength: Float = Field(0.75, ge=0, le=1, description="img2img noise strength (latent prior).")
    steps: StrictInt = Field(30, ge=1, le=1000, description="UniPC steps.")
    guidance_scale: Float = Field(2.0, ge=1, description="Classifier-free guidance scale.")
    lora_scale: Float = Field(0.5, ge=0, le=2)
    batch_size: StrictInt = Field(32, ge=1)


class PrivacyConfig(Section):
    shadows: StrictInt = Field(10, ge=2, le=256, description="LiRA shadow experiments (code: 10, keep 0.5).")
    fpr: tuple[Float, ...] = Field((0.001, 0.00001), min_length=1, description="Report TPR at these FPRs.")
    finetune_steps: StrictInt | None = Field(None, ge=1, description="LoRA steps per shadow; null: finetune.steps.")
    private_size: StrictInt | None = Field(
        None, ge=4, description="Train images that form the private set (class-proportional, drawn with `seed`); "
        "null: the whole train split (the paper).")
    overfit_epochs: StrictInt | None = Field(
        None, ge=1, description="A third arm, private_overfit: the private classifier without augmentation for this "
        "many epochs (a target that leaks, to show the attack works); null: none.")
    sscd_weights: StrictStr | None = Field(
        None, description="SSCD TorchScript file for copy detection; null: reference-classifier features.")


ABLATION_VARIANTS = ("base", "plain", "guidance", "matching", "full")


GENERATED_OOD = ("digits_shifted", "digits_fonts")  # made here, no folder
OOD_FORMATS = ("digits_shifted", "digits_fonts", "imagenet_v2", "imagenet_sketch", "imagenet_r", "imagenet_a", "imagefolder")


class OodSetConfig(Section):
    """One out-of-distribution test set of evaluate_realfake (paper, section 4.4: ImageNet-V2, -Sketch, -R and
    -A restricted to the training classes), read by :func:`synthgap.data.ood.load_ood`."""

    name: StrictStr = Field(pattern=r"^[a-z0-9_]+$", description="Its column in Table 1 (ood_<name>_top1).")
    format: Literal[OOD_FORMATS] = Field(  # type: ignore[valid-type]
        description="digits_shifted: the embedded digits' test split under a fixed shift (rotation, scale, noise); "
        "digits_fonts: digits in fonts the stand-in's corpus never drew (synthgap.data.fonts.HELD_OUT_FACES); "
        "imagenet_v2: <ImageNet class index>/* folders; imagenet_sketch, imagenet_r, imagenet_a, imagefolder: "
        "<class>/* folders named like the dataset's classes (WordNet ids for ImageNette); classes absent from the "
        "set (ImageNet-R and -A hold 200 of ImageNet's 1,000) are left out and named in the report.")
    path: StrictStr | None = Field(None, description="Its folder, relative to the repository root; "
                                   "digits_shifted, digits_fonts: null.")

    @model_validator(mode="after")
    def _path(self) -> OodSetConfig:
        if (self.format in GENERATED_OOD) == (self.path is not None):
            raise ValueError(f"ood set {self.name}: formats {', '.join(GENERATED_OOD)} take no path, every other "
                             "format one")
        return self


class RealFakeConfig(Section):
    base_model: StrictStr | None = Field(
        None, description="Stable Diffusion folder (diffusers layout, e.g. SD-1.5); null: the pretrained stand-in.")
    vision_model: StrictStr | None = Field(
        None, description="CLIP vision folder (CLIPVisionModelWithProjection, ViT-L/14); null: the stand-in's.")
    resolution: StrictInt = Field(512, ge=8, le=2048, multiple_of=8, description="Finetune / synthesis size.")
    class_names: tuple[StrictStr, ...] | None = Field(None, description="Words for the prompts; null: dataset names.")
    prompt_template: StrictStr = Field("photo of {name}", description="Class part of the prompt.")
    captions: StrictStr | None = Field(None, description="JSON list of one caption per training image (optional).")
    flip: StrictBool = Field(
        True, description="Mirror each training image left-right with probability 1/2 in the stand-in's UNet "
        "pretraining and in LoRA finetuning (also the privacy shadows'); released code: --random_flip (ImageNet). "
        "Set false for data that is not mirror-symmetric (digits).")
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    ablation: tuple[Literal["base", "plain", "guidance", "matching", "full"], ...] = Field(
        ABLATION_VARIANTS, min_length=1,
        description="Finetune variants of Table 2: base (no LoRA), plain (diffusion loss), guidance, matching, full.")
    scales: tuple[StrictInt, ...] = Field((1, 2, 5, 10), min_length=1, description="Table 3: synthetic set x real size.")
    classifier: ClassifierConfig = ClassifierConfig(model=ModelConfig(arch="resnet50"))
    privacy: PrivacyConfig = PrivacyConfig()
    ood: tuple[OodSetConfig, ...] = Field((), description="Out-of-distribution test sets: every evaluate_realfake "
                                    "classifier is also tested on each, a column of Table 1 per set.")

    @model_validator(mode="after")
    def _grid(self) -> RealFakeConfig:
        check_grid("scales", self.scales, lambda v: v >= 1, "each scale must be >= 1")
        if "full" not in self.ablation:
            raise ValueError("ablation must include 'full' (Tables 1 and 3 and the privacy study use it)")
        names = [s.name for s in self.ood]
        if len(set(names)) < len(names):
            raise ValueError(f"ood names must differ: {names}")
        return self


SOURCES = ("gan", "gan_gafi", "edm", "edm_gafi", "txt2img", "txt2img_gafi", "img2img", "img2img_gafi")


class CompareGeneratorsConfig(Section):
    """compare_generators: every generator family's synthetic data under one CAS protocol (the synthgap table)."""

    sources: tuple[Literal[SOURCES], ...] = Field(  # type: ignore[valid-type]
        SOURCES, min_length=1, description="gan: GaFi's Baseline set (last checkpoint, stddev 1, no filter); edm: the "
        "closed-set EDM pool of edm_base; txt2img / img2img: the Real-Fake stand-in's sets of realfake_variant; "
        "<family>_gafi: with GaFi's post-processing (the GAN as cas_final ran it; pools: the filter rule on the pool "
        "and a fresh class-balanced draw of its accepted images every `recycle` epochs).")
    images: StrictInt | None = Field(None, ge=1, description="Synthetic images per CAS set, class-balanced, the same "
                                     "for every source; null: as many as the real train split.")
    edm_base: StrictInt = Field(25000, ge=1, description="Base size whose sample_diffusion pool is the EDM source "
                                "(one of equivalence.base_sizes; its pool must hold `images` per class).")
    realfake_variant: Literal["base", "plain", "guidance", "matching", "full"] = Field(
        "full", description="Which synthesize_realfake sets are the text-to-image sources (one of realfake.ablation).")
    threshold: Float | None = Field(None, ge=0, lt=1, description="Filter threshold of the pool sources' GaFi "
                                    "post-processing; null: the one cas_final used (GaFi's search).")
    recycle: StrictInt | None = Field(None, ge=1, description="Pool sources: a fresh draw every N epochs; null: "
                                      "cas_final's N (gafi.accurate_recycle).")
    filter_rounds: StrictInt = Field(10, ge=1, le=1000, description="gan_gafi: bounded generate-and-filter rounds.")
    batch_size: StrictInt = Field(1024, ge=1, description="Images per generator / filter / feature batch.")
    classifier: ClassifierConfig = Field(ClassifierConfig(), description="The CAS classifier (as gafi.cas).")

    @model_validator(mode="after")
    def _distinct(self) -> CompareGeneratorsConfig:
        if len(set(self.sources)) != len(self.sources):
            raise ValueError(f"sources must be distinct, got {list(self.sources)}")
        return self


class SummarizeResultsConfig(Section):
    """summarize_results reads only the shared keys (``trials``)."""


SECTIONS: dict[str, type[Section]] = {
    "prepare_data": PrepareDataConfig,
    "train_reference": TrainReferenceConfig,
    "gafi": GafiConfig,
    "equivalence": EquivalenceConfig,
    "realfake": RealFakeConfig,
    "compare_generators": CompareGeneratorsConfig,
    "summarize_results": SummarizeResultsConfig,
}
COMMON_KEYS = ("seed", "trials", "device", "data", "tracking")


class CommonParams(Section):
    seed: StrictInt = Field(0, ge=0, le=2**63 - 1, description="Run seed: initialisation, shuffling, augmentation.")
    trials: StrictInt = Field(
        3, ge=1, le=100, description="Classifier trainings per table cell (trial i: seed synthgap.seeding.trial_seed(seed, i)); "
        "cells are reported as mean and 95 % interval, comparisons as paired differences over the same trials.")
    device: Device = Field("auto", description="auto picks cuda when available, else cpu.")
    data: DataConfig = DataConfig()
    tracking: TrackingConfig = TrackingConfig()


S = TypeVar("S", bound=Section)


@dataclass(frozen=True)
class StageParams(Generic[S]):
    """What one stage reads: the shared keys plus its own section."""

    stage: str
    section_name: str
    seed: int
    trials: int
    device: str
    data: DataConfig
    tracking: TrackingConfig
    section: S

    def flat(self) -> dict[str, Any]:
        """Dotted keys for MLflow, e.g. ``train_reference.classifier.train.lr``."""
        tree = {
            "seed": self.seed,
            "trials": self.trials,
            "device": self.device,
            "data": self.data.model_dump(),
            "tracking": self.tracking.model_dump(),
            self.section_name: self.section.model_dump(),
        }
        return flatten(tree)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def read_params_file(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read a params file with YAML 1.2 rules (as DVC does: ``1e-4`` is a float, ``yes`` a string). A syntax
    error or a duplicate key is reported with its line and column (1-based), e.g.
    ``params.yaml line 12, column 3: duplicate key 'lr' (first at line 9)``."""
    from ruamel.yaml import YAML, YAMLError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found", "run the stage from the repository root, where params.yaml lives")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start})", "save it as UTF-8") from None
    try:
        raw = YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise _yaml_error(path, text, err) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a mapping of sections", "see the params.yaml in the repository")
    return raw


def _yaml_error(path: Path, text: str, err: Exception) -> UserError:
    """One line from ruamel's multi-line error: where (``problem_mark``, else ``context_mark``), what, and the
    construct it was inside; a duplicate key is named with the line of its first occurrence."""
    problem, context = getattr(err, "problem", None), getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    mark = getattr(err, "problem_mark", None) or context_mark
    if mark is not None:
        where = f"{path} line {mark.line + 1}, column {mark.column + 1}"
    elif isinstance(getattr(err, "position", None), int):  # a ReaderError counts characters instead
        lines = text[: err.position].split("\n")
        where = f"{path} line {len(lines)}, column {len(lines[-1]) + 1}"
    else:
        where = str(path)
    duplicate = re.match(r'found duplicate key "(.*)" with value ', problem or "")
    if duplicate:
        key = duplicate.group(1)
        first = _first_key_line(text, context_mark, key) if context_mark is not None else None
        at_first = f" (first at line {first + 1})" if first is not None else ""
        return UserError(f"{where}: duplicate key '{key}'{at_first}", "keep only one of them")
    what = problem or (str(err).strip().splitlines() or [type(err).__name__])[0]
    if context and context_mark is not None and context_mark is not mark:
        what += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return UserError(f"{where}: {what}", "fix the YAML syntax there")


def _first_key_line(text: str, mapping_mark: Any, key: str) -> int | None:
    """0-based line of the first ``key`` in the mapping that starts at ``mapping_mark`` (None if not found)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import MappingNode, SequenceNode

    try:
        todo = [YAML(typ="safe", pure=True).compose(text)]
    except Exception:  # noqa: BLE001 - only a nicety of the error message
        return None
    while todo:
        node = todo.pop()
        if isinstance(node, MappingNode):
            if (node.start_mark.line, node.start_mark.column) == (mapping_mark.line, mapping_mark.column):
                return next((k.start_mark.line for k, _ in node.value if str(k.value) == key), None)
            todo += [n for pair in node.value for n in pair]
        elif isinstance(node, SequenceNode):
            todo += node.value
    return None


def validate_section(model: type[S], raw: Any, where: str, source: str = "params.yaml") -> S:
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as err:
        raise _one_line(err, where, source) from None


def load_stage_params(stage: str, path: str | os.PathLike = "params.yaml", section: str | None = None) -> StageParams:
    """Validate the shared keys and the stage's section (``section``, by default the stage's own name) of
    the params file, rejecting unknown top-level keys."""
    section = section or stage
    raw = read_params_file(path)
    known = set(COMMON_KEYS) | set(SECTIONS)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(
            f"{Path(path).name}: unknown key '{unknown[0]}'",
            f"remove it or fix the spelling (known top-level keys: {', '.join(sorted(known))})",
        )
    common = validate_section(CommonParams, {k: raw[k] for k in COMMON_KEYS if k in raw}, "", Path(path).name)
    body = validate_section(SECTIONS[section], raw.get(section), f"{section}.", Path(path).name)
    return StageParams(stage, section, common.seed, common.trials, common.device, common.data, common.tracking, body)


def _one_line(err: ValidationError, where: str, source: str) -> UserError:
    first = err.errors()[0]
    key = where + ".".join(str(part) for part in first["loc"])
    key = key.rstrip(".") or where.rstrip(".")
    if first["type"] == "extra_forbidden":
        return UserError(f"{source}: unknown key '{key}'", "remove it or fix the spelling")
    if first["type"] == "missing":
        return UserError(f"{source}: missing key '{key}'", "add it (see the params.yaml in the repository)")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error":
        return UserError(f"{source}: {key} is invalid ({message})", "set it to an allowed value")
    return UserError(f"{source}: {key} = {first.get('input')!r} is invalid ({message})", "set it to an allowed value")
