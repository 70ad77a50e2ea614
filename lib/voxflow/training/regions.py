"""Region-based training's torch side (nnU-Net's `regions_class_order`): the region targets of a batch and their
Dice statistics. The label scheme itself (which regions, the map back to labels) is voxflow.core.labels."""

from __future__ import annotations
from collections.abc import Sequence
import numpy as np
import torch


def region_targets(target: torch.Tensor, index_groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Integer class-index target (B, *spatial) -> float region masks (B, R, *spatial)."""
    t = target.long()
    return torch.stack([torch.isin(t, torch.tensor(g, device=t.device)) for g in index_groups], 1).float()


def region_dice_stats(logits: torch.Tensor, target_regions: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region TP, FP, FN of sigmoid > 0.5 over a batch (the validation pseudo-Dice of region training)."""
    pred = logits > 0  # sigmoid(x) > 0.5
    t = target_regions > 0.5
    axes = [0] + list(range(2, logits.ndim))
    tp = (pred & t).sum(axes).double().cpu().numpy()
    fp = (pred & ~t).sum(axes).double().cpu().numpy()
    fn = (~pred & t).sum(axes).double().cpu().numpy()
    return tp, fp, fn
