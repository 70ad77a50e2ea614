"""The package's one binary Dice (voxflow.core.metrics.dice) and its empty-mask policy: both masks empty score 1 as
in EMPTY_POLICY (evaluate_case agrees), or the caller's explicit `empty` (NaN: left out of a nanmean)."""

from __future__ import annotations

import math

import numpy as np

from voxflow.core.metrics import EMPTY_POLICY, dice, overlap_metrics


def _masks():
    a = np.zeros((4, 5, 6), bool)
    b = np.zeros((4, 5, 6), bool)
    a[1:3, 1:4, 1:5] = True  # 24 voxels
    b[2:4, 1:4, 1:5] = True  # 24 voxels, 12 shared
    return a, b


def test_dice_of_overlapping_masks_is_the_formula_and_evaluate_cases():
    a, b = _masks()
    assert dice(a, b) == 2.0 * 12 / 48 == overlap_metrics(a, b)["dice"]
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0


def test_both_empty_scores_the_policy_or_the_explicit_value():
    none = np.zeros((3, 3), bool)
    assert dice(none, none) == 1.0 == EMPTY_POLICY["both"]["dice"] == overlap_metrics(none, none)["dice"]
    assert math.isnan(dice(none, none, empty=float("nan")))
    assert dice(none, none, empty=0.0) == 0.0


def test_one_empty_mask_scores_zero_whatever_the_both_empty_value():
    a, _ = _masks()
    none = np.zeros_like(a)
    for empty in (1.0, float("nan")):
        assert dice(a, none, empty=empty) == 0.0 and dice(none, a, empty=empty) == 0.0
    assert overlap_metrics(none, a)["dice"] == 0.0 == EMPTY_POLICY["pred"]["dice"]


def test_non_zero_is_inside_and_positive_is_the_callers_choice():
    """Label maps and float masks: any non-zero voxel is inside; `> 0` first where negative means outside."""
    a = np.array([0, 2, -1, 0.5])
    b = np.array([0, 1, 1, 0])
    assert dice(a, b) == 2.0 * 2 / 5
    assert dice(a > 0, b > 0) == 2.0 * 1 / 4
    assert isinstance(dice(a, b), float) and isinstance(dice(b, b, empty=float("nan")), float)
