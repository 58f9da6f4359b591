"""VAAL's VAE, conditioned on the ranker's score r (TA-VAAL), and the discriminator on (μ, r).

Size-generic: the number of stride-2 stages follows the configured VAE resolution, so 32×32
reproduces the reference architecture exactly (4 encoder stages 128-256-512-1024 ending at
2×2, a decoder starting at 4×4 with 3 transposed stages and a 1×1 output), and each doubling
of the short side adds one stage (channels capped at 1024·width). Non-square sizes such as
64×128 for 2:1 street scenes keep their aspect ratio in the latent grid.
"""
from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def vae_stage_count(size: Sequence[int]) -> int:
    """Stride-2 encoder stages for an H×W input: 4 at 32 (as VAAL), +1 per doubling of min(H, W)."""
    h, w = int(size[0]), int(size[1])
    stages = max(1, int(math.floor(math.log2(min(h, w)))) - 1)
    if h % (2**stages) or w % (2**stages):
        raise ValueError(
            f"vae.size {h}x{w}: both sides must be divisible by {2**stages} "
            f"({stages} stride-2 stages for a short side of {min(h, w)}); e.g. use 32x32, 64x64 or 64x128"
        )
    return stages


def _channels(stages: int, width: float) -> list[int]:
    return [max(8, int(round(min(128 * 2**i, 1024) * width))) for i in range(stages)]


class ConditionalVAE(nn.Module):
    """x -> (μ, log σ²); decoder reads z ⊕ r (cond_dim = 1) or z alone (cond_dim = 0, plain VAAL)."""

    def __init__(self, size: Sequence[int] = (32, 32), z_dim: int = 32, cond_dim: int = 1,
                 width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.z_dim, self.cond_dim = z_dim, cond_dim
        stages = vae_stage_count(self.size)
        chans = _channels(stages, width)
        layers: list[nn.Module] = []
        prev = in_channels
        for c in chans:
            layers += [nn.Conv2d(prev, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            prev = c
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        enc_hw = (self.size[0] >> stages, self.size[1] >> stages)
        flat = chans[-1] * enc_hw[0] * enc_hw[1]
        self.fc_mu = nn.Linear(flat, z_dim)
        self.fc_logvar = nn.Linear(flat, z_dim)
        # the decoder starts one stage finer than the encoder ends (VAAL: 2×2 -> 4×4)
        self.dec_shape = (chans[-1], enc_hw[0] * 2, enc_hw[1] * 2)
        self.fc_dec = nn.Linear(z_dim + cond_dim, chans[-1] * self.dec_shape[1] * self.dec_shape[2])
        dec: list[nn.Module] = []
        for c_in, c_out in zip(chans[::-1][:-1], chans[::-1][1:]):
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        dec.append(nn.ConvTranspose2d(chans[0], in_channels, 1))
        self.decoder = nn.Sequential(*dec)
        # how uint8 images become the VAE's input and reconstruction target, (x - mean) / std per
        # channel: VAAL's [-1, 1] until train_vae sets the cycle's scale (vae.input_norm); buffers,
        # so a saved VAE scores with the scale it was trained with
        self.register_buffer("input_mean", torch.full((1, in_channels, 1, 1), 127.5))
        self.register_buffer("input_std", torch.full((1, in_channels, 1, 1), 127.5))

    def set_input_scale(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean.reshape(self.input_mean.shape))
        self.input_std.copy_(std.reshape(self.input_std.shape))

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 B×C×H×W -> the float input (and reconstruction target) of this VAE."""
        return (x_uint8.float() - self.input_mean) / self.input_std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        if self.cond_dim:
            if r is None:
                raise ValueError("this VAE is conditioned on r; pass the ranker scores")
            z = torch.cat([z, r.view(-1, self.cond_dim).to(z.dtype)], dim=1)
        h = self.fc_dec(z).view(-1, *self.dec_shape)
        return self.decoder(h)

    def forward(self, x: torch.Tensor, r: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        std = torch.exp(0.5 * logvar.float()).to(mu.dtype)
        z = mu + torch.randn_like(std) * std
        return self.decode(z, r), mu, logvar


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float) -> torch.Tensor:
    """MSE reconstruction + β·KLD, both averaged over elements (the TA-VAAL reference's choice;
    VAAL summed the KLD, which at z_dim 32 makes it dominate an element-mean MSE)."""
    mse = F.mse_loss(recon.float(), x.float())
    mu, logvar = mu.float(), logvar.float()
    kld = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
    return mse + beta * kld


class Discriminator(nn.Module):
    """MLP (z_dim + cond_dim) -> 512 -> 512 -> 1 on μ ⊕ r. Returns *logits*: the losses use
    BCE-with-logits (safe under fp16/bf16) and selection ranks by the logit, which orders
    samples exactly as the sigmoid probability does."""

    def __init__(self, z_dim: int = 32, cond_dim: int = 1, hidden: int = 512, init: str = "default") -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.net = nn.Sequential(
            nn.Linear(z_dim + cond_dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )
        DISC_INITS[init](self)

    def forward(self, mu: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond_dim:
            if r is None:
                raise ValueError("this discriminator is conditioned on r; pass the ranker scores")
            mu = torch.cat([mu, r.view(-1, self.cond_dim).to(mu.dtype)], dim=1)
        return self.net(mu).squeeze(1)


def _zscore(r: torch.Tensor) -> torch.Tensor:
    return (r - r.mean()) / r.std().clamp_min(1e-6) if r.numel() > 1 else r - r.mean()


# How the ranker's raw score enters the VAE (``vae.rank_transform``) and D
# (``vae.disc_rank_transform``). The defaults are the reference's: sigmoid(r) into the VAE, raw r
# into D. zscore standardises r over the cycle's labeled ∪ subset pass (the ranking loss only fixes
# score differences, so raw r has an arbitrary offset and scale); given to D it lets D rank the
# candidates by r alone (docs/results.md, the CPU mechanism study).
RANK_TRANSFORMS: types.MappingProxyType[str, Callable[[torch.Tensor], torch.Tensor]] = types.MappingProxyType(
    {"zscore": _zscore, "sigmoid": torch.sigmoid, "raw": lambda r: r}
)


def _input_scale_unit(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = images.shape[1]
    return torch.full((c,), 127.5), torch.full((c,), 127.5)


def _input_scale_standardize(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = images.transpose(0, 1).reshape(images.shape[1], -1).float()
    return flat.mean(1).cpu(), flat.std(1).clamp_min(1.0).cpu()


# How the game's images are scaled (``vae.input_norm``), from the cycle's labeled ∪ subset
# uint8 images: VAAL's [-1, 1], or per-channel standardisation, which is what the TA-VAAL
# reference does (it feeds the task model's mean/std-normalised tensors, variance ~1, which
# weighs the element-mean reconstruction term ~4-6x more against the KLD and adversarial terms).
VAE_INPUT_NORMS: types.MappingProxyType[str, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = \
    types.MappingProxyType({"unit": _input_scale_unit, "standardize": _input_scale_standardize})


def _kaiming_normal(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)


# The discriminator's initialisation (``vae.disc_init``): PyTorch's default, or the TA-VAAL
# reference's kaiming-normal weights with zero biases (~2.4x larger weights, so the single r
# input counts as much as a latent coordinate from the first step).
DISC_INITS: types.MappingProxyType[str, Callable[[nn.Module], None]] = types.MappingProxyType(
    {"default": lambda module: None, "kaiming": _kaiming_normal})

