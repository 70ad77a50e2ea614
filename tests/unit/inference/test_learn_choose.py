"""Automatic choice of configuration and ensemble on out-of-fold predictions (voxflow.inference.choose); the workflow
run that trains two configurations, chooses and predicts with the choice is
tests/workflow/test_learn_choose_workflow.py."""

from __future__ import annotations


import numpy as np
import pytest

from voxflow.inference.choose import choose, ensembles, score_ensembles

GROUPS = [[1], [2]]


def _probs(label: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Softmax-like probabilities (3 classes) that pick `label` except where `wrong` (there: background)."""
    p = np.full((3, *label.shape), 0.1, np.float32)
    lab = np.where(wrong, 0, label)
    for k in range(3):
        p[k][lab == k] = 0.8
    return p


def test_ensembles_are_every_combination():
    assert ensembles(["2d", "3d"]) == [("2d",), ("3d",), ("2d", "3d")]
    assert len(ensembles(["2d", "2.5d", "3d"])) == 7


def test_score_and_choose_the_best_and_on_ties_the_cheaper():
    rng = np.random.default_rng(0)
    refs = {s: rng.integers(0, 3, (8, 8, 8)) for s in ("a", "b")}
    noise = {(c, s): rng.random((8, 8, 8)) < rate for c, rate in (("2d", 0.3), ("3d", 0.05)) for s in refs}
    rows = score_ensembles(["2d", "3d"], ["a", "b"], lambda c, s: _probs(refs[s], noise[(c, s)]),
                           lambda s: refs[s], lambda p: np.argmax(p, 0), GROUPS)
    by = {tuple(r["members"]): r for r in rows}
    assert by[("3d",)]["dice"] > by[("2d",)]["dice"], "fewer wrong voxels must score higher"
    assert len(by[("2d",)]["dice_per_group"]) == 2
    assert choose(rows)["members"] == ["3d"]
    # the same Dice: the cheaper wins (fewer models, then 2d before 3d); within the tolerance too
    tied = [{"members": ["3d"], "n_models": 1, "dice": 0.9}, {"members": ["2d"], "n_models": 1, "dice": 0.9},
            {"members": ["2d", "3d"], "n_models": 2, "dice": 0.904}]
    assert choose(tied)["members"] == ["2d", "3d"]
    assert choose(tied, tolerance=0.005)["members"] == ["2d"]
    with pytest.raises(ValueError, match="no out-of-fold subject"):
        choose([{"members": ["2d"], "n_models": 1, "dice": None}])


def test_an_ensemble_can_beat_its_members():
    """Two configurations wrong in different places: their mean probability is right where either is."""
    ref = np.zeros((6, 6, 6), int)
    ref[1:5, 1:5, 1:5] = 1
    a_wrong, b_wrong = np.zeros_like(ref, bool), np.zeros_like(ref, bool)
    a_wrong[1:3], b_wrong[3:5] = True, True

    def probs(c, s):
        wrong = a_wrong if c == "2d" else b_wrong
        p = np.zeros((2, *ref.shape), np.float32)
        p[1] = np.where(ref == 1, np.where(wrong, 0.4, 0.9), 0.05)
        p[0] = 1 - p[1]
        return p

    rows = score_ensembles(["2d", "3d"], ["s"], probs, lambda s: ref, lambda p: np.argmax(p, 0), [[1]])
    best = choose(rows)
    assert best["members"] == ["2d", "3d"] and best["dice"] == pytest.approx(1.0)
