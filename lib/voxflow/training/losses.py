"""Segmentation losses: cross-entropy, weighted CE, soft Dice, Dice + CE, deep supervision.

All losses take logits ``(B, K, *spatial)`` (2D or 3D) and an integer target
``(B, 1, *spatial)`` or ``(B, *spatial)``. Dice follows nnU-Net: "batch Dice"
(one Dice per foreground class, pooled over the whole batch, which is stabler
than per-sample Dice when a class is missing from some patches), computed on
softmax probabilities with smoothing 1e-5.

Under DDP (several processes, each holding a slice of the global batch) the batch-level terms are
made global: the Dice statistics and the weighted-CE weight sum are summed over processes
(``reduce_sum``, differentiable), so that DDP's mean of the per-process losses, and of their
gradients, equals the loss of the whole batch in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSS_NAMES = ("ce", "wce", "dice", "dice_ce")
SMOOTH = 1e-5


def _target(target: Tensor, logits: Tensor) -> Tensor:
    """Integer target as (B, *spatial) long."""
    if target.ndim == logits.ndim:
        if target.shape[1] != 1:
            raise ValueError(f"target must have one channel, got shape {tuple(target.shape)}")
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target.long()


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = SMOOTH,
                   reduce_sum: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """1 - mean over foreground classes of (2 sum(p g) + s) / (sum p + sum g + s).

    p are softmax probabilities, g the one-hot target; sums run over batch and
    space (batch Dice). Background (class 0) is left out, as in nnU-Net.
    ``reduce_sum`` sums the statistics over processes (the batch is then the global batch).
    """
    t = _target(target, logits)
    n_classes = logits.shape[1]
    if n_classes < 2:
        raise ValueError("Dice needs at least 2 classes (background + foreground)")
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(t, n_classes).movedim(-1, 1)[:, 1:].to(probs.dtype)
    axes = [0] + list(range(2, logits.ndim))
    inter = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    if reduce_sum is not None:
        inter, denom = reduce_sum(torch.stack([inter, denom])).unbind(0)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def inverse_frequency_weights(class_counts: Sequence[float]) -> list[float]:
    """Class weights proportional to 1 / frequency, normalised to mean 1.

    Classes with count 0 get weight 0 (they never occur, so their weight is moot
    and an infinite one would be harmful).
    """
    counts = [float(c) for c in class_counts]
    if any(c < 0 for c in counts) or sum(counts) <= 0:
        raise ValueError(f"class_counts must be non-negative with a positive sum, got {counts}")
    inv = [1.0 / c if c > 0 else 0.0 for c in counts]
    mean = sum(inv) / sum(1 for c in counts if c > 0)
    return [w / mean for w in inv]


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's weights for n outputs (finest first): 1, 1/2, 1/4, ..., the coarsest
    set to 0, normalised to sum 1. A single output gets weight 1."""
    if n_outputs < 1:
        raise ValueError("n_outputs must be >= 1")
    w = [0.5**i for i in range(n_outputs)]
    if n_outputs > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


class SegLoss(nn.Module):
    """The callable that :func:`make_loss` returns (a Module so it moves with ``.to``)."""

    class_weights: Tensor | None  # a (non-persistent) buffer, registered in __init__

    def __init__(self, name: str, n_classes: int, class_weights: Sequence[float] | None,
                 ds_weights: Sequence[float] | None, reduce_sum: Callable[[Tensor], Tensor] | None = None,
                 world_size: int = 1, regions: Sequence[Sequence[int]] | None = None):
        super().__init__()
        self.name, self.n_classes = name, n_classes
        self.regions = [list(g) for g in regions] if regions else None
        self.reduce_sum, self.world_size = reduce_sum, int(world_size)
        w = None if class_weights is None else torch.tensor([float(x) for x in class_weights])
        self.register_buffer("class_weights", w, persistent=False)
        if ds_weights is not None:
            total = float(sum(ds_weights))
            if total <= 0 or any(x < 0 for x in ds_weights):
                raise ValueError(f"deep_supervision_weights must be >= 0 with positive sum, got {ds_weights}")
            ds_weights = [float(x) / total for x in ds_weights]
        self.ds_weights = ds_weights

    def single(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of one output at its own resolution."""
        if self.regions is not None:
            return self.single_regions(logits, target)
        if logits.shape[1] != self.n_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, loss expects {self.n_classes}")
        t = _target(target, logits)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.name in ("ce", "wce", "dice_ce"):
            w = self.class_weights if self.name == "wce" else None
            w = None if w is None else w.to(logits.device)
            if w is not None and self.reduce_sum is not None:
                # torch divides by the weights of the local target voxels; the global batch needs all of them
                total = self.reduce_sum(w[t].sum().detach()) / self.world_size
                loss = loss + F.cross_entropy(logits.float(), t, weight=w, reduction="sum") / total
            else:  # plain CE: each process's mean over equally many voxels, so DDP's mean is the global one
                loss = loss + F.cross_entropy(logits.float(), t, weight=w)
        if self.name in ("dice", "dice_ce"):
            loss = loss + soft_dice_loss(logits, t, reduce_sum=self.reduce_sum)
        return loss

    def single_regions(self, logits: Tensor, target: Tensor) -> Tensor:
        """Region training: one sigmoid per region, BCE (mean over voxels) + batch soft Dice per region."""
        from voxflow.training.regions import region_targets

        assert self.regions is not None
        if logits.shape[1] != len(self.regions):
            raise ValueError(f"logits have {logits.shape[1]} channels, the loss has {len(self.regions)} regions")
        t = region_targets(_target(target, logits), self.regions).to(logits.device)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.name in ("ce", "dice_ce"):
            loss = loss + F.binary_cross_entropy_with_logits(logits.float(), t)
        if self.name in ("dice", "dice_ce"):
            probs = torch.sigmoid(logits.float())
            axes = [0] + list(range(2, logits.ndim))
            inter, denom = (probs * t).sum(axes), probs.sum(axes) + t.sum(axes)
            if self.reduce_sum is not None:
                inter, denom = self.reduce_sum(torch.stack([inter, denom])).unbind(0)
            loss = loss + 1 - ((2 * inter + SMOOTH) / (denom + SMOOTH)).mean()
        return loss

    def forward(self, output: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if self.ds_weights is None:
            if not isinstance(output, Tensor):
                raise TypeError("got several outputs but the loss has no deep_supervision_weights")
            return self.single(output, target)
        outs = list(output.unbind(1)) if isinstance(output, Tensor) else list(output)
        if len(outs) != len(self.ds_weights):
            raise ValueError(f"{len(outs)} outputs but {len(self.ds_weights)} deep_supervision_weights")
        tgt = target if target.ndim == outs[0].ndim else target.unsqueeze(1)
        total = outs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(self.ds_weights, outs):
            if w == 0:
                continue
            t = tgt
            if t.shape[2:] != out.shape[2:]:
                t = F.interpolate(tgt.float(), size=out.shape[2:], mode="nearest").long()
            total = total + w * self.single(out, t)
        return total


def make_loss(
    name: str,
    n_classes: int,
    class_weights: Sequence[float] | None = None,
    deep_supervision_weights: Sequence[float] | None = None,
    reduce_sum: Callable[[Tensor], Tensor] | None = None,
    world_size: int = 1,
    regions: Sequence[Sequence[int]] | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Build a loss ``f(logits, target) -> scalar``.

    ``name``: ``"ce"``, ``"wce"`` (CE with ``class_weights``, required; see
    :func:`inverse_frequency_weights`; torch's weighted mean divides by the summed
    weights of the target voxels), ``"dice"`` (:func:`soft_dice_loss`) or
    ``"dice_ce"`` (Dice + CE with weight 1 each, nnU-Net's default).

    With ``deep_supervision_weights`` (one per output, finest first, normalised
    to sum 1; nnU-Net's are :func:`deep_supervision_weights`) the loss takes a
    list of logits at decreasing resolution or the stacked ``(B, S, K, *spatial)``
    tensor of a deep-supervision ``DynUNet``; the target is resized to each
    output with nearest interpolation and the losses are summed with the weights.
    Outputs with weight 0 are not evaluated.

    ``reduce_sum`` (e.g. :func:`voxflow.nn.ddp.sum_over_processes`) and ``world_size``: for DDP,
    where each of ``world_size`` processes holds an equal slice of the batch.

    ``regions`` (class-index groups, see :mod:`voxflow.core.labels`): the logits hold one sigmoid output per
    region; ``"ce"`` is then binary CE per region, ``"dice"`` a batch soft Dice per region, ``"dice_ce"`` both
    (nnU-Net's region loss). ``"wce"`` has no region form.
    """
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSS_NAMES}")
    if regions and name == "wce":
        raise ValueError("loss 'wce' (class-weighted softmax CE) has no region form: use dice_ce with train.regions")
    if name == "wce":
        if class_weights is None:
            raise ValueError("loss 'wce' needs class_weights (e.g. from inverse_frequency_weights(counts))")
        if len(class_weights) != n_classes:
            raise ValueError(f"{len(class_weights)} class_weights for {n_classes} classes")
    elif class_weights is not None:
        raise ValueError(f"class_weights only apply to loss 'wce', not {name!r}")
    return SegLoss(name, n_classes, class_weights, deep_supervision_weights, reduce_sum, world_size, regions)
