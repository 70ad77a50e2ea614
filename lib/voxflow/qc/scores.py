"""Image-quality and processing-quality scores of a subject, and robust outlier flags over a cohort.

Array code only (numpy in, floats out): the per-subject chain computes them from the arrays its steps already
hold (issue 13). Image-quality measures follow MRIQC's definitions where one exists (Esteban et al., "MRIQC:
Advancing the automatic prediction of image quality in MRI from unseen sites", PLoS ONE 12(9), 2017;
`mriqc.qc.anatomical`): SNR, CNR, CJV, EFC, FBER and the INU statistics of the N4 bias field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from voxflow.core.metrics import dice as dice  # the package's one Dice (both masks empty: 1), as QC scores it

EPS = 1e-12


def _values(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)[np.asarray(mask, dtype=bool)]


def snr(img: np.ndarray, mask: np.ndarray) -> float:
    """MRIQC `snr`: mean / (std · sqrt(n / (n - 1))) of the image inside `mask` (the foreground or one tissue).
    Higher is better."""
    v = _values(img, mask)
    if v.size < 2:
        return float("nan")
    sd = v.std() * math.sqrt(v.size / (v.size - 1))
    return float(v.mean() / sd) if sd > EPS else float("inf")


def cnr(img: np.ndarray, wm: np.ndarray, gm: np.ndarray, air: np.ndarray | None = None) -> float:
    """MRIQC `cnr`: |mu_WM - mu_GM| / sqrt(sigma_air^2 + sigma_WM^2 + sigma_GM^2) (no air region: sigma_air = 0).
    Higher is better."""
    w, g = _values(img, wm), _values(img, gm)
    sa = _values(img, air).std() if air is not None and np.any(air) else 0.0
    denom = math.sqrt(sa ** 2 + w.std() ** 2 + g.std() ** 2)
    return float(abs(w.mean() - g.mean()) / denom) if denom > EPS else float("inf")


def cjv(img: np.ndarray, wm: np.ndarray, gm: np.ndarray) -> float:
    """MRIQC `cjv` (coefficient of joint variation, Ganzetti et al. 2016): (sigma_WM + sigma_GM) / |mu_WM - mu_GM|.
    Lower is better; it grows with noise, bias field and a wrong contrast."""
    w, g = _values(img, wm), _values(img, gm)
    gap = abs(w.mean() - g.mean())
    return float((w.std() + g.std()) / gap) if gap > EPS else float("inf")


def efc(img: np.ndarray) -> float:
    """MRIQC `efc` (entropy focus criterion, Atkinson et al. 1997): the Shannon entropy of the voxel intensities
    relative to the image energy, normalized by its maximum (all voxels equal). Ghosting and blurring from motion
    spread the energy: higher values. Negative intensities are taken as their magnitude."""
    x = np.abs(np.asarray(img, dtype=np.float64)).ravel()
    n = x.size
    energy = math.sqrt(float((x ** 2).sum()))
    if n < 2 or energy <= EPS:
        return float("nan")
    efc_max = n * (1.0 / math.sqrt(n)) * math.log(1.0 / math.sqrt(n))
    p = x / energy
    return float(np.sum(p * np.log(p + 1e-16)) / efc_max)


def fber(img: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> float:
    """MRIQC `fber` (foreground-background energy ratio): median(|fg|^2) / median(|bg|^2); a background without
    energy gives MRIQC's cap, 1e5. Higher is better."""
    f, b = _values(img, fg), _values(img, bg)
    if f.size == 0 or b.size == 0:
        return float("nan")
    bg_energy = float(np.median(b ** 2))
    return float(np.median(f ** 2) / bg_energy) if bg_energy >= 1e-3 else 1e5


def inu_stats(field: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MRIQC `inu_med` and `inu_range`: median and 5-95th percentile range of the N4 bias field inside the brain.
    A flat field is 1 with range 0; a strong bias widens the range."""
    v = _values(field, mask)
    if v.size == 0:
        return {"inu_median": float("nan"), "inu_range": float("nan")}
    lo, hi = np.percentile(v, [5, 95])
    return {"inu_median": float(np.median(v)), "inu_range": float(hi - lo)}


def saturated_fraction(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of voxels (inside `mask`) at the image's maximum or minimum value: clipping by the scanner or a
    conversion. A natural image has a handful of voxels at each extreme."""
    v = np.asarray(img).ravel() if mask is None else np.asarray(img)[np.asarray(mask, dtype=bool)]
    if v.size == 0:
        return float("nan")
    return float((np.count_nonzero(v == v.max()) + np.count_nonzero(v == v.min())) / v.size)


def correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two images on one grid (inside `mask`): the similarity of an image registered to a
    template of the same contrast."""
    x = np.asarray(a, dtype=np.float64).ravel() if mask is None else _values(a, mask)
    y = np.asarray(b, dtype=np.float64).ravel() if mask is None else _values(b, mask)
    if x.size < 2 or x.std() <= EPS or y.std() <= EPS:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None,
                                  bins: int = 64) -> float:
    """Studholme's NMI, (H(A) + H(B)) / H(A, B), in [1, 2]: the similarity of two images of different contrasts
    on one grid (co-registration of modalities). 1: independent; 2: one determines the other."""
    x = np.asarray(a, dtype=np.float64).ravel() if mask is None else _values(a, mask)
    y = np.asarray(b, dtype=np.float64).ravel() if mask is None else _values(b, mask)
    if x.size < 2:
        return float("nan")
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    p = joint / joint.sum()
    px, py = p.sum(axis=1), p.sum(axis=0)

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hxy = entropy(p.ravel())
    return (entropy(px) + entropy(py)) / hxy if hxy > EPS else float("nan")


def empty_fraction(img: np.ndarray, mask: np.ndarray | None = None, threshold: float = 0.0) -> float:
    """Fraction of the field of view (or of `mask`, e.g. the template's head) whose voxels are at most `threshold`
    after registration: a failed or partial registration leaves much of the template's field empty."""
    v = np.asarray(img).ravel() if mask is None else np.asarray(img)[np.asarray(mask, dtype=bool)]
    return float(np.count_nonzero(v <= threshold) / v.size) if v.size else float("nan")


# --- robust outlier flags over a cohort ----------------------------------------------------------------------------

# MAD of a normal distribution = 0.6745 sigma: the robust z-score is then comparable to a z-score.
MAD_TO_SIGMA = 1.4826
# Below this many subjects a cohort's median and MAD say little: only the hard sanity bounds flag.
MIN_SUBJECTS_FOR_Z = 10


def robust_z(values: Sequence[float] | np.ndarray, min_spread: float = 0.0) -> np.ndarray:
    """(x - median) / (1.4826 · MAD) of each value (NaN stays NaN). Median and MAD are not moved by a few outliers,
    so a bad subject cannot hide itself by inflating the spread the way it would with mean and std."""
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.full(x.shape, np.nan)
    med = np.median(finite)
    mad = max(MAD_TO_SIGMA * float(np.median(np.abs(finite - med))), float(min_spread))
    if mad <= EPS:  # most subjects equal: any other value is infinitely far
        z = np.full(x.shape, np.nan)
        finite_x = np.isfinite(x)
        z[finite_x] = np.where(np.abs(x[finite_x] - med) <= EPS, 0.0, np.copysign(np.inf, x[finite_x] - med))
        return z
    return (x - med) / mad


def flag_outliers(scores: Mapping[str, Mapping[str, float]], flag_z: float = 3.5,
                  bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
                  direction: Mapping[str, str] | None = None,
                  min_spread: Mapping[str, float] | None = None) -> list[dict]:
    """Flags over a cohort: `scores` is subject -> score name -> value. A subject is flagged on a score when its
    robust z-score is past `flag_z` in the score's bad direction (`direction[name]`: "high" = high is bad, "low",
    or "both", the default), with at least MIN_SUBJECTS_FOR_Z subjects; or when the value is outside the score's
    hard sanity `bounds` (low, high; None = open), whatever the cohort size. Each flag names the subject, the
    score, its value, the cohort's median, the z-score and the reason; worst (largest |z|, bounds first) first.
    `min_spread[name]`: a floor under the robust standard deviation (1.4826 MAD) of that score."""
    subjects = sorted(scores)
    names = sorted({n for s in subjects for n in scores[s]})
    bounds, direction = bounds or {}, direction or {}
    use_z = len(subjects) >= MIN_SUBJECTS_FOR_Z
    flags: list[dict[str, Any]] = []
    for name in names:
        vals = np.array([scores[s].get(name, np.nan) for s in subjects], dtype=np.float64)
        z = robust_z(vals, (min_spread or {}).get(name, 0.0))
        finite = vals[np.isfinite(vals)]
        med = float(np.median(finite)) if finite.size else float("nan")
        lo, hi = bounds.get(name, (None, None))
        bad = direction.get(name, "both")
        for s, v, zi in zip(subjects, vals, z):
            if not np.isfinite(v):
                continue
            reason = None
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                reason = f"outside the sanity bounds [{lo}, {hi}]"
            elif use_z and ((zi > flag_z and bad in ("high", "both")) or (zi < -flag_z and bad in ("low", "both"))):
                reason = f"robust z {zi:+.1f} (|z| > {flag_z:g})"
            if reason:
                flags.append({"subject": s, "score": name, "value": float(v), "median": med,
                              "z": float(zi), "reason": reason})
    flags.sort(key=lambda f: (not f["reason"].startswith("outside"), -abs(f["z"]), f["subject"], f["score"]))
    return flags


def flagged_subjects(flags: Iterable[dict]) -> list[str]:
    return sorted({f["subject"] for f in flags})


# --- the scores a subject gets, what each means and which way is bad ------------------------------------------------
# name -> (bad direction: "high" | "low" | "both", hard sanity bounds (low, high; None = open), the smallest
# deviation from the cohort's median that matters (a floor under 1.4826 MAD: in a homogeneous cohort the MAD of a
# score can be tiny, and a z-score would then flag differences nobody would look at twice), what it tells).
# Per modality unless the text says "mask" (the brain mask's own scores) or "reference" (the registered reference).
SCORES: dict[str, tuple[str, tuple[float | None, float | None], float, str]] = {
    "efc": ("high", (None, None), 0.02, "MRIQC efc: entropy focus criterion of the raw image; motion ghosts raise it"),
    "fber": ("low", (None, None), 0.0, "MRIQC fber: head / air energy; ghosts and noise in the air lower it"),
    "saturated_fraction": ("high", (None, 0.05), 0.005, "voxels at the image's extreme values in the head (clipping)"),
    "inu_median": ("both", (None, None), 0.05, "MRIQC inu_med: median of N4's bias field inside the head"),
    "inu_range": ("high", (None, None), 0.05, "MRIQC inu_range: 5-95th percentile range of N4's field in the head"),
    "coreg_nmi": ("both", (None, None), 0.01, "NMI with the reference modality after rigid co-registration (1: none)"),
    "brain_volume_ml": ("both", (300.0, 3000.0), 50.0, "mask: brain mask volume; a failed skull strip changes it"),
    "mask_dice_template": ("low", (0.7, None), 0.01, "mask: Dice of the brain mask in MNI with the template's"),
    "template_nmi": ("low", (None, None), 0.01, "reference: NMI with the MNI template inside its brain mask"),
    "template_correlation": ("low", (None, None), 0.03, "reference: correlation with the MNI template in its brain"),
    "empty_fraction": ("high", (None, 0.3), 0.005, "reference: fraction of the template's brain left empty"),
    "snr_wm": ("low", (None, None), 0.5, "MRIQC snr_wm: mean / std in the white matter (MNI tissue map, after N4)"),
    "cnr": ("low", (None, None), 0.1, "MRIQC cnr: |mu_WM - mu_GM| / sqrt(sigma_WM^2 + sigma_GM^2) (MNI tissue maps)"),
    "cjv": ("high", (None, None), 0.1, "MRIQC cjv: (sigma_WM + sigma_GM) / |mu_WM - mu_GM|; noise and bias raise it"),
    "wm_gm_contrast": ("both", (None, None), 0.1, "signed (mu_WM - mu_GM) / sqrt(sigma_WM^2 + sigma_GM^2): > 0 in "
                                                  "T1, < 0 in T2; a wrong contrast flips it"),
    "wm_inhomogeneity": ("high", (None, None), 0.02, "(p95 - p5) / median of the smoothed white matter after N4: "
                                                     "the bias N4 left"),
    "crop_volume_ml": ("both", (None, None), 0.0, "CT: volume of the body crop"),
    "hu_p01": ("both", (-1200.0, None), 20.0, "CT: 1st HU percentile inside the body"),
    "hu_p99": ("both", (None, 4000.0), 20.0, "CT: 99th HU percentile inside the body"),
}
