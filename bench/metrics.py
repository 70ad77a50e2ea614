"""Benchmark: all voxflow metrics vs MONAI's HD95 alone, three BraTS regions, one 240x240x155 case.

Reference: ``OTMultiClass.nii.gz`` of ``../shared/data/brats2013-sample`` when present (manual
BraTS 2013 labels), else a synthetic BraTS-like label map (nested irregular blobs, labels
1, 2, 4).  Prediction: a perturbed copy (shifted, enhancing rim dilated, necrosis eroded,
spurious blobs).  Spacing (1, 1, 1) mm.  One thread, same process, best of ``--repeat``.

* ours: ``evaluate_case(pred, ref, spacing, regions=BRATS_REGIONS)`` from the label maps --
  dice, jaccard, precision, recall, volumes, hd, hd95, assd and nsd for the three regions,
  region masks included.
* monai: ``compute_hausdorff_distance(percentile=95)`` alone on the (1, 3, ...) one-hot
  region tensors, built before the clock starts.

    python bench/metrics.py [--repeat 3] [--synthetic] [--method auto|edt|kdtree]
    -> final line: metrics all_metrics_s=<x> monai_hd95_s=<x> speedup=<x> max_abs_diff_mm=<x>
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import time
import warnings

import numpy as np
from scipy import ndimage

from common import SHARED_DATA

SHAPE = (155, 240, 240)  # (z, y, x)
SPACING = (1.0, 1.0, 1.0)
DATA = SHARED_DATA / "brats2013-sample"


def _blob(rng: np.random.Generator, shape, center, radius, n: int = 5) -> np.ndarray:
    """Irregular blob: union of ``n`` jittered ellipsoids around ``center``."""
    m = np.zeros(shape, bool)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(n):
        c = np.asarray(center) + rng.normal(0, radius / 3, 3)
        r = radius * rng.uniform(0.5, 1.0, 3)
        m |= sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1.0
    return m


def synthetic_reference(seed: int = 0) -> np.ndarray:
    """BraTS-like label map: edema (2) around enhancing rim (4) around necrosis (1)."""
    rng = np.random.default_rng(seed)
    c = (70, 110, 130)
    ref = np.zeros(SHAPE, np.uint8)
    ref[_blob(rng, SHAPE, c, 30)] = 2
    ref[_blob(rng, SHAPE, c, 16) & (ref == 2)] = 4
    ref[ndimage.binary_erosion(ref == 4, iterations=3) & _blob(rng, SHAPE, c, 12)] = 1
    return ref


def real_reference() -> tuple[np.ndarray, tuple[float, ...], str] | None:
    path = DATA / "brats_2013_pat0001_1" / "OTMultiClass.nii.gz"
    if not path.exists():
        return None
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img).astype(np.uint8), tuple(img.GetSpacing()[::-1]), str(path.parent.name)


def perturb(ref: np.ndarray, seed: int = 1) -> np.ndarray:
    """Plausible prediction: shifted, enhancing dilated into the tumour, necrosis eroded, false positives."""
    rng = np.random.default_rng(seed)
    pred = np.roll(ref, (1, -2, 1), axis=(0, 1, 2))
    tumour = pred > 0
    pred[ndimage.binary_dilation(pred == 4) & tumour & (pred != 1)] = 4
    nec = pred == 1
    pred[nec & ~ndimage.binary_erosion(nec)] = 4
    for lab, center in ((2, (20, 40, 40)), (4, (130, 200, 60))):
        center = tuple(int(np.clip(c, 5, s - 6)) for c, s in zip(center, ref.shape))
        pred[_blob(rng, ref.shape, center, 5, n=2) & (pred == 0)] = lab
    return pred


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synthetic", action="store_true", help="ignore the real BraTS sample")
    ap.add_argument("--method", default="auto", choices=("auto", "edt", "kdtree"),
                    help="voxflow surface-distance transform (default: auto)")
    a = ap.parse_args()

    import torch
    from monai.metrics import compute_hausdorff_distance

    from voxflow.core.metrics import BRATS_REGIONS, evaluate_case, region_masks

    torch.set_num_threads(1)
    real = None if a.synthetic else real_reference()
    if real is None:
        ref, spacing, source = synthetic_reference(), SPACING, "synthetic"
    else:
        ref, spacing, source = real
    pred = perturb(ref)
    print(f"reference: {source}, shape {ref.shape}, spacing {spacing}, labels {np.unique(ref).tolist()}, "
          f"method {a.method}")

    def onehot(lab: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack(list(region_masks(lab, BRATS_REGIONS).values())))[None].float()

    yp, y = onehot(pred), onehot(ref)

    def ours():
        return evaluate_case(pred, ref, spacing, regions=BRATS_REGIONS, method=a.method)

    def monai_hd95():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return compute_hausdorff_distance(yp, y, include_background=True, percentile=95, spacing=spacing)

    ours(), monai_hd95()  # warm-up (imports, allocator)
    t_ours, rows = _best(ours, a.repeat)
    t_monai, hd = _best(monai_hd95, a.repeat)
    monai_hd95_mm = hd[0].numpy()  # type: ignore[index]
    for row, m in zip(rows, monai_hd95_mm):  # type: ignore[arg-type]
        print(f"  {row['label']:<12} dice={row['dice']:.4f} hd95={row['hd95']:.4f} monai_hd95={m:.4f} "
              f"hd={row['hd']:.3f} assd={row['assd']:.3f} nsd={row['nsd']:.4f} empty={row['empty']}")
    diff = max(abs(row["hd95"] - float(m)) for row, m in zip(rows, monai_hd95_mm))  # type: ignore[arg-type]
    print(f"metrics all_metrics_s={t_ours:.4f} monai_hd95_s={t_monai:.4f} speedup={t_monai / t_ours:.2f} "
          f"max_abs_diff_mm={diff:.2e}")


if __name__ == "__main__":
    main()
