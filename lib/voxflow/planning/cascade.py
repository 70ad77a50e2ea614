"""Coarse-to-fine cascade (nnU-Net's 3d_lowres -> 3d_cascade_fullres): the decision and the array code.

When the full-resolution patch covers little of the median image, a patch sees a lesion without its
surroundings. The cascade trains a low-resolution stage first, on the same stores downsampled on the fly by an
integer factor (a patch read `factor` times larger, average-pooled; the label taken at the block centres), so its
patch covers `factor`**3 times the volume. Every training subject is then predicted by the low-resolution fold
that did not train on it (out of fold: no leakage), and the full-resolution stage trains with that prediction,
one-hot, as extra input channels. At inference the low-resolution folds' ensemble feeds the full-resolution one.

Which stage a model is, and what it needs, is in its plans (plans.json's "cascade", read as Plans.cascade):
{"stage": "lowres", "factor": f} or {"stage": "fullres", "factor": f, "prev_channels": n}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# nnU-Net creates 3d_lowres when the full-resolution patch covers less than a quarter of the median image
COVERAGE_THRESHOLD = 0.25


def cascade_decision(median_shape: Sequence[int], patch: Sequence[int], threshold: float = COVERAGE_THRESHOLD,
                     max_factor: int = 4) -> dict:
    """Whether a cascade is worth it, its downsampling factor, and why (plans.json keeps it all).

    coverage = patch volume / median image volume; worth it below `threshold`. The factor is the smallest
    integer (2..max_factor) at which the same patch covers at least `threshold` of the downsampled image."""
    coverage = float(np.prod(patch, dtype=np.float64) / np.prod(median_shape, dtype=np.float64))
    factor = next((f for f in range(2, max_factor + 1) if coverage * f**3 >= threshold), max_factor)
    worth = coverage < threshold
    why = (f"the full-resolution patch {list(patch)} covers {coverage:.0%} of the median image "
           f"{list(median_shape)}, {'less' if worth else 'not less'} than {threshold:.0%}: a cascade is "
           f"{'worth it' if worth else 'not needed (nnU-Net would not plan one)'}; the low-resolution stage is "
           f"downsampled {factor}x (its patch covers {min(1.0, coverage * factor**3):.0%})")
    return {"worth_it": worth, "coverage": round(coverage, 4), "factor": factor, "threshold": threshold, "why": why}


def downsample_image(img: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, *spatial) -> average over factor**d blocks (the spatial size must divide by factor)."""
    if factor == 1:
        return img
    pool = F.avg_pool3d if img.ndim == 5 else F.avg_pool2d
    return pool(img, factor)


def downsample_label(lab: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1, *spatial) integer -> the label at each block's centre (nearest neighbour, as the image's mean)."""
    if factor == 1:
        return lab
    c = factor // 2
    return lab[(slice(None), slice(None)) + (slice(c, None, factor),) * (lab.ndim - 2)]


def downsample_volume(volume: np.ndarray, factor: int) -> np.ndarray:
    """(C, Z, Y, X) -> block means; the volume is zero-padded up to a multiple of factor first."""
    if factor == 1:
        return volume.astype(np.float32)
    pad = [(0, 0)] + [(0, (-s) % factor) for s in volume.shape[1:]]
    v = torch.from_numpy(np.pad(volume.astype(np.float32), pad))
    return downsample_image(v[None], factor)[0].numpy()


def upsample_probabilities(probs: np.ndarray, shape: Sequence[int], factor: int) -> np.ndarray:
    """Low-resolution probabilities (K, z, y, x) back on the (Z, Y, X) grid (trilinear, then cropped)."""
    if factor == 1:
        return probs[(slice(None),) + tuple(slice(0, s) for s in shape)]
    t = torch.from_numpy(probs.astype(np.float32))[None]
    size = [math.ceil(s / factor) * factor for s in shape]
    up = F.interpolate(t, size=size, mode="trilinear", align_corners=False)[0]
    return up[(slice(None),) + tuple(slice(0, s) for s in shape)].numpy()


def one_hot_previous(prev: torch.Tensor, n_channels: int) -> torch.Tensor:
    """Previous-stage class indices (B, *spatial) -> one-hot float channels 1..n_channels (background dropped)."""
    return F.one_hot(prev.long().clamp(0, n_channels), n_channels + 1).movedim(-1, 1)[:, 1:].float()


def encode_pair(target: torch.Tensor, prev: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Target and previous-stage indices in one integer label (target + n_classes * prev), so the augmenter's
    nearest-neighbour warp moves both alike; `decode_pair` splits them."""
    return target + n_classes * prev


def decode_pair(label: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    return label % n_classes, label // n_classes
