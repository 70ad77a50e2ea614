"""Automatic choice of configuration and ensemble (nnU-Net's `find_best_configuration`), on out-of-fold predictions.

With `model.configurations` (e.g. [2d, 3d]) every configuration is trained on the same folds; each fold writes the
probabilities of its validation subjects. Every configuration alone and every ensemble of two or more (the mean of
their probabilities) is scored on those out-of-fold subjects: the mean foreground Dice per subject (one Dice per
label, or per region with train.regions; a label absent from both maps is skipped). The best wins; within
`tolerance` of it the cheapest (fewest models, then the cheaper configurations: 2d < 2.5d < 3d) is taken, as a
difference that small is noise on a validation set. The post-processing is then decided on the winner's
out-of-fold predictions, and model/inference.json records the choice, the table and the post-processing, which
the predict rule follows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from voxflow.core.metrics import dice

COST = {"2d": 1, "2.5d": 2, "3d": 3, "3d_cascade": 4}  # inference cost order for ties (a cascade runs 2 stages)


def ensembles(configurations: Sequence[str]) -> list[tuple[str, ...]]:
    """Every configuration alone and every combination of two or more, in a fixed order."""
    return [c for r in range(1, len(configurations) + 1) for c in itertools.combinations(configurations, r)]


def foreground_dice(seg: np.ndarray, ref: np.ndarray, groups: Sequence[Sequence[int]]) -> list[float]:
    """Dice of each label group (a label, or a region); NaN when both are empty."""
    return [dice(np.isin(seg, g), np.isin(ref, g), empty=float("nan")) for g in groups]


def score_ensembles(configurations: Sequence[str], subjects: Sequence[str],
                    load_probabilities: Callable[[str, str], np.ndarray], load_reference: Callable[[str], np.ndarray],
                    to_labels: Callable[[np.ndarray], np.ndarray], groups: Sequence[Sequence[int]]) -> list[dict]:
    """One row per ensemble: members, n_models and mean Dice over the subjects (mean over groups per subject),
    plus the mean Dice of each group. One subject's probabilities in memory at a time."""
    combos = ensembles(configurations)
    per: dict[tuple[str, ...], list[list[float]]] = {c: [] for c in combos}
    for s in subjects:
        probs = {c: load_probabilities(c, s).astype(np.float32) for c in configurations}
        ref = load_reference(s)
        for combo in combos:
            mean = probs[combo[0]] if len(combo) == 1 else np.mean([probs[c] for c in combo], axis=0)
            per[combo].append(foreground_dice(to_labels(mean), ref, groups))
    rows = []
    for combo in combos:
        d = np.array(per[combo], dtype=float).reshape(len(subjects), len(groups))
        with np.errstate(all="ignore"):
            subject_means = np.nanmean(np.where(np.isnan(d).all(1, keepdims=True), 0.0, d), axis=1)
            group_means = [float(np.nanmean(d[:, j])) if np.any(~np.isnan(d[:, j])) else None
                           for j in range(len(groups))]
        rows.append({"members": list(combo), "n_models": len(combo),
                     "dice": round(float(np.mean(subject_means)), 5) if len(subjects) else None,
                     "dice_per_group": [None if g is None else round(g, 5) for g in group_means]})
    return rows


def choose(rows: Sequence[Mapping], tolerance: float = 0.0) -> dict:
    """The best row; within `tolerance` of the best Dice, the cheapest (fewest models, then cheaper members)."""
    scored = [r for r in rows if r["dice"] is not None]
    if not scored:
        raise ValueError("no out-of-fold subject to choose a configuration on")
    best = max(r["dice"] for r in scored)
    near = [r for r in scored if r["dice"] >= best - tolerance]
    return dict(min(near, key=lambda r: (r["n_models"], sum(COST.get(c, 9) for c in r["members"]), -r["dice"])))


def write_inference(path: str | Path, chosen: dict, rows: Sequence[Mapping], models: Mapping[str, Sequence[str]],
                    postprocessing: dict, n_subjects: int, tolerance: float) -> dict:
    """model/inference.json: what predict follows (the models of the chosen configurations, the post-processing)
    and why (the table)."""
    from voxflow.core.atomic import write_json_atomic

    doc = {"configurations": chosen["members"], "dice": chosen["dice"],
           "models": [m for c in chosen["members"] for m in models[c]],
           "postprocessing": postprocessing, "n_validation_subjects": n_subjects, "tolerance": tolerance,
           "table": sorted((dict(r) for r in rows), key=lambda r: -(r["dice"] or 0.0))}
    write_json_atomic(doc, path)
    return doc


