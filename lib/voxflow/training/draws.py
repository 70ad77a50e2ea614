"""Seeded random draws shared by the augmenters (voxflow.training.augment, voxflow.training.augment_mri).

Small parameter draws are made with the sample's generator (on its device, returned on the CPU), so a seeded
generator reproduces every augmentation, on CPU and GPU alike.
"""

from __future__ import annotations


import torch
from torch import Tensor

Range = tuple[float, float]


def _rand(shape: int | tuple[int, ...], gen: torch.Generator | None, normal: bool = False) -> Tensor:
    """Small parameter draws, returned on the CPU (a CUDA generator draws on its GPU)."""
    dev = "cpu" if gen is None else gen.device
    fn = torch.randn if normal else torch.rand
    return fn(shape, generator=gen, device=dev).cpu()


def _randn(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> Tensor:
    """Normal noise on ``device``, drawn with ``gen`` (on its own device, then moved)."""
    dev = device if gen is None else gen.device
    return torch.randn(shape, generator=gen, device=dev).to(device)


def _uniform(rng: Range, shape: tuple[int, ...], gen: torch.Generator | None) -> Tensor:
    return rng[0] + (rng[1] - rng[0]) * _rand(shape, gen)


def _around_one(rng: Range, shape: tuple[int, ...], gen: torch.Generator | None) -> Tensor:
    """Factors in ``rng``; as in nnU-Net, half below 1 and half above when 1 lies inside,
    so e.g. (0.7, 1.5) shrinks as often as it enlarges."""
    lo, hi = rng
    low = _uniform((lo, min(hi, 1.0)), shape, gen)
    high = _uniform((max(lo, 1.0), hi), shape, gen)
    pick_low = _rand(shape, gen) < 0.5
    if lo < 1.0 < hi:
        return torch.where(pick_low, low, high)
    return _uniform(rng, shape, gen)


def _rotation(angles: Tensor) -> Tensor:
    """(n, 1) angles -> (n, 2, 2); (n, 3) -> (n, 3, 3), rotating about each axis in turn."""
    n, k = angles.shape
    d = 2 if k == 1 else 3
    out = torch.eye(d).repeat(n, 1, 1)
    for axis in range(k):
        i, j = [a for a in range(d) if a != axis] if d == 3 else (0, 1)
        r = torch.eye(d).repeat(n, 1, 1)
        c, s = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
        out = out @ r
    return out
