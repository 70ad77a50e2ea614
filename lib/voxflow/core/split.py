"""The cohort's split into test subjects and folds: deterministic (same seed, same split), a pure function of the
subject IDs, so that the config check (voxflow.settings) and the split rule make the same one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def make_split(subjects: Sequence[str], n_folds: int, test_fraction: float, seed: int,
               test_subjects: Sequence[str] | None = None, qc_excluded: Mapping[str, list[str]] | None = None,
               holdout_fraction: float = 0.2, incomplete: Mapping[str, Mapping[str, str]] | None = None) -> dict:
    """Deterministic held-out test list + k folds over the rest (same seed, same split).

    One fold (no cross-validation) still needs cases the model did not train on, to decide the post-processing
    and validate on: `holdout_fraction` of the training subjects (at least 1 when there are 2 or more) are its
    validation subjects. The model trained without them is the one kept: retraining on all would double the cost
    and leave the decision measured on another model.

    `qc_excluded` (subject -> its QC flags; qc.exclude_flagged): those subjects are split as if absent, then added
    to the test subjects (predicted and evaluated, never trained on) and recorded with their flags. `incomplete`
    (subject -> {modality: why}; input.missing: synthesize) likewise: they are predicted once the synthesis model
    completed them, never trained on, and recorded as `incomplete`."""
    flagged, lacking = dict(qc_excluded or {}), dict(incomplete or {})
    if flagged or lacking:  # split the others as if these were absent, then predict them with the test subjects
        never = flagged.keys() | lacking.keys()
        sp = make_split([s for s in subjects if s not in never], n_folds, test_fraction, seed,
                        [s for s in test_subjects or [] if s not in never] or None, holdout_fraction=holdout_fraction)
        kept = set(subjects)
        sp["test"] = sorted(set(sp["test"]) | (never & kept))
        if flagged:
            sp["qc_excluded"] = [{"subject": s, "flags": list(flagged[s])} for s in sorted(flagged.keys() & kept)]
        if lacking:
            sp["incomplete"] = [{"subject": s, "missing": dict(lacking[s])} for s in sorted(lacking.keys() & kept)]
        return sp
    subjects = sorted(subjects)
    rng = np.random.default_rng(seed)
    order = [subjects[i] for i in rng.permutation(len(subjects))]
    if test_subjects:
        test = sorted(test_subjects)
    else:
        n_test = int(round(len(subjects) * test_fraction))
        test = sorted(order[:n_test])
    held_out = set(test)  # sets: 10 000 subjects in lists took seconds
    pool = [s for s in order if s not in held_out]
    if n_folds == 1:  # no cross-validation: a held-out validation set (none: validation patches from training)
        n_val = max(1, int(round(len(pool) * holdout_fraction))) if holdout_fraction > 0 and len(pool) >= 2 else 0
        val = sorted(pool[:n_val])
        return {"seed": seed, "n_folds": 1, "test": test, "holdout_fraction": holdout_fraction,
                "folds": [{"fold": 0, "train": sorted(pool[n_val:]), "val": val}]}
    if len(pool) < n_folds:
        raise ValueError(f"{len(pool)} training subjects cannot make {n_folds} folds")
    folds = []
    for k in range(n_folds):
        val = sorted(pool[k::n_folds])
        in_val = set(val)
        folds.append({"fold": k, "train": sorted(s for s in pool if s not in in_val), "val": val})
    return {"seed": seed, "n_folds": n_folds, "test": test, "folds": folds}


def training_subjects(split: dict) -> list[str]:
    """Every subject a model may learn from (the folds' train and validation subjects, never the test ones),
    sorted: the one definition the plan, the dataset-level normalization and the training stores use."""
    return sorted({s for f in split["folds"] for s in f["train"] + f["val"]})
