"""Post-processing of label maps: connected components, hole filling, opening/closing.

Pure numpy/scipy functions on integer label volumes; inputs are never modified.  Labels
can be given as single ints or as groups (``[[1, 2, 4]]`` = whole tumour treated as one
foreground), because regions such as BraTS' whole tumour are only meaningful as unions.
Connectivity is full (26-neighbourhood in 3D) for components, as in nnU-Net.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "keep_largest_component",
    "fill_holes",
    "binary_open_close",
    "decide_largest_component",
    "apply_postprocessing",
]

LabelSpec = Sequence[int | Sequence[int]]


def _groups(labels: LabelSpec) -> list[list[int]]:
    """``[1, [2, 4]]`` -> ``[[1], [2, 4]]``."""
    # np.isscalar narrows only its True branch; the casts tell mypy what the two branches hold
    return [[int(cast(int, lab))] if np.isscalar(lab) else [int(x) for x in cast(Sequence[int], lab)]
            for lab in labels]


def _largest_only(mask: np.ndarray) -> np.ndarray:
    """Mask of the largest connected component of ``mask`` (first one on ties)."""
    lab, n = ndi.label(mask, structure=ndi.generate_binary_structure(mask.ndim, mask.ndim))
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def keep_largest_component(seg: np.ndarray, labels: LabelSpec) -> np.ndarray:
    """Keep only the largest connected component of each label (group); the rest -> 0.

    A group is treated as one foreground: a component is a connected set of voxels
    carrying any label of the group, and all its labels are kept or removed together.
    """
    out = seg.copy()
    for group in _groups(labels):
        mask = np.isin(out, group)
        out[mask & ~_largest_only(mask)] = 0
    return out


def fill_holes(seg: np.ndarray, labels: LabelSpec) -> np.ndarray:
    """Fill background cavities fully enclosed by a label (group) with that label.

    Only background (0) voxels are filled, so other structures inside (e.g. a necrotic
    core) are preserved; a group fills with its first label.  Cavities open to the
    volume border are not enclosed and stay untouched.
    """
    out = seg.copy()
    for group in _groups(labels):
        mask = np.isin(out, group)
        out[ndi.binary_fill_holes(mask) & ~mask & (out == 0)] = group[0]
    return out


def _ball(radius: int, ndim: int) -> np.ndarray:
    grid = np.indices((2 * radius + 1,) * ndim) - radius
    return (grid**2).sum(0) <= radius**2


def binary_open_close(seg: np.ndarray, labels: LabelSpec, radius_vox: int = 1, op: str = "open") -> np.ndarray:
    """Morphological opening (removes thin spurs / specks -> 0) or closing (bridges small
    gaps into background -> label) per label (group), with a ball of ``radius_vox``.

    The mask is edge-padded so objects touching the volume border are not eroded by it.
    """
    if op not in ("open", "close"):
        raise ValueError(f"op must be 'open' or 'close', got {op!r}")
    r = int(radius_vox)
    out = seg.copy()
    if r < 1:
        return out
    ball, pw = _ball(r, seg.ndim), 2 * r
    crop = tuple(slice(pw, -pw) for _ in range(seg.ndim))
    for group in _groups(labels):
        mask = np.isin(out, group)
        padded = np.pad(mask, pw, mode="edge")
        if op == "open":
            out[mask & ~ndi.binary_opening(padded, ball)[crop]] = 0
        else:
            out[ndi.binary_closing(padded, ball)[crop] & ~mask & (out == 0)] = group[0]
    return out


def _mean_or_none(values: list[float]) -> float | None:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else None


def decide_largest_component(
    predictions: list[np.ndarray], references: list[np.ndarray], label_groups: list[list[int]],
    spacings: Sequence[Sequence[float]] | None = None, dice_tolerance: float = 0.01,
) -> dict[str, Any]:
    """nnU-Net's automatic choice of "keep largest component" per label group, weighing HD95 as well as Dice.

    For every group (one foreground), the mean Dice and mean HD95 (mm, ``spacings`` per case; voxels if None)
    over the validation cases are computed on the raw predictions and after keeping the largest component. It is
    enabled when HD95 does not rise and Dice does not fall by more than ``dice_tolerance``: nnU-Net's rule
    (Dice must not fall) ignores that one stray blob far from the lesion barely moves Dice but sets the
    Hausdorff distance, which is what a clinician sees. Cases where prediction and reference are both empty are
    ignored; a group with no informative case is not enabled. Returns a JSON-serialisable ``{"groups",
    "enabled", "dice_before", "dice_after", "hd95_before", "hd95_after", "dice_tolerance"}``.
    """
    from voxflow.core.metrics import dice, distance_metrics

    if len(predictions) != len(references):
        raise ValueError("need one reference per prediction")
    groups = _groups(label_groups)
    res: dict[str, Any] = {"groups": groups, "enabled": [], "dice_before": [], "dice_after": [],
                           "hd95_before": [], "hd95_after": [], "dice_tolerance": dice_tolerance}
    for group in groups:
        before, after, hd_before, hd_after = [], [], [], []
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            mask, ref_mask = np.isin(pred, group), np.isin(ref, group)
            if not (mask.any() or ref_mask.any()):
                continue
            largest = _largest_only(mask)
            before.append(dice(mask, ref_mask, empty=float("nan")))  # both empty: left out of the mean (nnU-Net)
            after.append(dice(largest, ref_mask, empty=float("nan")))
            spacing = None if spacings is None else spacings[i]
            hd_before.append(float(distance_metrics(mask, ref_mask, spacing)["hd95"]))
            hd_after.append(float(distance_metrics(largest, ref_mask, spacing)["hd95"]))
        b, a = _mean_or_none(before), _mean_or_none(after)
        hb, ha = _mean_or_none(hd_before), _mean_or_none(hd_after)
        res["dice_before"].append(b)
        res["dice_after"].append(a)
        res["hd95_before"].append(hb)
        res["hd95_after"].append(ha)
        res["enabled"].append(bool(b is not None and a is not None and a >= b - dice_tolerance
                                   and hb is not None and ha is not None and ha <= hb))
    return res


def apply_postprocessing(
    seg: np.ndarray,
    decision: Mapping[str, Any],
    fill_holes_labels: LabelSpec = (),
    open_close: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Apply a :func:`decide_largest_component` decision, then optional cleanup.

    Order: largest component for enabled groups (first, since that is the condition the
    decision was measured on), then ``open_close`` (``{"labels": ..., "radius_vox": 1,
    "op": "open"}``), then hole filling of ``fill_holes_labels``.
    """
    enabled = [g for g, on in zip(decision.get("groups", []), decision.get("enabled", [])) if on]
    out = keep_largest_component(seg, enabled) if enabled else seg.copy()
    if open_close:
        out = binary_open_close(
            out, open_close["labels"], int(open_close.get("radius_vox", 1)), str(open_close.get("op", "open"))
        )
    if fill_holes_labels:
        out = fill_holes(out, fill_holes_labels)
    return out
