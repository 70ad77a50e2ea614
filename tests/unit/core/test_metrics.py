"""voxflow.core.metrics against monai.metrics on random 3D blobs, plus the empty-mask policy."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
    get_confusion_matrix,
)
from monai.metrics.utils import get_edge_surface_distance
from scipy.ndimage import binary_dilation, binary_erosion

from voxflow.core.metrics import (
    BRATS_REGIONS,
    EMPTY_POLICY,
    METRICS,
    distance_metrics,
    evaluate_case,
    image_diagonal_mm,
    mask_surface,
    overlap_metrics,
    region_masks,
    summarize,
    surface_distances,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

N_CASES = 60
ISO = (1.0, 1.0, 1.0)
ANISO = (0.8, 1.0, 3.0)
TOL_MM = 1.0


def _ellipsoids(rng: np.random.Generator, shape: tuple[int, ...], n: int, lo=None, hi=None) -> np.ndarray:
    """Union of ``n`` random ellipsoids with centres in [lo, hi) (may touch the image border)."""
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    lo = np.zeros(3) if lo is None else np.asarray(lo, float)
    hi = np.asarray(shape, float) if hi is None else np.asarray(hi, float)
    m = np.zeros(shape, bool)
    for _ in range(n):
        c = rng.uniform(lo, hi)
        r = rng.uniform(1.5, max(2.0, min(shape) / 4), 3)
        m |= sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1.0
    return m


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], str]:
    """Random (pred, ref, spacing, kind); kinds cycle random / nested / disjoint / perturbed."""
    rng = np.random.default_rng(1000 + seed)
    shape = tuple(int(s) for s in rng.integers(20, 51, 3))
    spacing = ISO if seed % 2 == 0 else ANISO
    kind = ("random", "nested", "disjoint", "perturbed")[seed % 4]
    while True:
        if kind == "random":
            ref, pred = _ellipsoids(rng, shape, rng.integers(1, 4)), _ellipsoids(rng, shape, rng.integers(1, 4))
        elif kind == "nested":
            ref = _ellipsoids(rng, shape, rng.integers(1, 3))
            pred = binary_erosion(ref, iterations=int(rng.integers(1, 3)))
            if seed % 8 == 1:
                pred, ref = ref, pred  # prediction contains the reference
        elif kind == "disjoint":
            half = np.array(shape, float) / 2
            ref = _ellipsoids(rng, shape, 2, hi=half * [1, 2, 2] - 2)
            pred = _ellipsoids(rng, shape, 2, lo=half * [1, 0, 0] + 2)
            pred &= ~ref
        else:
            ref = _ellipsoids(rng, shape, rng.integers(1, 4))
            pred = np.roll(binary_dilation(ref), tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
            pred |= _ellipsoids(rng, shape, 1) & (rng.random(shape) < 0.05)  # speckle
        if pred.any() and ref.any():
            return pred, ref, spacing, kind


CASES = [_case(i) for i in range(N_CASES)]


def _t(m: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(m)[None, None].float()  # one-hot (B=1, C=1, ...)


def _monai(pred: np.ndarray, ref: np.ndarray, spacing) -> dict[str, float]:
    yp, y = _t(pred), _t(ref)
    kw = {"include_background": True, "spacing": spacing}
    cm = get_confusion_matrix(yp, y, include_background=True)
    return {
        "dice": compute_dice(yp, y, include_background=True).item(),
        "jaccard": compute_iou(yp, y, include_background=True).item(),
        "precision": compute_confusion_matrix_metric("precision", cm).item(),
        "recall": compute_confusion_matrix_metric("sensitivity", cm).item(),
        "hd": compute_hausdorff_distance(yp, y, **kw).item(),
        "hd95": compute_hausdorff_distance(yp, y, percentile=95, **kw).item(),
        "assd": compute_average_surface_distance(yp, y, symmetric=True, **kw).item(),
        "nsd": compute_surface_dice(yp, y, [TOL_MM], **kw).item(),
    }


def test_cases_cover_kinds_and_spacings() -> None:
    assert len(CASES) >= 50
    assert {c[3] for c in CASES} == {"random", "nested", "disjoint", "perturbed"}
    assert sum(c[2] == ANISO for c in CASES) == N_CASES // 2
    assert any(not (p & r).any() for p, r, _, _ in CASES)  # some do not overlap at all
    assert any((p & ~r).sum() == 0 for p, r, _, _ in CASES)  # pred inside ref
    assert any((r & ~p).sum() == 0 for p, r, _, _ in CASES)  # ref inside pred
    assert any(p[0].any() or r[-1].any() for p, r, _, _ in CASES)  # masks touching the border


@pytest.mark.parametrize("i", range(N_CASES))
def test_matches_monai(i: int) -> None:
    pred, ref, spacing, _ = CASES[i]
    theirs = _monai(pred, ref, spacing)
    for method in ("edt", "kdtree", "auto"):  # both transforms, and the automatic choice
        ours = {**overlap_metrics(pred, ref, spacing), **distance_metrics(pred, ref, spacing, TOL_MM, method)}
        assert ours["empty"] == "none"
        for k in ("dice", "jaccard", "precision", "recall", "nsd"):
            assert ours[k] == pytest.approx(theirs[k], abs=1e-6), (method, k)
        for k in ("hd", "hd95", "assd"):
            assert ours[k] == pytest.approx(theirs[k], abs=1e-3), (method, k)


@pytest.mark.parametrize("i", [0, 1, 2, 3, 5, 6])
def test_surface_and_directed_distances_match_monai(i: int) -> None:
    pred, ref, spacing, _ = CASES[i]
    np.testing.assert_array_equal(mask_surface(ref), ref ^ binary_erosion(ref))
    _, (m_pr, m_rp), _ = get_edge_surface_distance(torch.from_numpy(pred), torch.from_numpy(ref),
                                                   spacing=spacing, symmetric=True)
    for method in ("edt", "kdtree"):
        d_pr, d_rp = surface_distances(pred, ref, spacing, method=method)
        np.testing.assert_allclose(d_pr, m_pr.numpy(), atol=1e-4)
        np.testing.assert_allclose(d_rp, m_rp.numpy(), atol=1e-4)


def test_auto_method_far_false_positive() -> None:
    """A far-away false positive makes the box mostly empty: auto switches, values do not change."""
    from voxflow.core import metrics

    ref = np.zeros((60, 120, 120), bool)
    ref[20:30, 20:32, 20:34] = True
    pred = np.roll(ref, 1, axis=2)
    pred[50:53, 110:113, 110:113] = True
    p, r = metrics._padded_crop(pred, ref)
    n_surface = metrics.mask_surface(p).sum() + metrics.mask_surface(r).sum()
    assert p.size > metrics.EDT_MAX_BOX_PER_SURFACE_VOXEL * n_surface  # auto -> kdtree here
    edt, kd = (distance_metrics(pred, ref, ANISO, method=m) for m in ("edt", "kdtree"))
    assert edt == pytest.approx(kd, abs=1e-9) and distance_metrics(pred, ref, ANISO) == kd
    assert kd["hd"] == pytest.approx(_monai(pred, ref, ANISO)["hd"], abs=1e-3)
    with pytest.raises(ValueError):
        distance_metrics(pred, ref, ANISO, method="brute")


def test_overlap_counts_and_volumes() -> None:
    pred, ref, _, _ = CASES[3]
    o = overlap_metrics(pred, ref, ANISO)
    assert o["tp"] == (pred & ref).sum() and o["fp"] == (pred & ~ref).sum() and o["fn"] == (~pred & ref).sum()
    assert o["vol_diff_vox"] == pred.sum() - ref.sum()
    assert o["vol_pred_ml"] == pytest.approx(pred.sum() * 0.8 * 1.0 * 3.0 / 1000)
    assert o["vol_diff_ml"] == pytest.approx(o["vol_pred_ml"] - o["vol_ref_ml"])


# --- empty-mask policy -------------------------------------------------------------------

SHAPE = (20, 30, 25)


def _blob() -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[5:12, 8:20, 6:15] = True
    return m


@pytest.mark.parametrize("spacing", [ISO, ANISO])
@pytest.mark.parametrize("kind", ["both", "pred", "ref"])
def test_empty_policy(kind: str, spacing) -> None:
    empty, full = np.zeros(SHAPE, bool), _blob()
    pred, ref = {"both": (empty, empty), "pred": (empty, full), "ref": (full, empty)}[kind]
    diag = image_diagonal_mm(SHAPE, spacing)
    assert diag == pytest.approx(np.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, spacing))))
    o, d = overlap_metrics(pred, ref, spacing), distance_metrics(pred, ref, spacing)
    assert o["empty"] == d["empty"] == kind
    got = {**o, **d}
    for k, v in EMPTY_POLICY[kind].items():
        want = diag if v == "image_diagonal_mm" else v
        assert got[k] == want, k
        assert not np.isnan(got[k])
    if kind == "both":
        assert [got[k] for k in ("dice", "jaccard", "precision", "recall", "hd", "nsd")] == [1, 1, 1, 1, 0, 1]
    else:
        assert (got["dice"], got["precision"], got["recall"], got["nsd"]) == (0, 0, 0, 0)
        assert got["hd"] == got["hd95"] == got["assd"] == diag
    assert o["vol_pred_vox"] == pred.sum() and o["vol_ref_vox"] == ref.sum()


def test_empty_diagonal_is_worse_than_any_real_distance() -> None:
    a, b = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    a[0, 0, 0] = b[-1, -1, -1] = True  # opposite corners
    assert distance_metrics(a, b, ANISO)["hd"] < image_diagonal_mm(SHAPE, ANISO)


def test_surface_distances_empty_are_raw() -> None:
    full = _blob()
    d_pr, d_rp = surface_distances(np.zeros(SHAPE, bool), full)
    assert d_pr.size == 0 and d_rp.size == mask_surface(full).sum() and np.isinf(d_rp).all()


# --- label maps, regions, summary --------------------------------------------------------


def _label_maps() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    shape = (40, 44, 36)
    ref = np.zeros(shape, np.uint8)
    z, y, x = np.ogrid[:40, :44, :36]
    ref[((z - 20) / 11) ** 2 + ((y - 22) / 13) ** 2 + ((x - 18) / 9) ** 2 <= 1] = 2
    ref[_ellipsoids(rng, shape, 2, lo=(14, 16, 12), hi=(26, 28, 24))] = 2
    ref[binary_erosion(ref == 2, iterations=3)] = 1
    ref[binary_erosion(ref == 1, iterations=2)] = 4
    pred = np.roll(ref, (1, -1, 0), axis=(0, 1, 2))
    pred[2:5, 2:5, 2:5] = 1  # spurious blob
    return pred, ref


def test_evaluate_case_matches_per_mask_functions() -> None:
    pred, ref = _label_maps()
    rows = evaluate_case(pred, ref, ANISO, labels=[1, 2, 3, 4], regions=BRATS_REGIONS)
    assert [r["label"] for r in rows] == ["1", "2", "3", "4", "whole_tumor", "tumor_core", "enhancing"]
    assert all(set(r) == {"label", "empty", *METRICS} for r in rows)
    masks_p = {**region_masks(pred, {str(v): [v] for v in (1, 2, 3, 4)}), **region_masks(pred, BRATS_REGIONS)}
    masks_r = {**region_masks(ref, {str(v): [v] for v in (1, 2, 3, 4)}), **region_masks(ref, BRATS_REGIONS)}
    np.testing.assert_array_equal(masks_r["whole_tumor"], ref > 0)
    for row in rows:
        p, r = masks_p[row["label"]], masks_r[row["label"]]
        want = {**overlap_metrics(p, r, ANISO), **distance_metrics(p, r, ANISO)}  # full image, no crop
        for k in METRICS:
            assert row[k] == pytest.approx(want[k], abs=1e-9), (row["label"], k)
        assert row["empty"] == want["empty"]
    row3 = rows[2]
    assert row3["empty"] == "both" and row3["dice"] == 1 and row3["hd95"] == 0
    wt = rows[4]
    assert wt["hd95"] == pytest.approx(_monai(masks_p["whole_tumor"], masks_r["whole_tumor"], ANISO)["hd95"], abs=1e-3)
    # default: the labels present in either map
    assert [r["label"] for r in evaluate_case(pred, ref, ANISO)] == ["1", "2", "4"]


def test_evaluate_case_empty_uses_full_image_diagonal() -> None:
    pred, ref = _label_maps()
    pred[pred == 4] = 1
    row = {r["label"]: r for r in evaluate_case(pred, ref, ISO, labels=[4])}["4"]
    assert row["empty"] == "pred" and row["hd"] == pytest.approx(image_diagonal_mm(ref.shape, ISO))
    rows = evaluate_case(np.zeros_like(ref), np.zeros_like(ref), ISO, regions=BRATS_REGIONS)
    assert [r["empty"] for r in rows] == ["both"] * 3


def test_summarize_counts_empty_cases_in_n() -> None:
    pred, ref = _label_maps()
    no_et = pred.copy()
    no_et[no_et == 4] = 1
    cases = [(pred, ref), (no_et, ref), (np.zeros_like(ref), np.zeros_like(ref)), (pred, np.where(ref == 4, 1, ref))]
    frames = []
    for c, (p, r) in enumerate(cases):
        df = pd.DataFrame(evaluate_case(p, r, ISO, regions=BRATS_REGIONS))
        df.insert(0, "case", f"c{c}")
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    s = summarize(rows).set_index(["label", "metric"])
    et = s.loc["enhancing"]
    assert set(et.index) == set(METRICS)
    assert (et["n"] == 4).all() and (et["n_nan"] == 0).all()
    assert (et["n_empty_pred"] == 1).all() and (et["n_empty_ref"] == 1).all() and (et["n_empty_both"] == 1).all()
    dice = rows.loc[rows.label == "enhancing", "dice"]
    assert et.loc["dice", "mean"] == pytest.approx(dice.mean())
    assert et.loc["dice", "median"] == pytest.approx(dice.median())
    assert et.loc["dice", "iqr"] == pytest.approx(dice.quantile(0.75) - dice.quantile(0.25))
    assert et.loc["hd95", "mean"] > image_diagonal_mm(ref.shape, ISO) / 2  # two worst-value cases pull it up
    wt = s.loc[("whole_tumor", "dice")]
    assert wt["n"] == 4 and wt["n_empty_both"] == 1 and wt["n_empty_pred"] == 0


def test_summarize_reports_nan_instead_of_hiding_it() -> None:
    rows = pd.DataFrame({"label": ["a", "a", "a"], "dice": [1.0, np.nan, 0.5], "empty": ["none"] * 3})
    s = summarize(rows).set_index("metric").loc["dice"]
    assert s["n"] == 3 and s["n_nan"] == 1 and s["mean"] == pytest.approx(0.75)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        overlap_metrics(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            distance_metrics(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool), ISO)
