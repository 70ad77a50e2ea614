"""Patch-based (sliding-window) inference with nnU-Net semantics and bounded memory.

Why a custom loop rather than ``monai.inferers.sliding_window_inference``:

* window placement follows nnU-Net (``compute_steps_for_sliding_window``): windows are
  spread evenly so the last one ends at the border, instead of clamping the last one;
* softmax probabilities (not logits) are blended, optionally averaged over mirrored inputs;
* only one batch of windows is ever on the device and nothing volume-sized is allocated
  besides the output itself.  The Gaussian importance map is a product of 1D factors and
  the windows form a Cartesian grid, so the sum of weights at a voxel factorises into
  three 1D profiles: no full-size weight ("count") map is needed;
* windows are visited z-major, so planes behind the current window row are final and can
  be normalised and written out slab by slab (e.g. into a zarr array larger than RAM).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "compute_steps",
    "gaussian_importance_map",
    "sliding_window_predict",
    "predict_to_zarr",
    "fold_ensemble",
]

#: floor of each 1D Gaussian factor: keeps every weight > 0 (corners >= 1e-12), far from
#: float32 underflow, and keeps the map exactly separable.
_GAUSS_FLOOR = 1e-4


def compute_steps(size: int, patch: int, overlap: float) -> list[int]:
    """Window start positions along one axis, as nnU-Net spreads them.

    Consecutive windows overlap by at least ``overlap`` of the patch; the windows are
    distributed evenly so the first starts at 0 and the last ends exactly at ``size``.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= patch:
        return [0]
    target = patch * (1.0 - overlap)
    n = int(np.ceil((size - patch) / target)) + 1
    step = (size - patch) / (n - 1)
    return [int(np.round(step * i)) for i in range(n)]


def _gaussian_1d(n: int, sigma_scale: float) -> np.ndarray:
    """Symmetric 1D Gaussian over ``n`` voxels, max 1, floored at ``_GAUSS_FLOOR``."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * (n * sigma_scale) ** 2))
    return np.maximum(g / g.max(), _GAUSS_FLOOR)


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> np.ndarray:
    """Gaussian window weights (sigma = patch * sigma_scale per axis), max 1, strictly > 0.

    Built as an outer product of floored 1D Gaussians so it stays separable, which is what
    lets :func:`sliding_window_predict` normalise without a volume-sized weight map.
    """
    out = np.ones((), dtype=np.float64)
    for n in patch_size:
        out = np.multiply.outer(out, _gaussian_1d(int(n), sigma_scale))
    return out.astype(np.float32)


def _axis_weights(weighting: str, n: int, sigma_scale: float) -> np.ndarray:
    if weighting == "gaussian":
        return _gaussian_1d(n, sigma_scale)
    if weighting == "constant":
        return np.ones(n)
    raise ValueError(f"weighting must be 'gaussian' or 'constant', got {weighting!r}")


class _Accumulator:
    """Weighted sums of window probabilities, normalised and released plane by plane.

    ``direct``: sums go straight into the float32 numpy output.  Otherwise (zarr, other
    dtypes) into a rolling buffer of ``depth`` z-planes starting at plane ``done``;
    planes are copied to ``out`` once no later window can touch them.
    """

    def __init__(self, out: Any, norms: list[np.ndarray], depth: int):
        self.out, self.done = out, 0
        self.inv_yx = (1.0 / np.multiply.outer(norms[1], norms[2])).astype(np.float32)
        self.inv_z = 1.0 / norms[0]
        self.direct = isinstance(out, np.ndarray) and out.dtype == np.float32
        self.buf = out if self.direct else np.zeros((out.shape[0], depth, *out.shape[2:]), np.float32)
        self.buf_t = torch.from_numpy(self.buf)  # shares memory; torch adds strided views ~2x faster

    def add(self, probs: torch.Tensor, z0: int, ys: slice, xs: slice) -> None:
        b = 0 if self.direct else self.done
        self.buf_t[:, z0 - b : z0 - b + probs.shape[1], ys, xs].add_(probs)

    def release(self, z_end: int) -> None:
        """Normalise planes [done, z_end) and hand them to ``out``."""
        a, b = self.done, min(z_end, self.out.shape[1])
        if b <= a:
            return
        off = 0 if self.direct else a
        for z in range(a, b):
            self.buf[:, z - off] *= self.inv_yx * np.float32(self.inv_z[z])
        if not self.direct:
            d = b - a
            self.out[:, a:b] = self.buf[:, :d]
            self.buf[:, :-d] = self.buf[:, d:].copy() if d < self.buf.shape[1] else 0
            self.buf[:, self.buf.shape[1] - d :] = 0
        self.done = b


def _read_window(vol: Any, start: Sequence[int], patch: Sequence[int], pad: Sequence[int]) -> np.ndarray:
    """Window at padded-grid ``start``; the region outside the volume reads as 0."""
    src = [slice(max(s - p, 0), min(s - p + n, dim)) for s, p, n, dim in zip(start, pad, patch, vol.shape[1:])]
    data = np.asarray(vol[(slice(None), *src)], dtype=np.float32)
    if data.shape[1:] == tuple(patch):
        return data
    win = np.zeros((vol.shape[0], *patch), np.float32)
    dst = tuple(slice(r.start - (s - p), r.stop - (s - p)) for r, s, p in zip(src, start, pad))
    win[(slice(None), *dst)] = data
    return win


def _predict_batch(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    flips: list[tuple[int, ...]],
    weight: torch.Tensor,
    cast: Any,
    activation: str = "softmax",
) -> torch.Tensor:
    """Weighted softmax (or sigmoid: region outputs) of one batch averaged over flips, on the CPU.  A function
    of its own so logits and inputs are freed before the next batch's forward pass."""
    probs = None
    for dims in flips:
        with cast:
            logits = predictor(torch.flip(x, dims) if dims else x)
        if activation == "none":  # raw outputs (regression, e.g. synthesized images)
            p = logits.float().clone()
        else:
            p = torch.softmax(logits.float(), dim=1) if activation == "softmax" else torch.sigmoid(logits.float())
        del logits
        p = torch.flip(p, dims) if dims else p
        probs = p if probs is None else probs.add_(p)
    assert probs is not None
    return probs.mul_(weight).cpu()


def sliding_window_predict(
    volume: np.ndarray | torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    patch_size: Sequence[int],
    n_classes: int,
    overlap: float = 0.5,
    weighting: str = "gaussian",
    sigma_scale: float = 1 / 8,
    batch_size: int = 2,
    mirror_axes: Sequence[int] = (),
    device: str | torch.device = "cpu",
    amp: bool = False,
    out: Any = None,
    progress: bool = False,
    activation: str = "softmax",
) -> Any:
    """Softmax probabilities (K, Z, Y, X) of ``predictor`` tiled over a (C, Z, Y, X) volume
    (``activation="sigmoid"``: independent per-channel probabilities, for region outputs;
    ``activation="none"``: the raw outputs, blended alike, for regression such as image synthesis).

    The volume stays on the CPU (numpy, CPU/GPU tensor or any sliceable array such as
    zarr); each batch of ``batch_size`` windows is moved to ``device``, predicted (under
    fp16 autocast if ``amp`` and CUDA), softmaxed in float32, averaged over the
    2**len(mirror_axes) flips of ``mirror_axes`` (spatial axes 0..2), weighted and
    accumulated on the CPU.  Axes shorter than the patch are zero-padded symmetrically
    (as nnU-Net and MONAI do) and cropped back.

    ``out``: None -> a new float32 numpy array is returned; a float32 numpy array is
    accumulated into in place; anything else of shape (K, Z, Y, X) supporting slice
    assignment (a zarr array) receives normalised z-slabs while only a patch-deep
    buffer lives in memory.  ``out`` is returned.
    """
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu().numpy()
    if len(volume.shape) != 4 or len(patch_size) != 3:
        raise ValueError("expected volume (C, Z, Y, X) and a 3D patch_size")
    patch = tuple(int(p) for p in patch_size)
    shape = tuple(int(s) for s in volume.shape[1:])
    pad = [max(p - s, 0) // 2 for p, s in zip(patch, shape)]
    grid = [compute_steps(max(s, p), p, overlap) for s, p in zip(shape, patch)]
    if any(a not in (0, 1, 2) for a in mirror_axes):
        raise ValueError(f"mirror_axes must be spatial axes 0..2, got {mirror_axes}")
    if activation not in ("softmax", "sigmoid", "none"):
        raise ValueError(f"activation must be softmax, sigmoid or none, got {activation!r}")

    # Separable weights: sum over the window grid of w(z)w(y)w(x) = nz(z) ny(y) nx(x).
    w1d = [_axis_weights(weighting, p, sigma_scale) for p in patch]
    norms = []
    for w, steps, p, pb, s in zip(w1d, grid, patch, pad, shape):
        n = np.zeros(max(s, p))
        for st in steps:
            n[st : st + p] += w
        norms.append(n[pb : pb + s])

    if out is None:
        out = np.zeros((n_classes, *shape), np.float32)
    elif tuple(out.shape) != (n_classes, *shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {(n_classes, *shape)}")
    elif isinstance(out, np.ndarray):
        out[...] = 0
    acc = _Accumulator(out, norms, depth=min(patch[0], shape[0]))

    dev = torch.device(device)
    axes = [a + 2 for a in mirror_axes]
    flips = [tuple(c) for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    wmap = gaussian_importance_map(patch, sigma_scale) if weighting == "gaussian" else np.ones(patch, np.float32)
    weight = (torch.from_numpy(wmap) / len(flips))[None, None].to(dev)  # flips are summed
    cast = torch.autocast("cuda", dtype=torch.float16) if amp and dev.type == "cuda" else nullcontext()
    windows = list(itertools.product(*grid))  # z-major: rows of windows ordered along z

    with torch.inference_mode(), tqdm(total=len(windows), disable=not progress, desc="sliding window") as bar:
        for i in range(0, len(windows), batch_size):
            batch = windows[i : i + batch_size]
            x = torch.from_numpy(np.stack([_read_window(volume, w, patch, pad) for w in batch]))
            probs = _predict_batch(predictor, x.to(dev, non_blocking=True), flips, weight, cast, activation)
            del x
            for k, start in enumerate(batch):
                # window extent in volume coordinates (cropped to it) and within the window
                zz, ys, xs = (slice(max(s - q, 0), min(s - q + n, d)) for s, q, n, d in zip(start, pad, patch, shape))
                lz, ly, lx = (slice(r.start - s + q, r.stop - s + q) for r, s, q in zip((zz, ys, xs), start, pad))
                acc.release(zz.start)  # planes before this window row are final
                acc.add(probs[k][:, lz, ly, lx], zz.start, ys, xs)
            del probs
            bar.update(len(batch))
    acc.release(shape[0])
    return out


def predict_to_zarr(
    volume: np.ndarray | torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    store: Any,
    patch_size: Sequence[int],
    n_classes: int,
    chunks: Sequence[int] | None = None,
    **kwargs: Any,
) -> Any:
    """:func:`sliding_window_predict` into a new float32 zarr array at ``store``.

    For volumes whose (K, Z, Y, X) float32 probabilities do not fit in memory; chunks
    default to one class x one patch depth of z-planes, matching the slab writes.
    """
    import zarr

    shape = (n_classes, *(int(s) for s in volume.shape[1:]))
    chunks = tuple(chunks) if chunks else (1, min(int(patch_size[0]), shape[1]), *shape[2:])
    arr = zarr.create_array(store, shape=shape, chunks=chunks, dtype="float32", fill_value=0.0, overwrite=True)
    return sliding_window_predict(volume, predictor, patch_size, n_classes, out=arr, **kwargs)


def fold_ensemble(prob_maps: Iterable[Any]) -> np.ndarray:
    """Mean of probability maps (e.g. one per cross-validation fold), as a running mean.

    Only the float32 mean and the current map are held; the update runs class by class
    so no temporary larger than one class channel is created.  Maps may be any arrays
    indexable along axis 0 (numpy, zarr).
    """
    mean: np.ndarray | None = None
    n = 0
    for pm in prob_maps:
        n += 1
        if mean is None:
            mean = np.array(pm, dtype=np.float32)
            continue
        if tuple(pm.shape) != mean.shape:
            raise ValueError(f"shape mismatch: {tuple(pm.shape)} vs {mean.shape}")
        for c in range(mean.shape[0]):
            m = mean[c]
            m += (np.asarray(pm[c], dtype=np.float32) - m) / np.float32(n)
    if mean is None:
        raise ValueError("fold_ensemble needs at least one probability map")
    return mean
