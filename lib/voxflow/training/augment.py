"""Batched on-the-fly augmentation in torch (nnU-Net-like), on the batch's own device.

Doing it in torch on the training device avoids a CPU bottleneck in the data
loader. Rotation, scaling and elastic deformation of a sample are composed into
one sampling grid, so the image is interpolated once (less blur than chaining
resamplings) and the label is sampled with nearest neighbour on the identical
grid, which keeps them aligned. Mirroring is an exact ``torch.flip`` of both.
MRI acquisition artefacts (bias field, k-space motion, ghosting, spikes, low
resolution; :mod:`voxflow.training.augment_mri`) follow, on the image only.
All randomness comes from ``generator``, so a seeded generator reproduces a batch.
A CPU generator is cheapest (parameter draws are tiny; only the noise field is
drawn full size, then moved), but a generator on the batch's GPU works too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from voxflow.training.augment_config import AugmentConfig
from voxflow.training.draws import _around_one, _rand, _randn, _rotation, _uniform


def _smooth(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of (N, C, *s) with replicate padding."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(2 * sigma))
    k1 = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma**2))
    k1 = k1 / k1.sum()
    nd, c = x.ndim - 2, x.shape[1]
    conv = F.conv3d if nd == 3 else F.conv2d
    for axis in range(nd):
        shape = [1] * nd
        shape[axis] = 2 * r + 1
        pad = [0] * (2 * nd)
        pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = r
        x = conv(F.pad(x, pad, mode="replicate"), k1.reshape(1, 1, *shape).repeat(c, 1, *[1] * nd), groups=c)
    return x


def _elastic(n: int, shape: tuple[int, ...], cfg: AugmentConfig, gen: torch.Generator | None,
             device: torch.device) -> Tensor:
    """(n, d, *shape) smooth displacement in voxels: coarse noise, smoothed, upsampled."""
    d = len(shape)
    coarse = tuple(max(2, math.ceil(s / cfg.elastic_spacing) + 1) for s in shape)
    disp = _smooth(_rand((n, d, *coarse), gen, normal=True), cfg.elastic_sigma)
    peak = disp.flatten(1).abs().amax(1).clamp_min(1e-8)
    magnitude = _uniform(cfg.elastic_magnitude, (n,), gen)
    disp = disp * (magnitude / peak).reshape(n, *[1] * (d + 1))
    mode = "trilinear" if d == 3 else "bilinear"
    return F.interpolate(disp.to(device), size=shape, mode=mode, align_corners=True)


def _grid(matrix: Tensor, disp: Tensor | None, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Sampling grid for grid_sample: input voxel = matrix @ output voxel + disp.

    Coordinates are in voxels relative to the patch centre (so rotations are not
    distorted by non-cubic patches), then normalised for align_corners=False.
    """
    axes = [torch.arange(s, dtype=torch.float32, device=device) - (s - 1) / 2 for s in shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (d, *shape)
    q = torch.einsum("nij,j...->ni...", matrix.to(device), coords)
    if disp is not None:
        q = q + disp
    size = torch.tensor(shape, dtype=torch.float32, device=device).reshape(1, -1, *[1] * len(shape))
    return (q * 2 / size).movedim(1, -1).flip(-1)  # grid_sample wants (x, y[, z]) order


def _spatial(image: Tensor, label: Tensor, cfg: AugmentConfig, gen: torch.Generator | None
             ) -> tuple[Tensor, Tensor]:
    b, shape, dev = image.shape[0], tuple(image.shape[2:]), image.device
    d = len(shape)
    image, label = image.clone(), label.clone()  # written in place below; callers keep theirs
    do_rot, do_scale, do_el = (_rand(b, gen) < p for p in (cfg.p_rotation, cfg.p_scaling, cfg.p_elastic))
    angles = _uniform((-cfg.rotation_deg, cfg.rotation_deg), (b, 3 if d == 3 else 1), gen) * math.pi / 180
    scale = _around_one(cfg.scale_range, (b,), gen)
    matrix = torch.where(do_rot.reshape(b, 1, 1), _rotation(angles), torch.eye(d))
    matrix = matrix * torch.where(do_scale, scale, torch.ones(b)).reshape(b, 1, 1)
    disp = None
    if do_el.any():
        disp = torch.zeros((b, d, *shape), device=dev)
        disp[do_el.to(dev)] = _elastic(int(do_el.sum()), shape, cfg, gen, dev)
    idx = torch.nonzero(do_rot | do_scale | do_el).flatten()
    if len(idx):  # samples without rotation/scaling/elastic skip resampling altogether
        grid = _grid(matrix[idx], None if disp is None else disp[idx.to(dev)], shape, dev)
        idx = idx.to(dev)
        image[idx] = F.grid_sample(image[idx], grid, mode="bilinear", padding_mode=cfg.image_padding,
                                   align_corners=False)
        lab = F.grid_sample(label[idx].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        label[idx] = lab.round().to(label.dtype)
    axes = range(d) if cfg.mirror_axes is None else cfg.mirror_axes
    for axis in axes:
        if not 0 <= axis < d:
            raise ValueError(f"mirror axis {axis} out of range for {d} spatial axes")
        flip = torch.nonzero(_rand(b, gen) < cfg.p_mirror).flatten().to(dev)
        if len(flip):
            image[flip] = image[flip].flip(2 + axis)
            label[flip] = label[flip].flip(2 + axis)
    return image, label


def _intensity(x: Tensor, cfg: AugmentConfig, gen: torch.Generator | None) -> Tensor:
    b, c, dev = x.shape[0], x.shape[1], x.device
    per = (b, c) + (1,) * (x.ndim - 2)

    def chosen(p: float) -> Tensor:
        return (_rand(b, gen) < p).reshape(b, *[1] * (x.ndim - 1)).to(dev)

    m = chosen(cfg.p_noise)
    std = _uniform(cfg.noise_variance, (b,), gen).sqrt().reshape(b, *[1] * (x.ndim - 1)).to(dev)
    if m.any():
        x = torch.where(m, x + std * _randn(tuple(x.shape), gen, dev), x)
    m = chosen(cfg.p_brightness)
    factor = _uniform(cfg.brightness_range, per[:2], gen).reshape(per).to(dev)
    x = torch.where(m, x * factor, x)
    m = chosen(cfg.p_contrast)
    factor = _around_one(cfg.contrast_range, per[:2], gen).reshape(per).to(dev)
    if m.any():  # scale around the mean, clipped to the original range (nnU-Net's preserve_range)
        flat = x.flatten(2)
        mean, lo, hi = flat.mean(2).reshape(per), flat.amin(2).reshape(per), flat.amax(2).reshape(per)
        x = torch.where(m, torch.minimum(torch.maximum((x - mean) * factor + mean, lo), hi), x)
    m = chosen(cfg.p_gamma)
    gamma = _around_one(cfg.gamma_range, per[:2], gen).reshape(per).to(dev)
    if m.any():  # on [0, 1]-rescaled intensities, then mapped back to the original range
        flat = x.flatten(2)
        lo, hi = flat.amin(2).reshape(per), flat.amax(2).reshape(per)
        span = (hi - lo).clamp_min(1e-8)
        x = torch.where(m, ((x - lo) / span).clamp(0, 1) ** gamma * span + lo, x)
    if cfg.p_inverted_gamma > 0:  # drawn after all of the above, so p 0 leaves their stream as it was
        m = chosen(cfg.p_inverted_gamma)
        gamma = _around_one(cfg.gamma_range, per[:2], gen).reshape(per).to(dev)
        if m.any():  # nnU-Net's invert_image: gamma of the negated image, negated back
            flat = x.flatten(2)
            lo, hi = flat.amin(2).reshape(per), flat.amax(2).reshape(per)
            span = (hi - lo).clamp_min(1e-8)
            # 1 - (1 - u) ** gamma, in place on one temporary (each fresh full-size tensor costs a pass of
            # page faults on CPU); (1 - u) ** gamma as exp(gamma * log(1 - u)), 0 ** gamma = 0 for gamma > 0
            v = (x - lo).div_(span).clamp_(0, 1).neg_().add_(1)
            v = v.clamp_min_(1e-30).log_().mul_(gamma).exp_().neg_().add_(1).mul_(span).add_(lo)
            x = torch.where(m, v, x)
    return x


@torch.no_grad()
def augment_batch(image: Tensor, label: Tensor, cfg: AugmentConfig,
                  generator: torch.Generator | None = None, context_slices: int = 1) -> tuple[Tensor, Tensor]:
    """Augment a batch: image (B, C, *spatial) float, label (B, 1, *spatial) integer.

    Works for 3D (5D tensors) and 2D (4D tensors) on any device; returns new
    tensors of the input dtypes (inputs are not modified). Spatial transforms go
    first (one resampling per sample, then flips), then noise, brightness,
    contrast, gamma and inverted gamma, then the MRI artefacts, on the image only.
    ``context_slices``: for 2.5D input (B, C*k, Y, X), k, so that the MRI artefacts
    treat the k slices of a modality as one acquisition (same parameters).
    """
    if image.ndim not in (4, 5):
        raise ValueError(f"image must be (B, C, Y, X) or (B, C, Z, Y, X), got {tuple(image.shape)}")
    if label.shape != (image.shape[0], 1, *image.shape[2:]):
        raise ValueError(f"label {tuple(label.shape)} must be (B, 1, *spatial) matching image {tuple(image.shape)}")
    if label.is_floating_point():
        raise ValueError(f"label must be an integer tensor, got {label.dtype}")
    img, lab = _spatial(image.float(), label, cfg, generator)
    img = _intensity(img, cfg, generator)
    from voxflow.training.augment_mri import mri_artefacts

    img = mri_artefacts(img, cfg, generator, context_slices)
    return img.to(image.dtype), lab
