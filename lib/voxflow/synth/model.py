"""Missing-modality synthesis networks: one generator for every missing pattern (CollaGAN's idea).

The generator is the project's 3D U-Net (:func:`voxflow.nn.networks.build_network`). Its input is the
M images with the unavailable ones zeroed, followed by M binary availability channels (one constant map per
modality); its output is every modality, raw linear values (normalized intensities). The discriminator is a
pix2pix-style 3D PatchGAN conditioned on the generator input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from voxflow.nn.networks import build_network, channels_last_instance_norms

ADVERSARIAL = ("lsgan", "hinge")


def build_generator(n_modalities: int, patch_size: Sequence[int], base_features: int = 8,
                    n_stages: int | None = None, spacing: Sequence[float] | None = None) -> nn.Module:
    """A 3D ``DynUNet``: in 2*M channels (images + availability), out M channels (every modality, linear).

    The patch must allow at least 3 U-Net stages (isotropic spacing: >= 32 voxels per axis)."""
    if n_modalities < 2:
        raise ValueError(f"synthesis needs at least 2 modalities (one to drop, one to keep), got {n_modalities}")
    return build_network("3d", in_channels=2 * n_modalities, n_classes=n_modalities, patch_size=patch_size,
                         n_stages=n_stages, base_features=base_features, spacing=spacing)


def generator_input(img: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """(B, M, *spatial) images and (B, M) availability -> (B, 2M, *spatial): the images with the unavailable
    channels zeroed, then one constant 0/1 map per modality."""
    if img.dim() < 3 or available.shape != img.shape[:2]:
        raise ValueError(f"images {tuple(img.shape)} and availability {tuple(available.shape)} do not match")
    a = available.to(img.dtype).reshape(*available.shape, *([1] * (img.dim() - 2)))
    return torch.cat([img * a, a.expand_as(img)], dim=1)


def random_availability(batch: int, n_modalities: int, generator: torch.Generator,
                        p_single: float = 0.75) -> torch.Tensor:
    """(B, M) bool: per sample, which modalities the generator sees. At least one and at most M-1 are dropped:
    exactly one with probability `p_single` (CollaGAN trains on single-missing patterns), otherwise a uniform
    number in 1..M-1. Drawn from `generator` only (a CPU ``torch.Generator``), so seeded runs repeat."""
    if n_modalities < 2:
        raise ValueError(f"cannot drop a modality of {n_modalities}: synthesis needs at least 2")
    out = torch.ones(batch, n_modalities, dtype=torch.bool)
    for b in range(batch):
        single = float(torch.rand((), generator=generator)) < p_single
        k = 1 if single else int(torch.randint(1, n_modalities, (), generator=generator))
        drop = torch.randperm(n_modalities, generator=generator)[:k]
        out[b, drop] = False
    return out


class PatchDiscriminator3d(nn.Module):
    """pix2pix's PatchGAN in 3D: 4^3 convs (stride 2 for `n_layers` layers, then two of stride 1), instance
    norm (not on the first layer), leaky ReLU 0.2, ending in a 1-channel score map (one score per
    overlapping patch of the input; a 32^3 input and n_layers=3 give 2^3 scores).

    Conditioned: its input is concat(generator input (2M channels), candidate images (M channels)), so
    ``in_channels = 3 * M``."""

    def __init__(self, in_channels: int, base_features: int = 16, n_layers: int = 3, max_features: int = 512):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(in_channels, base_features, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        feats = base_features
        for i in range(1, n_layers + 1):
            nxt = min(base_features * 2 ** i, max_features)
            layers += [nn.Conv3d(feats, nxt, 4, stride=2 if i < n_layers else 1, padding=1),
                       nn.InstanceNorm3d(nxt, affine=True), nn.LeakyReLU(0.2, inplace=True)]
            feats = nxt
        layers.append(nn.Conv3d(feats, 1, 4, stride=1, padding=1))
        self.net = channels_last_instance_norms(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def adversarial_loss(kind: str, scores: torch.Tensor, real: bool, discriminator: bool) -> torch.Tensor:
    """The GAN loss of one score map. lsgan: mean (s - t)^2, t = 1 for real, 0 for fake (the generator
    uses t = 1 on its fakes); hinge: the discriminator's mean relu(1 - s) on real, relu(1 + s) on fake,
    the generator's -mean(s)."""
    if kind == "lsgan":
        return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))
    if kind == "hinge":
        if not discriminator:
            return -scores.mean()
        return F.relu(1.0 - scores).mean() if real else F.relu(1.0 + scores).mean()
    raise ValueError(f"adversarial must be one of {ADVERSARIAL}, got {kind!r}")


def discriminator_loss(kind: str, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss, halved (pix2pix) so it learns at half the generator's pace."""
    return 0.5 * (adversarial_loss(kind, real_scores, True, True) + adversarial_loss(kind, fake_scores, False, True))


def generator_adversarial_loss(kind: str, fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial term: its composites should score as real."""
    return adversarial_loss(kind, fake_scores, True, False)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, available: torch.Tensor,
                        missing_weight: float) -> torch.Tensor:
    """Weighted mean |pred - target| over the brain-mask voxels of every channel; the channels the generator
    did not see weigh `missing_weight` (so it learns to synthesize, not only to copy), the others 1.

    pred/target (B, M, *sp), mask (B, 1, *sp), available (B, M)."""
    w = 1.0 + (missing_weight - 1.0) * (~available.bool()).to(pred.dtype)
    w = w.reshape(*w.shape, *([1] * (pred.dim() - 2))) * mask.to(pred.dtype)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1.0)


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The trained generator (eval mode, on `device`) and its meta (config, modalities, patch_size,
    base_features, n_modalities, n_stages, spacing); loaded with weights_only=True (no code runs)."""
    device = torch.device(device)
    state = torch.load(path, map_location=device, weights_only=True)
    meta = {k: v for k, v in state.items() if k != "state_dict"}
    net = build_generator(int(meta["n_modalities"]), meta["patch_size"], int(meta["base_features"]),
                          meta.get("n_stages"), meta.get("spacing"))
    net.load_state_dict(state["state_dict"])
    net = net.to(device, memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    net.eval()
    return net, meta
