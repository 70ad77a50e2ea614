"""Dataset-level intensity statistics, learned once over the training subjects and applied per subject.

Two schemes need the whole training set rather than one scan:

- ``ct_dataset`` (nnU-Net's CT normalization): Hounsfield units are absolute, so every subject
  gets the same affine map, clip to the 0.5/99.5 percentiles of the training set's foreground
  intensities, then z-score with their mean and std. Foreground = the label's foreground when
  the training subjects have labels (the structures to segment), else the body/brain mask.
- ``nyul`` (Nyul & Udupa 1999/2000): MR intensities have no unit; each training subject's landmark
  percentiles (1, 10, ..., 90, 99 inside the mask) are mapped linearly so that the first and
  last land on the standard scale's ends; their mean is the standard histogram. A subject is
  standardized by the piecewise-linear map from its own landmarks to the standard ones.

One dask task per training subject (`voxflow.core.parallel.compute`: threads, processes or a
distributed scheduler); the result is a readable normalization.json in the model folder, which
every subject's to_zarr step reads back, test subjects included: nothing is learned from them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from voxflow.preprocess.normalize import DATASET_METHODS, increasing

NYUL_PERCENTILES = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)


def _read(path: str) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))


def subject_stats(subject: str, images: Mapping[str, str], mask: str, label: str | None,
                  methods: Mapping[str, str], nyul_percentiles: Sequence[float] = NYUL_PERCENTILES,
                  n_samples: int = 10000, seed: int = 0) -> dict:
    """One training subject: foreground samples (ct_dataset) or landmark percentiles (nyul) per modality."""
    m = _read(mask) > 0
    if not m.any():
        raise ValueError(f"{subject}: empty mask {mask}")
    region, region_name = m, "mask"
    if label is not None and any(meth == "ct_dataset" for meth in methods.values()):
        lab = _read(label) > 0
        if lab.any():
            region, region_name = lab, "label > 0"
    rng = np.random.default_rng([seed, zlib.crc32(subject.encode())])
    out: dict = {"subject": subject, "modalities": {}}
    for mod, method in methods.items():
        if method not in DATASET_METHODS:
            continue
        arr = _read(images[mod])
        if method == "ct_dataset":
            vals = arr[region]
            if len(vals) > n_samples:
                vals = vals[np.sort(rng.choice(len(vals), n_samples, replace=False))]
            out["modalities"][mod] = {"samples": vals.astype(np.float32), "region": region_name,
                                      "n_voxels": int(region.sum())}
        else:
            out["modalities"][mod] = {"landmarks": np.percentile(arr[m].astype(np.float64),
                                                                 list(nyul_percentiles)).tolist()}
    return out


def combine(results: Sequence[dict], methods: Mapping[str, str], ct_percentiles: Sequence[float] = (0.5, 99.5),
            nyul_percentiles: Sequence[float] = NYUL_PERCENTILES, scale: Sequence[float] = (0.0, 1.0)) -> dict:
    """Pool the per-subject results into the dataset statistics (the content of normalization.json)."""
    s1, s2 = (float(v) for v in scale)
    if not s2 > s1:
        raise ValueError(f"normalize.nyul.scale must be increasing; got {list(scale)}")
    out: dict = {"subjects": [r["subject"] for r in results], "modalities": {}}
    for mod, method in methods.items():
        if method not in DATASET_METHODS:
            out["modalities"][mod] = {"method": method}
            continue
        parts = [r["modalities"][mod] for r in results]
        if method == "ct_dataset":
            pooled = np.concatenate([p["samples"] for p in parts]).astype(np.float64)
            lo, hi = np.percentile(pooled, list(ct_percentiles))
            out["modalities"][mod] = {
                "method": method, "percentiles": list(map(float, ct_percentiles)), "clip": [float(lo), float(hi)],
                "mean": float(pooled.mean()), "std": float(pooled.std()), "n_samples": int(len(pooled)),
                "region": sorted({p["region"] for p in parts})}
        else:
            own = np.array([increasing(p["landmarks"]) for p in parts])
            mapped = s1 + (own - own[:, :1]) / (own[:, -1:] - own[:, :1]) * (s2 - s1)
            out["modalities"][mod] = {
                "method": method, "percentiles": list(map(float, nyul_percentiles)), "scale": [s1, s2],
                "standard": mapped.mean(0).tolist(),
                "subject_landmarks": {r["subject"]: p["landmarks"] for r, p in zip(results, parts)}}
    return out


def learn(subjects: Mapping[str, dict], methods: Mapping[str, str], *, scheduler: str = "threads",
          ct_percentiles: Sequence[float] = (0.5, 99.5), nyul_percentiles: Sequence[float] = NYUL_PERCENTILES,
          scale: Sequence[float] = (0.0, 1.0), n_samples: int = 10000, seed: int = 0) -> dict:
    """`subjects`: subject -> {"images": {modality: path}, "mask": path, "label": path or None}."""
    import dask

    from voxflow.core.parallel import compute

    if not subjects:
        raise ValueError("no training subjects to learn the intensity statistics from")
    tasks = [dask.delayed(subject_stats)(s, f["images"], f["mask"], f.get("label"), methods, nyul_percentiles,
                                         n_samples, seed) for s, f in subjects.items()]
    return combine(compute(tasks, scheduler), methods, ct_percentiles, nyul_percentiles, scale)
