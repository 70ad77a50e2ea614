"""Image-similarity metrics of a synthesized modality against the real one, inside the brain mask, and a figure.

Data range (PSNR, SSIM): the real image's max - min inside the mask (normalized intensities have no fixed
range); 1.0 where that range is 0 (a constant image).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxflow.core.atomic import atomic_path


def _masked(real: np.ndarray, synth: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    real, synth = np.asarray(real, np.float64), np.asarray(synth, np.float64)
    if real.shape != synth.shape:
        raise ValueError(f"real {real.shape} and synthetic {synth.shape} images differ in shape")
    m = np.ones(real.shape, bool) if mask is None else np.asarray(mask) > 0
    if m.shape != real.shape:
        raise ValueError(f"mask {m.shape} and images {real.shape} differ in shape")
    if not m.any():
        raise ValueError("empty mask: no voxel to compare")
    return real, synth, m


def data_range_of(real: np.ndarray, mask: np.ndarray) -> float:
    """max - min of `real` inside `mask` (bool), 1.0 if that is 0."""
    v = real[mask]
    r = float(v.max() - v.min())
    return r if r > 0 else 1.0


def mae(real: np.ndarray, synth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error over the mask voxels."""
    r, s, m = _masked(real, synth, mask)
    return float(np.abs(r[m] - s[m]).mean())


def psnr(real: np.ndarray, synth: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None) -> float:
    """10 log10(range^2 / MSE) over the mask voxels; inf for identical images."""
    r, s, m = _masked(real, synth, mask)
    dr = data_range_of(r, m) if data_range is None else float(data_range)
    mse = float(((r[m] - s[m]) ** 2).mean())
    return float("inf") if mse == 0 else float(10.0 * np.log10(dr * dr / mse))


def ssim3d(real: np.ndarray, synth: np.ndarray, mask: np.ndarray | None = None,
           data_range: float | None = None) -> float:
    """Mean 3D SSIM over the mask voxels: scikit-image's SSIM map (Gaussian window sigma 1.5, as Wang et al.),
    computed on the mask's bounding box plus the window's radius. Every axis needs >= 11 voxels."""
    from skimage.metrics import structural_similarity

    r, s, m = _masked(real, synth, mask)
    dr = data_range_of(r, m) if data_range is None else float(data_range)
    idx = np.argwhere(m)
    lo, hi = np.maximum(idx.min(0) - 6, 0), np.minimum(idx.max(0) + 7, m.shape)
    if np.any(hi - lo < 11):  # a small box: the whole volume
        lo, hi = np.zeros(3, int), np.array(m.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    _, smap = structural_similarity(r[box], s[box], data_range=dr, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    return float(np.asarray(smap)[m[box]].mean())


def _centre(channels: dict[str, np.ndarray], mask: np.ndarray | None) -> tuple[int, ...]:
    ref = np.asarray(mask) > 0 if mask is not None else np.any([np.asarray(v) != 0 for v in channels.values()], 0)
    if not ref.any():
        return tuple(s // 2 for s in ref.shape)
    return tuple(int(round(c)) for c in np.argwhere(ref).mean(0))


def synthesis_figure(channels: dict[str, np.ndarray], synthetic: Sequence[str], out_png: str | Path,
                     real: dict[str, np.ndarray] | None = None, title: str = "",
                     mask: np.ndarray | None = None) -> Path:
    """A PNG: one column per modality of `channels` (3D (Z, Y, X) arrays), rows = axial, coronal, sagittal
    slices through the centre of `mask` (else of the nonzero voxels). Synthetic channels are titled
    "<mod> (synthetic)" in a red frame; with `real`, one more column "<mod> (real)" per synthetic modality
    that has a real image, on the same grey window. Written atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synthetic = [s for s in synthetic]
    unknown = [s for s in synthetic if s not in channels]
    if unknown:
        raise ValueError(f"synthetic modalities {unknown} are not among the channels {list(channels)}")
    cols: list[tuple[str, np.ndarray, str]] = []  # title, volume, window key
    for mod, vol in channels.items():
        cols.append((f"{mod} (synthetic)" if mod in synthetic else mod, np.asarray(vol, np.float32), mod))
    for mod in synthetic:
        if real and mod in real:
            cols.append((f"{mod} (real)", np.asarray(real[mod], np.float32), mod))
    windows = {}
    for mod, vol in channels.items():
        v = np.asarray(vol)[np.asarray(vol) != 0]
        windows[mod] = (float(np.percentile(v, 1)), float(np.percentile(v, 99))) if v.size else (0.0, 1.0)
    cz, cy, cx = _centre(channels, mask)
    fig, axes = plt.subplots(3, len(cols), figsize=(2.2 * len(cols), 6.6), squeeze=False)
    for j, (name, vol, key) in enumerate(cols):
        lo, hi = windows[key]
        z, y, x = (min(c, s - 1) for c, s in zip((cz, cy, cx), vol.shape))
        views = [vol[z], vol[:, y], vol[:, :, x]]
        for i, (view, row) in enumerate(zip(views, ("axial", "coronal", "sagittal"))):
            ax = axes[i, j]
            ax.imshow(view, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower")
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row)
            if i == 0:
                ax.set_title(name, fontsize=9, color="tab:red" if name.endswith("(synthetic)") else "black")
            if name.endswith("(synthetic)"):
                for sp in ax.spines.values():
                    sp.set_edgecolor("tab:red")
                    sp.set_linewidth(3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out
