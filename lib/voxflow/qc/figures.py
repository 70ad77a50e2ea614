"""QC images (PNG) per subject and step, collected later by the report.

Three orthogonal mid-slices per panel, because a single axial slice hides most registration and
skull-stripping failures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxflow.core.atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mid_slices(arr: np.ndarray, center: tuple[int, int, int] | None = None) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices through `center` (default: the middle) of a (Z,Y,X) array."""
    z, y, x = center or tuple(s // 2 for s in arr.shape)
    return [arr[z], arr[:, y], arr[:, :, x]]


def _show(ax, sl, aspect, cmap="gray", vmin=None, vmax=None):
    ax.imshow(sl, cmap=cmap, origin="lower", aspect=aspect, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])


def _aspects(spacing_zyx):
    sz, sy, sx = spacing_zyx
    return [sy / sx, sz / sx, sz / sy]


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, bbox_inches="tight", format="png")
    _plt().close(fig)


def _robust(arr):
    vals = arr[arr != 0] if np.any(arr != 0) else arr.ravel()
    return np.percentile(vals, [1, 99.5])


def panel_rows(rows: list[tuple[str, np.ndarray, dict]], spacing_zyx, path: str | Path, title: str,
               overlays: list[tuple[int, np.ndarray, str]] | None = None, center=None) -> None:
    """Generic figure: one row per (name, volume, imshow kwargs); contour overlays on a row."""
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    aspects = _aspects(spacing_zyx)
    for r, (name, vol, kw) in enumerate(rows):
        for c, sl in enumerate(mid_slices(vol, center)):
            _show(axes[r, c], sl, aspects[c], **kw)
        axes[r, 0].set_ylabel(name)
    for r, mask, color in overlays or []:
        for c, sl in enumerate(mid_slices(mask, center)):
            if np.any(sl) and not np.all(sl):
                axes[r, c].contour(sl.astype(float), levels=[0.5], colors=color, linewidths=0.8)
    fig.suptitle(title)
    _save(fig, path)


def n4_qc(before: np.ndarray, after: np.ndarray, field: np.ndarray, spacing_zyx, path, title):
    lo, hi = _robust(before)
    lo2, hi2 = _robust(after)
    panel_rows([("before", before, dict(vmin=lo, vmax=hi)), ("bias field", field, dict(cmap="magma")),
                ("after", after, dict(vmin=lo2, vmax=hi2))], spacing_zyx, path, title)


def mask_qc(image: np.ndarray, mask: np.ndarray, spacing_zyx, path, title):
    lo, hi = _robust(image)
    center = tuple(int(c) for c in np.round(np.argwhere(mask > 0).mean(0))) if mask.any() else None
    panel_rows([("image + brain mask", image, dict(vmin=lo, vmax=hi))], spacing_zyx, path, title,
               overlays=[(0, mask > 0, "red")], center=center)


def registration_qc(image: np.ndarray, template: np.ndarray, spacing_zyx, path, title):
    """Registered image with the template's edges drawn on top: misalignment shows at once."""
    from scipy import ndimage

    grad = ndimage.gaussian_gradient_magnitude(template.astype(np.float32), 1.0)
    edges = grad > np.percentile(grad[template > 0], 85) if np.any(template > 0) else grad > grad.mean()
    lo, hi = _robust(image)
    panel_rows([("registered + template edges", image, dict(vmin=lo, vmax=hi))], spacing_zyx, path, title,
               overlays=[(0, edges, "yellow")])
