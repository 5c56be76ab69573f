"""EDM (Karras et al. 2022): preconditioning, training loss and the deterministic Heun sampler.

Symbols follow the paper. The denoiser is ``D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))``
with ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``, ``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``,
``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` and ``c_noise = ln(sigma) / 4`` (Table 1). Training draws
``ln sigma ~ N(P_mean, P_std^2)`` and weights the squared error by ``lambda(sigma) = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2``. Sampling is Algorithm 1 (deterministic Heun, 2N - 1 evaluations for N steps) on the time
steps ``t_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, ``t_N = 0``. The initial
noise of each image comes from its own seed (``synthgap.noise``), so a set does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from synthgap.noise import normal_from


@dataclass(frozen=True)
class EdmConfig:
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) for noise levels ``sigma``."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt(), sigma.log() / 4.0


class Denoiser(nn.Module):
    """``D(x; sigma, y)`` around a raw network ``F(x_in, c_noise, y)``."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(x.dtype).expand(len(x), 1, 1, 1)
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, self.sigma_data)
        extra = () if augment_labels is None else (augment_labels,)
        return c_skip * x + c_out * self.net(c_in * x, c_noise.flatten(), labels, *extra)


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(denoiser: Denoiser, images: torch.Tensor, labels: torch.Tensor, cfg: EdmConfig, gen: torch.Generator,
             shard=None, augment=None) -> torch.Tensor:
    """Weighted denoising loss of a batch of images in [-1, 1], per image (summed over pixels). ``augment`` (an
    :class:`~synthgap.diffusion.augment.AugmentPipe`) transforms the batch after the noise levels are drawn and
    gives the network its augment labels, as EDM's loss does. ``shard`` (data parallelism) selects this
    process's part after the whole batch's random draws, so they match one process."""
    n = len(images)
    sigma = (torch.randn(n, device=images.device, generator=gen) * cfg.p_std + cfg.p_mean).exp().view(-1, 1, 1, 1)
    augment_labels = None
    if augment is not None:
        images, augment_labels = augment(images, gen)
    noise = torch.randn(images.shape, device=images.device, generator=gen) * sigma
    if shard is not None:
        images, labels, sigma, noise = shard(images), shard(labels), shard(sigma), shard(noise)
        augment_labels = None if augment_labels is None else shard(augment_labels)
    denoised = denoiser(images + noise, sigma, labels, augment_labels)
    # as EDM's training loop: summed over each image's pixels, averaged over the batch
    return (loss_weight(sigma, cfg.sigma_data) * (denoised - images) ** 2).sum(dim=(1, 2, 3)).mean()


def time_steps(steps: int, cfg: EdmConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """t_0 > ... > t_{N-1} = sigma_min and t_N = 0 (Eq. 5), float64."""
    i = torch.arange(steps, dtype=torch.float64, device=device)
    inv = 1.0 / cfg.rho
    t = (cfg.sigma_max**inv + i / max(steps - 1, 1) * (cfg.sigma_min**inv - cfg.sigma_max**inv)) ** cfg.rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64, device=device)])


@torch.no_grad()
def heun_sample(denoiser: Denoiser, labels: torch.Tensor, seeds: torch.Tensor, shape: tuple[int, int, int],
                steps: int = 18, cfg: EdmConfig = EdmConfig()) -> torch.Tensor:
    """Algorithm 1 (deterministic): images in [-1, 1] for ``labels`` from the per-image ``seeds``."""
    device = labels.device
    t = time_steps(steps, cfg, device)
    x = normal_from(seeds.to(device), shape[0] * shape[1] * shape[2]).view(-1, *shape).to(torch.float64) * t[0]
    for i in range(steps):
        t_cur, t_next = t[i], t[i + 1]
        d = (x - denoiser(x.float(), t_cur.float().expand(len(x)), labels).double()) / t_cur
        x_next = x + (t_next - t_cur) * d
        if t_next > 0:  # second-order correction
            d_next = (x_next - denoiser(x_next.float(), t_next.float().expand(len(x)), labels).double()) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x.float().clamp(-1, 1)


@torch.no_grad()
def sample_set(denoiser: Denoiser, labels: torch.Tensor, seeds: torch.Tensor, shape: tuple[int, int, int],
               steps: int = 18, batch_size: int = 1024) -> torch.Tensor:
    """uint8 images for ``labels`` / per-image ``seeds``, in batches; under ``torchrun`` each process samples
    images ``rank::world`` and all get the whole set back (equal to one process: every image has its seed)."""
    from synthgap.distributed import sharded
    from synthgap.images import to_uint8

    def run(lab: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
        out = [to_uint8(heun_sample(denoiser, lab[i : i + batch_size], sd[i : i + batch_size], shape, steps))
               for i in range(0, len(lab), batch_size)]
        return torch.cat(out) if out else torch.zeros((0, *shape), dtype=torch.uint8, device=lab.device)

    return sharded(run, len(labels), labels, seeds)
