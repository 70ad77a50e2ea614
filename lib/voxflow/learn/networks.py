"""Segmentation networks: nnU-Net-style U-Nets (MONAI ``DynUNet``) for 3D, 2D and 2.5D.

The topology (per-stage conv kernels and pooling strides) is derived from the
patch size and voxel spacing exactly the way nnU-Net's planner does it, so the
planner and the network builder share one rule (:func:`unet_topology`).

2D and 2.5D networks see single slices; :class:`SliceWise` lets them consume
3D patches so sliding-window inference is the same code for every ``dim``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet
from torch import nn

DIMS = ("3d", "2.5d", "2d")


def unet_topology(
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    n_stages: int | None = None,
    min_size: int = 8,
) -> tuple[list[list[int]], list[list[int]]]:
    """Conv kernels and strides per resolution stage, following nnU-Net's planner.

    At every stage an axis is pooled (stride 2) only if it is still ``>= min_size``
    after pooling and its current spacing is less than twice the smallest current
    spacing (so thick-slice axes wait until in-plane pooling has caught up). The
    conv kernel of an axis is 1 until its spacing is within a factor 2 of the
    finest one, then 3 for good; the bottleneck always uses 3. Unlike nnU-Net we
    keep pooling a lone remaining axis down to ``min_size`` (nnU-Net stops once
    only one axis is poolable and it is below 3 * min_size). The first stage has
    stride 1 (full resolution). ``n_stages`` (stages including the full-resolution
    one) truncates the topology; asking for more stages than the patch allows is
    a ValueError, because the planner should then pick a bigger patch.

    Returns ``(kernels, strides)``, two lists of length n_stages with one entry
    per axis, in the format ``DynUNet`` expects.
    """
    dim = len(patch_size)
    size = [float(s) for s in patch_size]
    sp = [1.0] * dim if spacing is None else [float(s) for s in spacing]
    if len(sp) != dim:
        raise ValueError(f"spacing {tuple(sp)} and patch_size {tuple(patch_size)} differ in length")
    kernel = [1] * dim
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * dim]
    while n_stages is None or len(strides) < n_stages:
        poolable = [a for a in range(dim) if size[a] / 2 >= min_size]
        if poolable:
            finest = min(sp[a] for a in poolable)
            poolable = [a for a in poolable if sp[a] / finest < 2]
        if not poolable:
            break
        finest_all = min(sp)
        kernel = [3 if (k == 3 or sp[a] / finest_all < 2) else 1 for a, k in enumerate(kernel)]
        kernels.append(list(kernel))
        stride = [2 if a in poolable else 1 for a in range(dim)]
        for a in poolable:
            sp[a] *= 2
            size[a] = size[a] / 2
        strides.append(stride)
    kernels.append([3] * dim)  # bottleneck
    if n_stages is not None and len(strides) < n_stages:
        raise ValueError(
            f"patch {tuple(patch_size)} with min_size {min_size} allows only {len(strides)} "
            f"stages, {n_stages} requested"
        )
    return kernels, strides


def build_network(
    dim: str,
    in_channels: int,
    n_classes: int,
    patch_size: Sequence[int],
    n_stages: int | None = None,
    base_features: int = 16,
    max_features: int = 320,
    deep_supervision: bool = False,
    context_slices: int = 1,
    spacing: Sequence[float] | None = None,
) -> nn.Module:
    """Build an nnU-Net-like ``DynUNet`` (instance norm, leaky ReLU, strided convs).

    ``dim``: ``"3d"`` (patch_size (Z, Y, X)), ``"2d"`` or ``"2.5d"`` (patch_size
    (Y, X)). A 2.5D network takes ``in_channels * context_slices`` input channels,
    the ``context_slices`` (odd) neighbouring slices of each channel stacked as in
    :func:`slices_with_context`, and predicts the centre slice. ``context_slices``
    must be 1 for the other dims. Features double per stage from
    ``base_features`` up to ``max_features``.

    Output: in eval mode, or without deep supervision, logits ``(B, n_classes,
    *spatial)``. With ``deep_supervision=True`` in training mode, a stacked tensor
    ``(B, S, n_classes, *spatial)``: index 0 is the final output and 1..S-1 come
    from progressively coarser decoder stages (S = n_stages - 1, every decoder
    stage above the bottleneck, as in nnU-Net), each upsampled by MONAI to full
    resolution with nearest interpolation. Pass it to a loss made with
    ``deep_supervision_weights`` (see :mod:`voxflow.learn.losses`).
    """
    if dim not in DIMS:
        raise ValueError(f"dim must be one of {DIMS}, got {dim!r}")
    n_spatial = 3 if dim == "3d" else 2
    if len(patch_size) != n_spatial:
        raise ValueError(f"dim {dim!r} needs a patch_size of {n_spatial} values, got {tuple(patch_size)}")
    if dim == "2.5d":
        if context_slices < 1 or context_slices % 2 == 0:
            raise ValueError(f"context_slices must be odd and >= 1, got {context_slices}")
        in_channels = in_channels * context_slices
    elif context_slices != 1:
        raise ValueError(f"context_slices={context_slices} only applies to dim='2.5d', not {dim!r}")
    kernels, strides = unet_topology(patch_size, spacing=spacing, n_stages=n_stages)
    if len(strides) < 3:
        raise ValueError(
            f"patch {tuple(patch_size)} gives only {len(strides)} U-Net stages; DynUNet needs >= 3, "
            "use a larger patch"
        )
    for axis, s in enumerate(patch_size):
        total = 1
        for st in strides:
            total *= st[axis]
        if s % total:
            raise ValueError(f"patch_size {tuple(patch_size)}: axis {axis} must be divisible by {total}")
    filters = [min(base_features * 2**i, max_features) for i in range(len(strides))]
    return DynUNet(
        spatial_dims=n_spatial,
        in_channels=in_channels,
        out_channels=n_classes,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep_supervision,
        deep_supr_num=len(strides) - 2,
    )


def slices_with_context(x: torch.Tensor, context_slices: int) -> torch.Tensor:
    """(B, C, Z, Y, X) -> (B, Z, C * k, Y, X): each z slice with its k neighbours.

    Channel ``c * k + j`` holds channel c at z offset ``j - k // 2``; the patch is
    replicate-padded along z so edge slices repeat. The training data loader must
    use this same function so channel order matches at inference.
    """
    if context_slices < 1 or context_slices % 2 == 0:
        raise ValueError(f"context_slices must be odd and >= 1, got {context_slices}")
    r = context_slices // 2
    return _windows(F.pad(x, (0, 0, 0, 0, r, r), mode="replicate") if r else x, context_slices)


def _windows(xp: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, Z + k - 1, Y, X), already padded -> (B, Z, C * k, Y, X)."""
    if k == 1:
        return xp.transpose(1, 2)
    b, c, _, y, x = xp.shape
    win = xp.unfold(2, k, 1)  # (B, C, Z, Y, X, k)
    return win.permute(0, 2, 1, 5, 3, 4).reshape(b, -1, c * k, y, x)


class SliceWise(nn.Module):
    """Run a 2D/2.5D network on every z slice of a 3D patch.

    ``forward`` maps (B, C, Z, Y, X) to (B, K, Z, Y, X) (or (B, S, K, Z, Y, X) for
    a deep-supervision network in training mode), so sliding-window inference can
    treat 2D and 3D models alike. ``max_slices`` bounds how many slices go through
    the network at once, to cap memory on large patches.
    """

    def __init__(self, net: nn.Module, context_slices: int = 1, max_slices: int | None = None):
        super().__init__()
        if context_slices < 1 or context_slices % 2 == 0:
            raise ValueError(f"context_slices must be odd and >= 1, got {context_slices}")
        self.net = net
        self.context_slices = context_slices
        self.max_slices = max_slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"SliceWise expects (B, C, Z, Y, X), got shape {tuple(x.shape)}")
        b, z = x.shape[0], x.shape[2]
        r = self.context_slices // 2
        xp = F.pad(x, (0, 0, 0, 0, r, r), mode="replicate") if r else x
        step = self.max_slices or z
        outs = []
        for z0 in range(0, z, step):
            n = min(step, z - z0)
            sl = _windows(xp[:, :, z0 : z0 + n + 2 * r], self.context_slices)
            out = self.net(sl.reshape(b * n, *sl.shape[2:]))
            outs.append(out.reshape(b, n, *out.shape[1:]))
        out = torch.cat(outs, dim=1)  # (B, Z, ..., K, Y, X)
        return out.movedim(1, -3)


def n_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
