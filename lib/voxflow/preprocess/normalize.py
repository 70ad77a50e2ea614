"""Intensity normalization: z-score inside the brain (MR default) or percentile clip and rescale.

Array functions only; the caller does I/O. Statistics are computed inside the mask because the
zero background of a skull-stripped image would otherwise dominate the mean and std.
"""

from __future__ import annotations

import numpy as np


def zscore(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the mask; outside the mask set to 0 (the mean)."""
    m = mask > 0
    if not m.any():
        raise ValueError("empty mask: cannot normalize")
    vals = image[m].astype(np.float64)
    std = vals.std()
    out = (image - vals.mean()) / (std if std > 0 else 1.0)
    return np.where(m, out, 0.0).astype(np.float32)


def percentile_rescale(image: np.ndarray, mask: np.ndarray | None = None,
                       percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Clip to the given percentiles (inside the mask if given) and rescale to [0, 1]."""
    region = image[mask > 0] if mask is not None and np.any(mask) else image.ravel()
    lo, hi = np.percentile(region, percentiles)
    out = (np.clip(image, lo, hi) - lo) / (hi - lo if hi > lo else 1.0)
    if mask is not None:
        out = np.where(mask > 0, out, 0.0)
    return out.astype(np.float32)


def window_zscore(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """CT: clip to a Hounsfield window, then z-score over the window's range."""
    lo, hi = window
    clipped = np.clip(image, lo, hi)
    return ((clipped - clipped.mean()) / (clipped.std() or 1.0)).astype(np.float32)


def normalize(image: np.ndarray, mask: np.ndarray, method: str = "zscore",
              percentiles: tuple[float, float] = (0.5, 99.5), window: tuple[float, float] | None = None) -> np.ndarray:
    if method == "zscore":
        return zscore(image, mask)
    if method == "percentile":
        return percentile_rescale(image, mask, percentiles)
    if method == "ct_window":
        if window is None:
            raise ValueError("normalize.method 'ct_window' needs normalize.window [low, high] in HU")
        return window_zscore(image, window)
    raise ValueError(f"normalize.method must be zscore, percentile or ct_window; got {method!r}")
