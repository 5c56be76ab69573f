"""Training the latent diffusion model: the VAE and UNet pretraining of the tiny stand-in, and LoRA finetuning
with distribution matching and visual guidance (Real-Fake Sec. 3), through ``accelerate``.

One step of ``train_unet`` (read top to bottom): a seeded global batch of images (each process of an
``accelerate launch`` takes its slice), random flip (if ``flip``; ``realfake.flip``), VAE latents (a sample of
each image's posterior, computed once: the VAE is frozen), noise and timesteps, the prompt states (the empty
prompt's for a ``caption_dropout`` share) with the guidance token in the last slot, the UNet's noise prediction,
the min-SNR-weighted loss plus the distribution term, gradient-norm clipping (``max_grad_norm``), one AdamW step
(decoupled ``weight_decay``). Every random choice of step ``s`` comes from ``derive_seed(seed, s)``, so a resumed
run continues exactly (state every ``state_every`` steps, weights only, atomically).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from synthgap.checkpoint import load_torch, save_torch
from synthgap.errors import UserError
from synthgap.paths import atomic_write_with
from synthgap.realfake.base_model import BaseModel, encode_prompts, to_model_pixels
from synthgap.realfake.guidance import insert_guidance, make_projection
from synthgap.realfake.losses import diffusion_loss, distribution_loss, min_snr_weights
from synthgap.seeding import derive_seed, torch_generator
from synthgap.staging import remove_after_commit
from synthgap.train.state import load_state, restore, save_state


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 4
    alpha: float = 4.0
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class UnetTraining:
    """What one ``train_unet`` run does (``lora=None``: all UNet weights train, as in pretraining)."""

    steps: int
    batch_size: int
    lr: float
    resolution: int
    lora: LoraSpec | None = LoraSpec()
    snr_gamma: float | None = 5.0  # None: plain MSE
    distribution: str = "mean"  # mean (released code) | kernel (paper) | none
    distribution_weight: float = 0.003
    guidance: str = "image"  # image (code) | class_mean (paper) | none
    flip: bool = True  # mirror each image left-right with probability 1/2
    caption_dropout: float = 0.0  # the empty prompt instead of the image's, with this probability (SD: 0.1)
    weight_decay: float = 1e-2  # AdamW, decoupled
    max_grad_norm: float | None = None  # clip the global gradient norm of the trained weights; None: no clipping
    mixed_precision: str = "no"  # accelerate: no | bf16 | fp16
    extra: dict = field(default_factory=dict)  # anything else that defines the run (fingerprint only)


def add_lora(unet: torch.nn.Module, spec: LoraSpec, seed: int) -> list[torch.nn.Parameter]:
    """Attach a peft LoRA adapter to the attention projections; only its weights require grad."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    torch.manual_seed(derive_seed(seed, "lora", "init"))
    unet.add_adapter(LoraConfig(r=spec.rank, lora_alpha=spec.alpha, init_lora_weights="gaussian",
                                target_modules=list(spec.targets)))
    return [p for p in unet.parameters() if p.requires_grad]


def global_batch(*shares: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Each tensor of this process's share of the global batch, extended to the whole global batch: the other
    processes' shares are gathered (no gradient flows to them), this share keeps its gradient. A batch-level
    term on the result (distribution matching) has the one-process value, and its gradient with respect to
    this share is that share of the one-process gradient (so the cross terms between shares are kept)."""
    if world == 1:
        return list(shares)
    import torch.distributed as dist

    rank, out = dist.get_rank(), []
    for share in shares:
        parts = [torch.empty_like(share) for _ in range(world)]
        dist.all_gather(parts, share.detach().contiguous())
        parts[rank] = share
        out.append(torch.cat(parts))
    return out


def lora_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(unet).items()}


def save_adapter(path: Path, unet: torch.nn.Module, spec: LoraSpec, projection: torch.nn.Module | None,
                 settings: dict) -> None:
    """Only the adapter: LoRA weights, the guidance projection (if any) and the settings, weights-only."""
    save_torch({"lora": lora_state(unet), "lora_spec": asdict(spec),
                "projection": projection.state_dict() if projection is not None else None,
                "settings": settings}, path)


DIFFUSERS_LORA = "pytorch_lora_weights.safetensors"


def export_diffusers_lora(folder: Path, unet: torch.nn.Module) -> Path:
    """The LoRA weights as diffusers writes them (``folder/pytorch_lora_weights.safetensors``, with the
    adapter's rank and alpha), so that ``StableDiffusionPipeline.load_lora_weights(folder)`` loads them into
    Stable Diffusion. The guidance projection and the synthesis settings are not part of that format: they
    stay in ``adapter.pt``."""
    import shutil
    import tempfile

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    config = unet.peft_config["default"]
    metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules)}
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    target = Path(folder) / DIFFUSERS_LORA
    with tempfile.TemporaryDirectory() as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=state, unet_lora_adapter_metadata=metadata,
                                                  safe_serialization=True)
        atomic_write_with(target, lambda out: shutil.copyfile(Path(tmp) / DIFFUSERS_LORA, out))
    return target


def load_adapter(path: Path, model: BaseModel, device="cpu") -> tuple[torch.nn.Module | None, dict]:
    """Attach the saved adapter to ``model.unet``; returns (guidance projection or None, settings)."""
    from peft.utils import set_peft_model_state_dict

    payload = load_torch(path, device, fix="rerun `dvc repro finetune_lora`")
    try:
        spec = LoraSpec(**{k: tuple(v) if k == "targets" else v for k, v in payload["lora_spec"].items()})
        add_lora(model.unet, spec, seed=0)
        result = set_peft_model_state_dict(model.unet, payload["lora"])
        if getattr(result, "unexpected_keys", None):
            raise KeyError(f"unexpected keys {result.unexpected_keys[:3]}")
        projection = None
        if payload["projection"] is not None:
            w = payload["projection"]["weight"]
            projection = torch.nn.Linear(w.shape[1], w.shape[0]).to(device)
            projection.load_state_dict(payload["projection"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is not a LoRA adapter for this base model ({str(err).splitlines()[0][:160]})",
                        "rerun `dvc repro finetune_lora`") from None
    model.unet.requires_grad_(False).eval()
    return projection, payload["settings"]


def pretrain_vae(vae: torch.nn.Module, x_uint8: torch.Tensor, *, steps: int, batch_size: int, lr: float,
                 resolution: int, seed: int, kl_weight: float = 1e-4, desc: str = "vae") -> list[dict]:
    """Reconstruction (MSE) + KL training of the stand-in's VAE; sets ``scaling_factor`` to 1 / latent std."""
    device = next(vae.parameters()).device
    vae.train().requires_grad_(True)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    history = []
    for step in tqdm(range(steps), desc=desc, disable=None):
        gen = torch_generator(derive_seed(seed, "vae", step), device)
        idx = torch.randint(0, len(x_uint8), (batch_size,), device=device, generator=gen)
        pixels = to_model_pixels(x_uint8[idx], resolution)
        posterior = vae.encode(pixels).latent_dist
        recon = vae.decode(posterior.sample(gen)).sample
        loss = (recon - pixels).pow(2).mean() + kl_weight * posterior.kl().mean() / pixels[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % max(1, steps // 10) == 0:
            history.append({"step": step + 1, "vae_loss": loss.item()})
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = vae.encode(to_model_pixels(x_uint8[:1024].to(device), resolution)).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return history


@torch.no_grad()
def posteriors(vae: torch.nn.Module, x_uint8: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and standard deviation (N, C, h, w) of every image, encoded in batches of about
    2^18 pixels (256 images at 32 px, one at SD's 512)."""
    batch_size = max(1, min(256, (1024 // resolution) ** 2 // 4))
    means, stds = [], []
    for i in range(0, len(x_uint8), batch_size):
        dist = vae.encode(to_model_pixels(x_uint8[i : i + batch_size], resolution)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def vae_error(vae: torch.nn.Module, x_uint8: torch.Tensor, resolution: int, batch_size: int = 512) -> float:
    """Mean squared error (pixels in [-1, 1]) of the VAE's reconstructions from the posterior mean."""
    total = 0.0
    for i in range(0, len(x_uint8), batch_size):
        pixels = to_model_pixels(x_uint8[i : i + batch_size], resolution)
        recon = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        total += float((recon - pixels).pow(2).mean()) * len(pixels)
    return total / max(1, len(x_uint8))


def train_unet(
    model: BaseModel,
    x_uint8: torch.Tensor,
    prompts: list[str],
    guidance_tokens: torch.Tensor | None,
    cfg: UnetTraining,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    state_path: Path | None = None,
    state_every: int = 0,
    log_every: int = 50,
    on_log: Callable[[dict], None] | None = None,
    desc: str = "finetune_lora",
) -> tuple[torch.nn.Module | None, list[dict]]:
    """Train ``model.unet`` (LoRA adapter, or all of it with ``cfg.lora=None``) on images ``x_uint8`` with one
    prompt per image and optional per-image guidance tokens. Returns (guidance projection, loss log); the
    adapter stays attached to ``model.unet``. The finished result (step ``cfg.steps``) is written to the state
    file, which is removed once the stage's outputs are in place (:func:`synthgap.staging.remove_after_commit`):
    a stage that fails after this training loads it instead of training again."""
    from accelerate import Accelerator

    device = torch.device(device)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise UserError(f"{desc}: batch size {cfg.batch_size} does not split evenly over {world} processes",
                        f"set the batch size to a multiple of {world}")
    model.to(device)
    unique = sorted(set(prompts) | ({""} if cfg.caption_dropout else set()))
    states_by_prompt = encode_prompts(model, unique)
    row_of = {p: i for i, p in enumerate(unique)}
    prompt_index = torch.tensor([row_of[p] for p in prompts], device=device)
    x_uint8 = x_uint8.to(device)
    # the VAE is frozen: each image's posterior (and its mirror's, with flip) once, not the batch's every step
    mean, std = posteriors(model.vae, x_uint8, cfg.resolution)
    mirrored = posteriors(model.vae, x_uint8.flip(-1), cfg.resolution) if cfg.flip else None
    tokens = guidance_tokens.to(device) if guidance_tokens is not None and cfg.guidance != "none" else None
    projection = make_projection(tokens.shape[1], states_by_prompt.shape[-1], derive_seed(seed, "projection")) \
        if tokens is not None else None
    unet = model.unet
    if cfg.lora is None:
        unet.requires_grad_(True)
        params = list(unet.parameters())
    else:
        params = add_lora(unet, cfg.lora, seed)
    if projection is not None:
        projection.to(device)
        params += list(projection.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    fingerprint = {"cfg": asdict(cfg), "seed": seed, "n": len(prompts), "world": world}
    start, history = 0, []
    state = load_state(state_path, fingerprint, device)
    if state is not None:
        if cfg.lora is None:
            restore(state, unet=unet)
        else:
            from peft.utils import set_peft_model_state_dict

            set_peft_model_state_dict(unet, state["lora"])
        if projection is not None:
            restore(state, projection=projection)
        restore(state, optimizer=opt)
        start, history = int(state["step"]), list(state["history"])
        tqdm.write(f"{desc}: finished before, loaded from {state_path}" if start == cfg.steps
                   else f"{desc}: resuming from {state_path} at step {start}")
    unet.train()
    ddp_unet, opt = accelerator.prepare(unet, opt)
    alphas = model.scheduler.alphas_cumprod.to(device)
    steps_total = model.scheduler.config.num_train_timesteps
    scale = model.vae.config.scaling_factor
    running, count, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=None if accelerator.is_main_process else True,
               initial=start, total=cfg.steps)
    for step in bar:
        gen = torch_generator(derive_seed(seed, "unet", step), device)
        idx = torch.randint(0, len(prompts), (cfg.batch_size,), device=device, generator=gen)
        flip = torch.rand(cfg.batch_size, device=device, generator=gen) < 0.5
        noise_all = torch.randn((cfg.batch_size, 4, cfg.resolution // model.latent_factor,
                                 cfg.resolution // model.latent_factor), device=device, generator=gen)
        t_all = torch.randint(0, steps_total, (cfg.batch_size,), device=device, generator=gen)
        rows = prompt_index[idx]
        if cfg.caption_dropout:  # the unconditional branch that classifier-free guidance contrasts with
            dropped = torch.rand(cfg.batch_size, device=device, generator=gen) < cfg.caption_dropout
            rows = torch.where(dropped, row_of[""], rows)
        mine = slice(rank, None, world)  # this process's share of the global batch
        idx, rows, flip, noise, t = idx[mine], rows[mine], flip[mine], noise_all[mine], t_all[mine]
        mu, sigma = mean[idx], std[idx]
        if cfg.flip:
            mu = torch.where(flip[:, None, None, None], mirrored[0][idx], mu)
            sigma = torch.where(flip[:, None, None, None], mirrored[1][idx], sigma)
        # the posterior's noise drawn for the global batch, as the noise above
        eps = torch.randn((cfg.batch_size, *mu.shape[1:]), generator=gen, device=gen.device, dtype=mu.dtype)[mine]
        latents = (mu + sigma * eps.to(device)) * scale
        noisy = model.scheduler.add_noise(latents, noise, t)
        states = insert_guidance(states_by_prompt[rows], tokens[idx] if tokens is not None else None, projection)
        with accelerator.autocast():
            pred = ddp_unet(noisy, t, encoder_hidden_states=states).sample
        weights = min_snr_weights(alphas, t, cfg.snr_gamma) if cfg.snr_gamma else torch.ones_like(t, dtype=torch.float)
        loss = diffusion_loss(pred, noise, weights)  # this share's mean; DDP averages the shares' gradients
        matching = torch.zeros((), device=device)
        if cfg.distribution != "none":  # a batch-level term: on the whole global batch, whatever the processes
            matching = distribution_loss(cfg.distribution, *global_batch(pred, noise, weights, world=world))
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss + cfg.distribution_weight * world * matching)  # x world: DDP's average
        if cfg.max_grad_norm is not None:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        shares = accelerator.reduce(loss.detach(), "mean") if world > 1 else loss.detach()
        running += (shares + cfg.distribution_weight * matching.detach()).item()
        count += 1
        done = step + 1
        if not math.isfinite(running):
            kept = f"; the last good state is kept in {state_path}" if state_path is not None and state_path.exists() else ""
            raise UserError(f"{desc}: training diverged (non-finite loss) at step {done}{kept}", "lower the learning rate")
        if done % log_every == 0 or done == cfg.steps:
            record = {"step": done, "loss": running / count, "seconds": time.perf_counter() - t0}
            history.append(record)
            running, count, t0 = 0.0, 0, time.perf_counter()
            if on_log is not None and accelerator.is_main_process:
                on_log(record)
        periodic = state_every and done % state_every == 0 and done < cfg.steps
        if state_path is not None and (periodic or done == cfg.steps) and accelerator.is_main_process:
            saved = {"unet": unet} if cfg.lora is None else {"lora": lora_state(unet)}
            save_state(state_path, fingerprint, step=done, history=history, optimizer=opt,
                       **saved, **({"projection": projection} if projection is not None else {}))
    accelerator.wait_for_everyone()
    unet.eval().requires_grad_(False)
    if state_path is not None and accelerator.is_main_process:  # kept until the stage's outputs are in place
        remove_after_commit(state_path)
    return projection, history
