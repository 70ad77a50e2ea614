"""Intensity normalization, per subject: z-score inside the brain (MR default), percentile clip and
rescale, CT window + z-score, and the two dataset-level schemes whose statistics are learned once
over the training subjects (voxflow.preprocess.dataset_norm): CT clip + z-score with the dataset's
foreground percentiles, mean and std (nnU-Net's CT scheme), and Nyul histogram standardization.

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


def window_zscore(image: np.ndarray, window: tuple[float, float], mask: np.ndarray | None = None) -> np.ndarray:
    """CT: clip to a Hounsfield window, then z-score with the clipped mean and std inside the mask
    (the body: the air around it would make the statistics depend on the field of view)."""
    lo, hi = window
    clipped = np.clip(image, lo, hi).astype(np.float32)
    region = clipped[mask > 0] if mask is not None and np.any(mask) else clipped
    region = region.astype(np.float64)
    return ((clipped - region.mean()) / (region.std() or 1.0)).astype(np.float32)


def ct_dataset(image: np.ndarray, stats: dict) -> np.ndarray:
    """nnU-Net's CT scheme: clip to the training set's foreground percentiles, z-score with the
    training set's foreground mean and std; the same affine map for every subject (HU are absolute)."""
    lo, hi = stats["clip"]
    return ((np.clip(image, lo, hi) - stats["mean"]) / max(stats["std"], 1e-8)).astype(np.float32)


def increasing(values) -> np.ndarray:
    """Make landmarks strictly increasing (ties come from integer data or large flat regions)."""
    v = np.maximum.accumulate(np.asarray(values, dtype=np.float64))
    eps = 1e-6 * max(1.0, float(np.abs(v).max()))
    return v + eps * np.arange(len(v))


def piecewise_linear(x: np.ndarray, src, dst) -> np.ndarray:
    """Map x through the piecewise-linear function src -> dst, extended linearly beyond both ends."""
    src, dst = increasing(src), np.asarray(dst, dtype=np.float64)
    out = np.interp(x, src, dst)
    lo_slope = (dst[1] - dst[0]) / (src[1] - src[0])
    hi_slope = (dst[-1] - dst[-2]) / (src[-1] - src[-2])
    out = np.where(x < src[0], dst[0] + (x - src[0]) * lo_slope, out)
    return np.where(x > src[-1], dst[-1] + (x - src[-1]) * hi_slope, out)


def nyul(image: np.ndarray, mask: np.ndarray, stats: dict) -> np.ndarray:
    """Nyul-Udupa standardization: the subject's own landmark percentiles (inside the mask) are mapped
    piecewise-linearly onto the standard landmarks learned over the training set. Outside the mask:
    the low end of the standard scale (background)."""
    m = mask > 0
    if not m.any():
        raise ValueError("empty mask: cannot standardize")
    own = np.percentile(image[m].astype(np.float64), stats["percentiles"])
    out = piecewise_linear(image.astype(np.float64), own, stats["standard"])
    return np.where(m, out, stats["scale"][0]).astype(np.float32)


METHODS = ("zscore", "percentile", "ct_window", "ct_dataset", "nyul")
DATASET_METHODS = ("ct_dataset", "nyul")  # learned over the training subjects


def normalize(image: np.ndarray, mask: np.ndarray, method: str = "zscore",
              percentiles: tuple[float, float] = (0.5, 99.5), window: tuple[float, float] | None = None,
              stats: dict | None = None) -> np.ndarray:
    """Dispatch on `method`; `stats` is this modality's entry of the learned normalization.json."""
    if method == "zscore":
        return zscore(image, mask)
    if method == "percentile":
        return percentile_rescale(image, mask, percentiles)
    if method == "ct_window":
        if window is None:
            raise ValueError("normalize.method 'ct_window' needs normalize.window [low, high] in HU")
        return window_zscore(image, window, mask)
    if method in DATASET_METHODS:
        if not stats or stats.get("method") != method:
            raise ValueError(f"normalize.method {method!r} needs its statistics learned over the training set "
                             f"(normalization.json); got {stats.get('method') if stats else None!r}")
        return ct_dataset(image, stats) if method == "ct_dataset" else nyul(image, mask, stats)
    raise ValueError(f"normalize.method must be one of {', '.join(METHODS)}; got {method!r}")
