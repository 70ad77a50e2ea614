"""A subject's quality scores, step by step, from the arrays each step already holds (no second read of a volume).

Each step of the chain that has something to score calls one function below and writes the result with
`write_step_scores` next to its outputs (`preprocess/<subject>/<step>/scores.json`); the chain's last step,
`qc_scores`, merges them into `qc/<subject>/scores.json`, which the cohort rule qc_flags reads. The score
definitions are in voxflow.qc.scores (MRIQC's where one exists); their meaning and bad direction in its SCORES.
Scores are keyed by modality, or by "mask" for the brain mask's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage  # at import, not in the timed scores: the chain's N4 step imports it anyway

from voxflow.qc import scores as q
from voxflow.core.atomic import write_json_atomic

Scores = dict[str, dict[str, float]]  # modality (or "mask") -> score name -> value
# Scores are taken on a regular subsample of about this spacing: every score here is a statistic over hundreds of
# thousands of voxels, as good on every third voxel of a 1 mm image, where the full grid cost a third of the chain's
# time (bench/preprocess.py: hole filling, entropy, smoothing over 7 M voxels per modality). The step follows the
# spacing, not the size, so that subjects scanned alike are scored alike.
SCORE_SPACING_MM = 3.0
# |signed WM-GM contrast| below which CNR and CJV are not defined (see tissue_contrast)
MIN_CONTRAST = 0.25
WM_SMOOTHING_MM = 4.0  # wm_inhomogeneity: the white matter smoothed over this (noise averages out, bias stays)


def head_mask(img: np.ndarray, opened: bool = False) -> np.ndarray:
    """The head (foreground): above the image's mean, holes filled; the complement is the air (MRIQC's background
    is an air mask too, found with a more careful model). `opened`: one binary opening before the filling, which
    drops isolated voxels above the mean (noise in the air): N4's fit mask (voxflow.preprocess.n4.n4_fit_mask)."""
    fg = img > img.mean()
    return ndimage.binary_fill_holes(ndimage.binary_opening(fg, iterations=1) if opened else fg)


def is_magnitude(values: np.ndarray) -> bool:
    """Intensities as a scanner writes them (>= 0; at most 1% below 0 from interpolation): not already normalized
    (z-scored data, such as BraTS 2013's), where energy and ratio scores mean nothing."""
    v = np.asarray(values)
    return bool(v.size > 0 and np.count_nonzero(v < 0) <= 0.01 * v.size)


def coarse(spacing_zyx: Iterable[float], *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays (one grid) on every k-th voxel per axis, k = SCORE_SPACING_MM / spacing rounded down (>= 1)."""
    step = tuple(slice(None, None, max(1, int(SCORE_SPACING_MM / float(s) + 1e-6))) for s in spacing_zyx)
    return tuple(np.asarray(a)[step] for a in arrays)


def image_quality(raw: np.ndarray, spacing_zyx: Iterable[float] = (1.0, 1.0, 1.0), field: np.ndarray | None = None,
                  field_mask: np.ndarray | None = None) -> dict:
    """No-reference quality of one raw modality (before N4; with N4's bias field when it ran): EFC, FBER (head vs
    air), saturated voxels in the head, INU median and range. (SNR over the whole head measures anatomy more than
    noise: it is taken in the white matter, in MNI space, by tissue_contrast.)"""
    (raw,) = coarse(spacing_zyx, np.asarray(raw, dtype=np.float32))
    head = head_mask(raw)
    if not is_magnitude(raw):  # EFC and FBER are energies of a magnitude image, with air near 0
        return {"efc": float("nan"), "fber": float("nan"), "saturated_fraction": q.saturated_fraction(raw, head)}
    scores = {"efc": q.efc(raw), "fber": q.fber(raw, head, ~head),
              "saturated_fraction": q.saturated_fraction(raw, head)}
    if field is not None:
        fm = field_mask if field_mask is not None else np.ones(field.shape, bool)
        inu = q.inu_stats(field, fm)
        scores.update(inu_median=inu["inu_median"], inu_range=inu["inu_range"])
    return scores


def coreg_quality(reference: np.ndarray, moved: np.ndarray, spacing_zyx: Iterable[float] = (1.0, 1.0, 1.0)) -> dict:
    """Similarity of a modality to the reference after co-registration (both on the reference grid), in the
    reference's head."""
    ref, mov = coarse(spacing_zyx, np.asarray(reference, np.float32), np.asarray(moved, np.float32))
    return {"coreg_nmi": q.normalized_mutual_information(ref, mov, head_mask(ref))}


def mask_quality(mask: np.ndarray, spacing_zyx: Iterable[float]) -> dict:
    return {"brain_volume_ml": float(np.count_nonzero(mask) * float(np.prod(list(spacing_zyx))) / 1000.0)}


def tissue_contrast(img: np.ndarray, brain: np.ndarray, gm: np.ndarray, wm: np.ndarray,
                    spacing_zyx: Iterable[float] = (2.0, 2.0, 2.0)) -> dict:
    """SNR in the white matter, CNR, CJV (MRIQC) and the signed WM-GM contrast of an image in MNI space, with the
    template's tissue
    probability maps (> 0.5) inside the subject's own brain mask. No air on a skull-stripped image: MRIQC's
    sigma_air is 0 here."""
    spacing = list(spacing_zyx)
    img, brain, gm, wm = coarse(spacing, img, brain, gm, wm)
    step = [max(1, int(SCORE_SPACING_MM / float(s) + 1e-6)) * float(s) for s in spacing]  # mm per voxel now
    inside = np.asarray(brain, bool)
    g, w = inside & (gm > 0.5), inside & (wm > 0.5)
    if g.sum() < 10 or w.sum() < 10:
        return dict.fromkeys(("snr_wm", "cnr", "cjv", "wm_gm_contrast", "wm_inhomogeneity"), float("nan"))
    gv, wv = img[g].astype(np.float64), img[w].astype(np.float64)
    spread = float(np.sqrt(gv.var() + wv.var()))
    contrast = float((wv.mean() - gv.mean()) / spread) if spread > q.EPS else float("nan")
    # CNR and CJV measure a WM/GM contrast: on an image without one (FLAIR's is near 0) they only measure noise
    # over a vanishing gap, and CJV runs off to thousands
    has_contrast = abs(contrast) >= MIN_CONTRAST
    # the bias N4 left: the white matter's spread at low spatial frequency (smoothing averages the noise away)
    core = ndimage.binary_erosion(w, iterations=1)
    sigma = [WM_SMOOTHING_MM / s for s in step]
    smooth = ndimage.gaussian_filter(np.asarray(img, np.float32), sigma)[core if core.sum() >= 10 else w]
    p5, p50, p95 = np.percentile(smooth, [5, 50, 95])
    ratios = is_magnitude(img[inside])  # mean/std and spread/median need intensities on a ratio scale
    return {"snr_wm": q.snr(img, w) if ratios else float("nan"),
            "cnr": q.cnr(img, w, g) if has_contrast else float("nan"),
            "cjv": q.cjv(img, w, g) if has_contrast else float("nan"), "wm_gm_contrast": contrast,
            "wm_inhomogeneity": float((p95 - p5) / p50) if ratios and p50 > q.EPS else float("nan")}


def template_fit(image: np.ndarray, template: np.ndarray, template_mask: np.ndarray, brain: np.ndarray,
                 spacing_zyx: Iterable[float] = (2.0, 2.0, 2.0)) -> dict:
    """How well the registered reference (and its brain mask) lies on the template: NMI and correlation inside the
    template's brain mask, the mask's Dice with the template's, and how much of the template brain stays empty."""
    tm = np.asarray(template_mask) > 0
    img, tpl, tmk = coarse(spacing_zyx, np.asarray(image, np.float32), np.asarray(template, np.float32), tm)
    return {"template_nmi": q.normalized_mutual_information(img, tpl, tmk),
            "template_correlation": q.correlation(img, tpl, tmk),
            "empty_fraction": q.empty_fraction(np.abs(image), tm, threshold=0.0),
            "mask_dice_template": q.dice(brain, tm)}


def ct_crop(image: np.ndarray, body: np.ndarray, spacing_zyx: Iterable[float]) -> dict:
    """CT after the body crop: the crop's volume and the HU range inside the body."""
    vox_ml = float(np.prod(list(spacing_zyx))) / 1000.0
    inside = np.asarray(image)[np.asarray(body, bool)]
    lo, hi = np.percentile(inside, [1, 99]) if inside.size else (float("nan"), float("nan"))
    return {"crop_volume_ml": float(image.size * vox_ml), "hu_p01": float(lo), "hu_p99": float(hi)}


# --- files ---------------------------------------------------------------------------------------------------------


def clean(scores: Mapping[str, Mapping[str, float]]) -> Scores:
    """Plain floats (JSON has no inf/NaN: they become None)."""
    return {m: {k: (float(v) if np.isfinite(v) else None) for k, v in s.items()}  # type: ignore[misc]
            for m, s in scores.items()}


def write_step_scores(path: str, scores: Mapping[str, Mapping[str, float]], seconds: float) -> float:
    """A step's scores (modality -> score -> value). Returns the seconds spent computing them, for the step's log
    and bench/preprocess.py: not in the file, whose content must be the same on every run."""
    write_json_atomic({"scores": clean(scores)}, path)
    return round(seconds, 4)


class Timer:
    """Seconds spent in scoring, summed over `with timer:` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0


def merge_subject_scores(subject: str, step_files: Mapping[str, str], out: str, skip: Iterable[str] = ()) -> dict:
    """qc/<subject>/scores.json: every step's scores, by modality (and the steps they came from). `skip`: modalities
    without scores (a missing modality's stand-in, input.missing: synthesize: scoring it would flag the subject)."""
    merged: Scores = {}
    left_out = set(skip)
    for path in step_files.values():
        for mod, values in json.loads(Path(path).read_text())["scores"].items():
            if mod not in left_out:
                merged.setdefault(mod, {}).update(values)
    result = {"subject": subject, "scores": merged, "steps": sorted(step_files),
              **({"not_scored": sorted(left_out)} if left_out else {})}
    write_json_atomic(result, out)
    return result
