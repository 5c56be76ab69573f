"""Images per second of the three samplers at several batch sizes.

    python -m benchmarks.sampling [--device cpu|cuda] [--quick] [--no-sd]

gan   BigGAN-deep of ``params/cifar10.yaml`` (``gafi.gan``), 32x32, per-image latents, uint8 output
edm   the paper-like EDM UNet of ``params/cifar10.yaml`` (``equivalence.diffusion``), deterministic Heun,
      18 steps (35 network evaluations), 32x32
sd    Stable Diffusion 1.5's architecture (UNet, VAE, CLIP text encoder built from SD-1.5's configs with
      random weights: speed does not depend on them) in diffusers' img2img pipeline at 512 px, UniPC 30
      steps, strength 0.75, CFG 2.0; on CUDA only (a CPU run would take hours)
Networks are randomly initialised. On CUDA the batch sizes are 256/1024/4096 (GAN), 256/1024 (EDM), 8/32 (SD).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.common import pick_device, report, timed
from synthgap.config import load_stage_params
from synthgap.diffusion.edm import Denoiser, heun_sample
from synthgap.gafi.sampling import generate
from synthgap.models.biggan import GanSpec, Generator
from synthgap.models.unet import UNet, UNetSpec
from synthgap.noise import image_seeds
from synthgap.paths import repo_root


def throughput(sample, batch: int, device: torch.device, repeats: int) -> float:
    sample(batch)  # warm-up (kernel selection, allocator)
    seconds = min(timed(lambda: sample(batch), device) for _ in range(repeats))
    return round(batch / seconds, 1)


def gan_sampler(device: torch.device):
    preset = load_stage_params("cas_final", repo_root() / "params" / "cifar10.yaml", section="gafi").section
    arch = preset.gan.model_dump(include={"z_dim", "shared_dim", "g_width", "d_width", "depth", "attention_resolution"})
    torch.manual_seed(0)
    generator = Generator(GanSpec(10, 32, 3, **arch)).to(device).eval()

    def sample(batch: int):
        labels = torch.arange(batch, device=device) % 10
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            return generate(generator, labels, image_seeds(0, torch.arange(batch)), 1.0, batch_size=batch)

    return sample


def edm_sampler(device: torch.device):
    preset = load_stage_params("train_diffusion", repo_root() / "params" / "cifar10.yaml", section="equivalence").section
    arch = preset.diffusion.model_dump(include={"width", "channel_mult", "blocks", "attention_resolution", "dropout"})
    torch.manual_seed(0)
    denoiser = Denoiser(UNet(UNetSpec(10, 32, 3, **arch))).to(device).eval()

    def sample(batch: int):
        labels = torch.arange(batch, device=device) % 10
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            return heun_sample(denoiser, labels, image_seeds(0, torch.arange(batch)), (3, 32, 32),
                               steps=preset.diffusion.sampler_steps)

    return sample


def sd_sampler(device: torch.device, size: int = 512, steps: int = 30):
    """img2img with SD-1.5's architecture (random weights) in diffusers' own pipeline."""
    from diffusers import StableDiffusionImg2ImgPipeline, UniPCMultistepScheduler

    from synthgap.realfake.base_model import build_sd15

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = build_sd15(["photo", "of", "a", "tench"], Path(tempfile.mkdtemp(prefix="sd-tokenizer-")), vision_layers=0)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=model.vae, unet=model.unet, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        scheduler=UniPCMultistepScheduler.from_config(model.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    ).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)

    def sample(batch: int):
        init = torch.rand(batch, 3, size, size, device=device, dtype=dtype)
        return pipe(["photo of a tench"] * batch, image=init, strength=0.75, num_inference_steps=steps,
                    guidance_scale=2.0, output_type="pt").images

    return sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small batches, one repeat")
    ap.add_argument("--no-sd", action="store_true", help="skip Stable Diffusion img2img")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    repeats = 1 if args.quick else 3
    batches = {
        "gan": ([256, 1024, 4096] if cuda else [64, 256]) if not args.quick else [64],
        "edm_18_steps": ([256, 1024] if cuda else [16]) if not args.quick else [1],
        "sd_img2img_512px_30_steps": ([8, 32] if not args.quick else [4]) if cuda and not args.no_sd else [],
    }
    makers = {"gan": gan_sampler, "edm_18_steps": edm_sampler, "sd_img2img_512px_30_steps": sd_sampler}
    result: dict = {"benchmark": "sampling", "img_per_s": {}}
    for name, sizes in batches.items():
        if not sizes:
            continue
        sample = makers[name](device)
        result["img_per_s"][name] = {str(b): throughput(sample, b, device, repeats) for b in sizes}
        print(f"{name}: {result['img_per_s'][name]}", flush=True)
    if not batches["sd_img2img_512px_30_steps"]:
        result["sd_img2img_512px_30_steps"] = "not run (CUDA only)" if not cuda else "skipped (--no-sd)"
    report("sampling", device, result, save=not args.no_save)


if __name__ == "__main__":
    main()
