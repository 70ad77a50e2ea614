"""MRI acquisition artefacts for the batched torch augmenter, after TorchIO's list.

Bias field (RandomBiasField), k-space motion (RandomMotion), ghosting (RandomGhosting),
spikes (RandomSpike) and low resolution along one axis (RandomAnisotropy; nnU-Net's
SimulateLowResolution). They change the image only, on its own device, and draw every
random number from the generator passed in; an artefact whose probability is 0 draws
nothing, so switching artefacts off leaves the rest of the random stream untouched.

Selection is nnU-Net's: a sample is chosen with the artefact's probability, then each of
its channels with ``p_per_channel``; every chosen channel gets its own parameters (the
modalities of a multi-contrast exam are separate acquisitions). In 2D/2.5D the image is
(B, C*k, Y, X) with the k context slices of a modality next to each other (channel
c*k + j); with ``context_slices=k`` the k slices of a modality are chosen together and
share the artefact's parameters, as the slices of one acquisition would.

The images are z-scored, so signed: the k-space artefacts take the real part of the
inverse transform (what TorchIO does), which for a real image needs only a real FFT
along the one axis concerned (masks along one k-space axis act on that axis alone).
Bias field, motion, ghosting and spikes then give each channel back its input mean and
standard deviation (nnU-Net's ``retain_stats``), so the network sees the intensity
scale it expects; low resolution is an averaging and keeps the mean by construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from voxflow.training.draws import _rand, _rotation, _uniform

from voxflow.training.augment_config import AugmentConfig


def _randint(low: int, high: int, shape: tuple[int, ...], gen: torch.Generator | None) -> Tensor:
    """Integers uniform in [low, high] (both included), on the CPU."""
    return (low + (_rand(shape, gen) * (high - low + 1)).floor()).clamp(max=high).long()


def _mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel spatial mean and std, (n, k) each (var_mean's Welford pass is ~30x slower on CPU)."""
    flat = x.flatten(2)
    mean = flat.mean(2, keepdim=True)
    std = torch.linalg.vector_norm(flat - mean, dim=2) / math.sqrt(max(flat.shape[2] - 1, 1))
    return mean[..., 0], std


def _match_stats(y: Tensor, ref: Tensor) -> Tensor:
    """``y`` (a temporary, rescaled in place) with each channel's spatial mean and std set to ``ref``'s."""
    per = (*y.shape[:2], *[1] * (y.ndim - 2))
    (m0, s0), (m1, s1) = _mean_std(ref), _mean_std(y)
    scale = s0 / s1.clamp_min(1e-6)
    return y.mul_(scale.reshape(per)).add_((m0 - m1 * scale).reshape(per))


def _along(v: Tensor, ndim: int, dim: int) -> Tensor:
    """(n, L) -> a tensor of ``ndim`` dims with n first and L at ``dim``, ones elsewhere."""
    shape = [1] * ndim
    shape[0], shape[dim] = v.shape[0], v.shape[1]
    return v.reshape(shape)


def _by_axis(axis: Tensor) -> list[tuple[int, Tensor | None]]:
    """(axis, the items along it) per distinct axis; None for all items (no gather, no scatter)."""
    values = axis.unique().tolist()
    if len(values) == 1:
        return [(int(values[0]), None)]
    return [(int(a), torch.nonzero(axis == a).flatten()) for a in values]


def _rows(t: Tensor, sel: Tensor | None) -> Tensor:
    return t if sel is None else t[sel.to(t.device)]


def _put(out: Tensor, x: Tensor, sel: Tensor | None, value: Tensor) -> Tensor:
    """``value`` as the whole result, or written into the rows ``sel`` of a new output (never into x)."""
    if sel is None:
        return value
    if out is x:
        out = torch.empty_like(x)
    out[sel.to(x.device)] = value
    return out


def bias_field(x: Tensor, coefficients: Tensor, order: int) -> Tensor:
    """Multiply by exp(polynomial of ``order`` in the patch coordinates, scaled to [-1, 1]).

    x: (n, k, *S); coefficients: (n, terms), one per monomial of degree <= order, in the
    order of :func:`bias_terms`. The field multiplies the intensity above the channel's
    minimum (the z-scored image's "zero signal"), shared by the k channels of an item.
    """
    n, shape, d = x.shape[0], x.shape[2:], x.ndim - 2
    powers = torch.arange(order + 1, device=x.device, dtype=x.dtype)
    vander = [((torch.arange(s, device=x.device, dtype=x.dtype) - (s - 1) / 2) / max((s - 1) / 2, 1))[:, None]
              ** powers for s in shape]  # (s, order+1) per axis
    coef = torch.zeros((n,) + (order + 1,) * d, device=x.device, dtype=x.dtype)
    coef[(slice(None), *bias_terms(order, d).T)] = coefficients.to(x.device, x.dtype)
    if d == 3:
        log_field = torch.einsum("nijk,zi,yj,xk->nzyx", coef, *vander)
    else:
        log_field = torch.einsum("nij,yi,xj->nyx", coef, *vander)
    lo = x.flatten(2).amin(2).reshape(n, -1, *[1] * d)
    return _match_stats((x - lo).mul_(log_field.exp_()[:, None]).add_(lo), x)


def bias_terms(order: int, d: int) -> Tensor:
    """(terms, d) exponents of the monomials of degree <= order (TorchIO's loop order)."""
    if d == 2:
        return torch.tensor([(i, j) for i in range(order + 1) for j in range(order + 1 - i)])
    return torch.tensor([(i, j, k) for i in range(order + 1) for j in range(order + 1 - i)
                         for k in range(order + 1 - i - j)])


def _rigid_grid(rotation: Tensor, shift: Tensor, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """grid_sample grid for input voxel = rotation @ output voxel + shift, about the patch centre.

    Each grid coordinate is a sum of d one-axis terms, built by broadcasting (F.affine_grid's
    batched matmul is ~100x slower on CPU)."""
    m, d = rotation.shape[0], len(shape)
    half = torch.tensor(shape, dtype=torch.float32) / 2
    lin = (rotation * half[None, None, :] / half[None, :, None]).to(device)  # D^-1 R D, normalised units
    off = (shift / half).to(device)
    grid = torch.empty((m, *shape, d), device=device)
    axes = [(2 * torch.arange(s, device=device, dtype=torch.float32) + 1) / s - 1 for s in shape]
    for j in range(d):  # output coordinate along axis j; grid_sample wants (x, y[, z]): slot d-1-j
        acc = off[:, j].reshape(m, *[1] * d)
        for i in range(d):
            along_i = axes[i].reshape([1] + [-1 if a == i else 1 for a in range(d)])
            acc = acc + lin[:, j, i].reshape(m, *[1] * d) * along_i
        grid[..., d - 1 - j] = acc
    return grid


def motion_owners(times: Tensor, n: int) -> Tensor:
    """(m, T) sorted times in (0, 1) -> (m, n) which of the T+1 images fills each k-space plane.

    Planes in FFT order. As TorchIO: segment i of the fft-shifted axis runs from
    times[i-1] to times[i] and holds moved image i, except that the segment holding the
    k-space centre takes the unmoved image (0) and gives its own to segment 0.
    """
    bounds = (times * n).floor()  # (m, T)
    freq = torch.fft.fftfreq(n, 1 / n).round()
    shifted = freq + n // 2  # fft-shifted index of each FFT-order plane
    seg = (shifted[None, :, None] >= bounds[:, None, :]).sum(2)  # (m, n)
    centre = (n // 2 >= bounds).sum(1, keepdim=True)  # (m, 1) segment of the k-space centre
    return torch.where(seg == centre, 0, torch.where(seg == 0, centre, seg))


def motion(x: Tensor, axis: Tensor, rotation: Tensor, shift: Tensor, times: Tensor, padding: str) -> Tensor:
    """k-space assembled from segments (along ``axis``) of the FFTs of rigidly moved copies.

    x: (n, k, *S); axis: (n,); rotation: (n, T, d, d); shift: (n, T, d) voxels; times: (n, T).
    """
    n, k, shape, d = x.shape[0], x.shape[1], tuple(x.shape[2:]), x.ndim - 2
    t = times.shape[1]
    grid = _rigid_grid(rotation.reshape(n * t, d, d), shift.reshape(n * t, d), shape, x.device)
    moved = F.grid_sample(x.repeat_interleave(t, 0), grid, mode="bilinear", padding_mode=padding,
                          align_corners=False).reshape(n, t, k, *shape)
    out = x
    for a, sel in _by_axis(axis):
        size = shape[a]
        owner = F.one_hot(motion_owners(_rows(times, sel), size), t + 1).float()  # (m, size, T+1)
        # the real part of the inverse FFT of a real image's masked spectrum = the real inverse
        # FFT with the mask made even: (M(f) + M(-f)) / 2 on f >= 0
        half = size // 2 + 1
        mask = (owner[:, :half] + owner[:, (-torch.arange(half)) % size]) / 2  # (m, half, T+1)
        mask = mask.permute(0, 2, 1).reshape(owner.shape[0], t + 1, 1, *[half if i == a else 1 for i in range(d)])
        mask = mask.to(x.device)
        spec = torch.fft.rfft(_rows(x, sel), dim=2 + a).mul_(mask[:, 0])
        spec += torch.fft.rfft(_rows(moved, sel), dim=3 + a).mul_(mask[:, 1:]).sum(1)
        out = _put(out, x, sel, torch.fft.irfft(spec, n=size, dim=2 + a))
    return _match_stats(out, x)


def ghosting(x: Tensor, axis: Tensor, count: Tensor, intensity: Tensor, restore: float) -> Tensor:
    """Scale the k-space planes whose frequency along ``axis`` is a multiple of ``count`` by
    1 - intensity, except the centre (|f| <= restore * size / 2, DC always): ``count``
    ghosts, copies shifted by size/count. x: (n, k, *S); axis, count, intensity: (n,)."""
    shape, d = tuple(x.shape[2:]), x.ndim - 2
    out = x
    for a, sel in _by_axis(axis):
        size = shape[a]
        freq = torch.arange(size // 2 + 1)
        planes = (freq[None] % _rows(count, sel)[:, None] == 0) & (freq > max(restore * size / 2, 0))[None]
        mask = 1 - _rows(intensity, sel)[:, None] * planes  # (m, half): even in f, so a real FFT suffices
        mask = _along(mask, d + 2, 2 + a).to(x.device, x.dtype)
        out = _put(out, x, sel, torch.fft.irfft(torch.fft.rfft(_rows(x, sel), dim=2 + a).mul_(mask), n=size, dim=2 + a))
    return _match_stats(out, x)


def spikes(x: Tensor, freq: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
    """Add plane waves: TorchIO's single bright k-space point, real part taken, is exactly
    a cosine stripe pattern, built here directly (no FFT). freq: (n, m, d) integer cycles per
    patch along each axis; amplitude: (n, m) in units of each channel's std; phase: (n, m)."""
    n, shape, d = x.shape[0], x.shape[2:], x.ndim - 2
    waves = torch.zeros((n, *shape), device=x.device, dtype=x.dtype)
    for s in range(freq.shape[1]):
        arg = phase[:, s].reshape(n, *[1] * d).to(x.device, x.dtype)
        for a, size in enumerate(shape):
            ramp = torch.arange(size, device=x.device, dtype=x.dtype) * (2 * math.pi / size)
            arg = arg + _along(freq[:, s, a:a + 1].to(x.device, x.dtype) * ramp[None], d + 1, 1 + a)
        waves += amplitude[:, s].reshape(n, *[1] * d).to(x.device, x.dtype) * torch.cos(arg)
    std = _mean_std(x)[1].reshape(n, -1, *[1] * d)
    return _match_stats(torch.addcmul(x, waves[:, None], std), x)


def low_resolution(x: Tensor, axis: Tensor, factor: Tensor) -> Tensor:
    """Average down one axis by ``factor`` (thick slices), then interpolate back linearly."""
    shape, d = tuple(x.shape[2:]), x.ndim - 2
    mode = "trilinear" if d == 3 else "bilinear"
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        a = int(axis[i])
        small = list(shape)
        small[a] = max(1, round(shape[a] / float(factor[i])))
        down = F.interpolate(x[i:i + 1], size=small, mode="area")
        out[i:i + 1] = F.interpolate(down, size=shape, mode=mode, align_corners=False)
    return out


def _chosen_items(p: float, b: int, groups: int, cfg: AugmentConfig, gen: torch.Generator | None) -> Tensor | None:
    """Flat (sample, channel group) indices an artefact applies to; nothing drawn when p == 0."""
    if p <= 0:
        return None
    sample = _rand(b, gen) < p
    if not sample.any():
        return None
    if cfg.p_per_channel < 1:
        chan = _rand((b, groups), gen) < cfg.p_per_channel
    else:  # every channel: nothing to draw
        chan = torch.ones(b, groups, dtype=torch.bool)
    idx = torch.nonzero((sample[:, None] & chan).flatten()).flatten()
    return idx if len(idx) else None


def _axes(allowed: tuple[int, ...] | None, d: int, n: int, gen: torch.Generator | None) -> Tensor:
    axes = tuple(range(d)) if allowed is None else allowed
    for a in axes:
        if not 0 <= a < d:
            raise ValueError(f"artefact axis {a} out of range for {d} spatial axes")
    return torch.tensor(axes)[_randint(0, len(axes) - 1, (n,), gen)]


def mri_artefacts(x: Tensor, cfg: AugmentConfig, gen: torch.Generator | None, context_slices: int = 1) -> Tensor:
    """Apply bias field, motion, ghosting, spikes, then low resolution to (B, C, *S) ``x``.

    Returns ``x`` itself when nothing applies, otherwise a new tensor.
    """
    b, c, shape, d = x.shape[0], x.shape[1], tuple(x.shape[2:]), x.ndim - 2
    k = int(context_slices)
    if k < 1 or c % k:
        raise ValueError(f"context_slices={context_slices} must divide the {c} channels")
    groups = c // k
    items = x.reshape(b * groups, k, *shape)
    cloned = False

    def put(idx: Tensor, value: Tensor) -> None:  # value: a new tensor, never a view of x
        nonlocal items, cloned
        if len(idx) == items.shape[0]:
            items, cloned = value, True
            return
        if not cloned:
            items, cloned = items.clone(), True
        items[idx.to(x.device)] = value

    def get(idx: Tensor) -> Tensor:
        return items[idx.to(x.device)]

    idx = _chosen_items(cfg.p_bias_field, b, groups, cfg, gen)
    if idx is not None:
        terms = len(bias_terms(cfg.bias_field_order, d))
        coef = _uniform((-cfg.bias_field_coefficient, cfg.bias_field_coefficient), (len(idx), terms), gen)
        put(idx, bias_field(get(idx), coef, cfg.bias_field_order))
    idx = _chosen_items(cfg.p_motion, b, groups, cfg, gen)
    if idx is not None:
        n, t = len(idx), cfg.motion_transforms
        axis = _axes(None, d, n, gen)
        deg = cfg.motion_degrees * math.pi / 180
        rotation = _rotation(_uniform((-deg, deg), (n * t, 3 if d == 3 else 1), gen)).reshape(n, t, d, d)
        shift = _uniform((-cfg.motion_translation, cfg.motion_translation), (n, t, d), gen)
        step = 1 / (t + 1)
        times = torch.arange(1, t + 1) * step + _uniform((-0.3 * step, 0.3 * step), (n, t), gen)
        put(idx, motion(get(idx), axis, rotation, shift, times, cfg.image_padding))
    idx = _chosen_items(cfg.p_ghosting, b, groups, cfg, gen)
    if idx is not None:
        n = len(idx)
        axis = _axes(None, d, n, gen)
        count = _randint(*cfg.ghosting_count_range, (n,), gen)
        intensity = _uniform(cfg.ghosting_intensity_range, (n,), gen)
        put(idx, ghosting(get(idx), axis, count, intensity, cfg.ghosting_restore))
    idx = _chosen_items(cfg.p_spike, b, groups, cfg, gen)
    if idx is not None:
        n, most = len(idx), cfg.spike_count_range[1]
        count = _randint(*cfg.spike_count_range, (n,), gen)
        freq = torch.stack([_randint(-(s // 2), (s - 1) // 2, (n, most), gen) for s in shape], 2)
        freq[..., -1] = torch.where((freq == 0).all(2), 1, freq[..., -1])  # a DC "spike" is no stripe
        amplitude = _uniform(cfg.spike_intensity_range, (n, most), gen) * (torch.arange(most) < count[:, None])
        phase = _uniform((0.0, 2 * math.pi), (n, most), gen)
        put(idx, spikes(get(idx), freq, amplitude, phase))
    idx = _chosen_items(cfg.p_low_res, b, groups, cfg, gen)
    if idx is not None:
        n = len(idx)
        axis = _axes(cfg.low_res_axes, d, n, gen)
        factor = _uniform(cfg.low_res_factor_range, (n,), gen)
        put(idx, low_resolution(get(idx), axis, factor))
    return items.reshape(x.shape) if cloned else x
