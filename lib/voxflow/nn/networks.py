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
STEMS = ("full_resolution", "strided")


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


def network_topology(patch_size: Sequence[int], spacing: Sequence[float] | None = None, n_stages: int | None = None,
                     stem: str = "full_resolution") -> tuple[list[list[int]], list[list[int]]]:
    """The network's (kernels, strides): :func:`unet_topology`, without its full-resolution stage for the strided
    stem (the first stride is then the first pooling's). ``n_stages`` counts the network's stages either way.
    The one rule of build_network and of the planner's plans.json."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    strided = stem == "strided"
    kernels, strides = unet_topology(patch_size, spacing=spacing,
                                     n_stages=None if n_stages is None else n_stages + strided)
    return (kernels[1:], strides[1:]) if strided else (kernels, strides)


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
    stem: str = "full_resolution",
) -> nn.Module:
    """Build an nnU-Net-like ``DynUNet`` (instance norm, leaky ReLU, strided convs).

    The instance norms are :class:`ChannelsLastInstanceNorm3d`/``2d``: torch's, computed without
    leaving channels-last on CPU (the trainer's memory format), which made a CPU training step
    about 20% faster (bench/train_throughput.py); the parameters and the maths are the same.

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
    ``deep_supervision_weights`` (see :mod:`voxflow.training.losses`).

    ``stem``: ``"full_resolution"`` (nnU-Net: the first stage convolves the patch at full resolution) or
    ``"strided"``: the same topology without its full-resolution stage, so the first convolution has the
    first pooling stride (as MONAI's ``UNet``), the logits are repeated back to the patch and a light
    full-resolution head (``max(4, base_features // 4)`` channels, seeing the image) corrects them
    (:class:`StridedStemUNet`). ``n_stages`` counts the network's stages either way. On CPU the full-resolution
    stage is most of the cost (its feature maps are 8x larger than the next stage's; about 6x slower per step
    at 64^3, bench/train_throughput.py), which is why the planner picks the strided stem there.
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
    kernels, strides = network_topology(patch_size, spacing, n_stages, stem)
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
    unet = DynUNet(
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
    if stem != "strided":
        return channels_last_instance_norms(unet)
    return channels_last_instance_norms(StridedStemUNet(unet, in_channels, n_classes, strides[0],  # the stem's
                                                        max(4, base_features // 4)))


class StridedStemUNet(nn.Module):
    """A U-Net without its full-resolution stage (its first convolution strided), plus a light full-resolution head.

    The U-Net's logits (at the stem's resolution) are repeated (nearest) to the patch, and a head adds a
    correction computed at full resolution from the decoder's last features (a transposed convolution to
    ``head_features`` channels) and the input image itself: a 3x3 convolution, leaky ReLU, a 1x1 convolution to
    the outputs. So boundaries finer than the stem's grid follow the image, at the cost of a few full-resolution
    channels instead of nnU-Net's two stages of ``base_features``. (Measured, bench/stem.py: without the head,
    logits interpolated linearly, BraTS 2018 sample mean Dice at equal time 0.392 against 0.526 for nnU-Net's
    stage; a head with instance norm and linear interpolation 0.497 at a 20 % slower step than this one.)
    Deep-supervision outputs ``(B, S, K, *spatial)``: the final output and the U-Net's heads, each repeated to the
    patch as DynUNet does."""

    def __init__(self, unet: DynUNet, in_channels: int, n_classes: int, stem_stride: Sequence[int],
                 head_features: int):
        super().__init__()
        self.unet = unet
        n = len(stem_stride)
        conv = nn.Conv3d if n == 3 else nn.Conv2d
        up = nn.ConvTranspose3d if n == 3 else nn.ConvTranspose2d
        base, stride = int(unet.filters[0]), tuple(int(s) for s in stem_stride)
        self.up: nn.Module = up(base, head_features, kernel_size=stride, stride=stride)  # type: ignore[arg-type]
        self.head = nn.Sequential(conv(head_features + in_channels, head_features, 3, padding=1),
                                  nn.LeakyReLU(0.01, inplace=True), conv(head_features, n_classes, 1))

    @staticmethod
    def _to(t: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        return t if tuple(t.shape[2:]) == size else F.interpolate(t, size=size, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unet
        size = tuple(x.shape[2:])
        features = u.skip_layers(x)  # the decoder's last features, at the stem's resolution
        out = self._to(u.output_block(features), size) + self.head(torch.cat([self.up(features), x], 1))
        if self.training and u.deep_supervision:
            return torch.stack([out, *(self._to(h, size) for h in u.heads)], dim=1)
        return out


class _InstanceNormChannelsLast(torch.autograd.Function):
    """Affine instance norm of a channels-last CPU tensor, output channels-last.

    torch's instance norm reshapes a channels-last input to channels-first (a copy in, and a channels-first
    output that the next channels-last convolution copies back); its group norm keeps channels-last but has
    a slow channels-last backward and a one-pass variance that loses precision when the mean is large
    against the spread. Here both passes work on the contiguous (B, voxels, C) view, with two-pass
    (centred) statistics, and reduce over the voxels with a batched matmul.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        b, c = x.shape[:2]
        xs = x.movedim(1, -1).reshape(b, -1, c)  # a view: x is channels-last
        mean = xs.mean(1, keepdim=True)
        y = torch.empty_like(x)  # channels-last like x; its (B, voxels, C) view is filled in place
        ys = torch.sub(xs, mean, out=y.movedim(1, -1).view(b, -1, c))
        var = torch.diagonal(torch.bmm(ys.transpose(1, 2), ys), dim1=1, dim2=2).unsqueeze(1) / xs.shape[1]
        rstd = torch.rsqrt(var + eps)
        ys.mul_(rstd * weight.view(1, 1, c)).add_(bias.view(1, 1, c))
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        b, c = x.shape[:2]
        xs = x.movedim(1, -1).reshape(b, -1, c)
        gs = grad.movedim(1, -1).reshape(b, -1, c)  # a view too when the gradient is channels-last
        n = xs.shape[1]
        dx = torch.empty_like(x)
        d = torch.sub(xs, mean, out=dx.movedim(1, -1).view(b, -1, c))  # x - mean, then dx in place
        sum_g = gs.sum(1, keepdim=True)
        sum_gxhat = torch.diagonal(torch.bmm(gs.transpose(1, 2), d), dim1=1, dim2=2).unsqueeze(1) * rstd
        a = weight.view(1, 1, c) * rstd
        # dx = a * (g - mean(g) - xhat * mean(g * xhat)), xhat = d * rstd
        d.mul_(-a * rstd * sum_gxhat / n).add_(-a * sum_g / n).addcmul_(gs, a)
        return dx, sum_gxhat.sum((0, 1)), sum_g.sum((0, 1)), None


def _is_channels_last(x: torch.Tensor) -> bool:
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    return x.is_contiguous(memory_format=fmt) and not x.is_contiguous()


def _fast_instance_norm(norm: nn.modules.instancenorm._InstanceNorm, x: torch.Tensor) -> torch.Tensor | None:
    """The channels-last instance norm of `x` where it applies (affine, CPU, float, channels-last), else None."""
    if (x.device.type == "cpu" and x.dim() in (4, 5) and x.dtype in (torch.float32, torch.float64)
            and norm.weight is not None and norm.bias is not None and not norm.track_running_stats
            and _is_channels_last(x)):
        return _InstanceNormChannelsLast.apply(x, norm.weight, norm.bias, norm.eps)
    return None


class ChannelsLastInstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (same parameters, state dict and maths) without the channels-last copies on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _fast_instance_norm(self, x)
        return super().forward(x) if y is None else y


class ChannelsLastInstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters, state dict and maths) without the channels-last copies on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _fast_instance_norm(self, x)
        return super().forward(x) if y is None else y


_TWINS: dict[type, type[nn.modules.instancenorm._InstanceNorm]] = {
    nn.InstanceNorm3d: ChannelsLastInstanceNorm3d, nn.InstanceNorm2d: ChannelsLastInstanceNorm2d}


def channels_last_instance_norms(module: nn.Module) -> nn.Module:
    """Swap (in place) every affine ``nn.InstanceNorm2d/3d`` for its channels-last twin; returns `module`."""
    for name, child in module.named_children():
        twin = _TWINS.get(type(child))
        if twin is not None and isinstance(child, nn.modules.instancenorm._InstanceNorm) and child.affine \
                and not child.track_running_stats:
            new = twin(child.num_features, eps=child.eps, affine=True)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            channels_last_instance_norms(child)
    return module


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
