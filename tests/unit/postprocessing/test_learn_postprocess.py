"""Post-processing: connected components, hole filling, opening/closing, nnU-Net LCC decision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from voxflow.postprocessing.postprocess import (  # noqa: E402
    apply_postprocessing,
    binary_open_close,
    decide_largest_component,
    fill_holes,
    keep_largest_component,
)


def _two_blobs() -> np.ndarray:
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[1:6, 1:6, 1:6] = 1  # big blob, 125 voxels
    seg[8:10, 8:10, 8:10] = 1  # small separate blob, 8 voxels
    seg[1:3, 8:11, 1:3] = 2  # another class, two blobs of its own
    seg[9:11, 1:3, 9:11] = 2
    seg[10, 1, 9] = 3
    return seg


def test_keep_largest_component_per_class() -> None:
    seg = _two_blobs()
    out = keep_largest_component(seg, [1])
    assert (out[1:6, 1:6, 1:6] == 1).all() and (out[8:10, 8:10, 8:10] == 0).all()
    np.testing.assert_array_equal(out[seg != 1], seg[seg != 1])  # other labels untouched
    assert (seg[8:10, 8:10, 8:10] == 1).all()  # input not modified
    out2 = keep_largest_component(seg, [1, 2])
    assert (out2 == 2).sum() == 12 and (out2[1:3, 8:11, 1:3] == 2).all()


def test_diagonal_neighbours_are_connected() -> None:
    """Full (26-) connectivity: a corner-touching chain is one object of 3 voxels."""
    seg = np.zeros((7, 7, 7), np.uint8)
    seg[4, 4, 4] = seg[5, 5, 5] = seg[6, 6, 6] = 1
    seg[0:2, 0:2, 0:2] = 1  # 8 voxels: bigger than the chain
    assert (keep_largest_component(seg, [1]) == 1).sum() == 8
    seg[0:2, 0:2, 0:2] = 0
    seg[0, 0, 6] = 1  # single voxel: smaller than the chain
    out = keep_largest_component(seg, [1])
    assert out[0, 0, 6] == 0 and (out == 1).sum() == 3


def test_label_group_is_one_foreground() -> None:
    """Whole tumour {1,2,4}: adjacent compartments form one object and survive together,
    a distant satellite is removed even though each label alone would keep it."""
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[2:6, 2:6, 2:4] = 1
    seg[2:6, 2:6, 4:6] = 2  # touches label 1
    seg[3:5, 3:5, 6] = 4  # touches label 2
    seg[9:11, 9:11, 9:11] = 4  # satellite, larger than the attached label-4 part
    grouped = keep_largest_component(seg, [[1, 2, 4]])
    assert (grouped[9:11, 9:11, 9:11] == 0).all() and (grouped[3:5, 3:5, 6] == 4).all()
    assert ((grouped == 1) | (grouped == 2)).sum() == ((seg == 1) | (seg == 2)).sum()
    per_label = keep_largest_component(seg, [4])
    assert (per_label[9:11, 9:11, 9:11] == 4).all() and (per_label[3:5, 3:5, 6] == 0).all()


def _hollow_cube(open_tunnel: bool) -> np.ndarray:
    seg = np.zeros((11, 11, 11), np.uint8)
    seg[2:9, 2:9, 2:9] = 1
    seg[4:7, 4:7, 4:7] = 0  # cavity
    if open_tunnel:
        seg[5, 5, 0:4] = 0  # tunnel from the cavity to the outside
    return seg


def test_fill_holes_enclosed_but_not_open() -> None:
    closed = fill_holes(_hollow_cube(False), [1])
    assert (closed[4:7, 4:7, 4:7] == 1).all()
    opened = _hollow_cube(True)
    np.testing.assert_array_equal(fill_holes(opened, [1]), opened)


def test_fill_holes_keeps_other_labels_inside() -> None:
    seg = _hollow_cube(False)
    seg[5, 5, 5] = 2  # e.g. necrotic core inside the cavity
    out = fill_holes(seg, [1])
    assert out[5, 5, 5] == 2 and out[4, 4, 4] == 1


def test_open_removes_speck_close_bridges_gap() -> None:
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[2:9, 2:9, 2:9] = 1
    seg[10, 10, 10] = 1  # isolated speck
    opened = binary_open_close(seg, [1], radius_vox=1, op="open")
    assert opened[10, 10, 10] == 0 and (opened[3:8, 3:8, 3:8] == 1).all()
    seg2 = np.zeros((12, 12, 12), np.uint8)
    seg2[2:9, 2:9, 2:5] = 1
    seg2[2:9, 2:9, 6:9] = 1  # one-voxel gap at x = 5
    closed = binary_open_close(seg2, [1], radius_vox=1, op="close")
    assert (closed[4:7, 4:7, 5] == 1).all() and closed[0, 0, 0] == 0
    full = np.ones((6, 6, 6), np.uint8)  # touches every border: must survive opening
    np.testing.assert_array_equal(binary_open_close(full, [1], 1, "open"), full)
    with pytest.raises(ValueError):
        binary_open_close(seg, [1], op="dilate")


def _case(spurious: bool, second_lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((16, 16, 16), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    if second_lesion:
        ref[11:14, 11:14, 11:14] = 1
    pred = ref.copy()
    pred[2:8, 2:8, 2] = 0  # prediction a bit smaller than the reference
    if spurious:
        pred[12:14, 2:4, 12:14] = 1  # false positive blob
    return pred, ref


def test_decide_enables_when_spurious_blob_hurts() -> None:
    cases = [_case(spurious=True, second_lesion=False), _case(spurious=False, second_lesion=False)]
    d = decide_largest_component([c[0] for c in cases], [c[1] for c in cases], [[1]])
    assert d["enabled"] == [True]
    assert d["dice_after"][0] > d["dice_before"][0]
    json.dumps(d)


def test_decide_disables_when_true_second_lesion_removed() -> None:
    cases = [_case(spurious=False, second_lesion=True), _case(spurious=False, second_lesion=False)]
    d = decide_largest_component([c[0] for c in cases], [c[1] for c in cases], [[1]])
    assert d["enabled"] == [False] and d["dice_after"][0] < d["dice_before"][0]


def test_decide_ties_enable_and_empty_groups() -> None:
    """No change -> equal Dice -> enabled (nnU-Net rule); a group never present -> off."""
    pred, ref = _case(spurious=False, second_lesion=False)
    d = decide_largest_component([pred], [ref], [[1], [2]])
    assert d["groups"] == [[1], [2]] and d["enabled"] == [True, False]
    assert d["dice_before"][0] == d["dice_after"][0] and d["dice_before"][1] is None
    json.loads(json.dumps(d))


def test_decide_weighs_hd95_a_far_speck_against_a_small_true_satellite() -> None:
    """Removing a far false-positive speck also removes a small true satellite: Dice falls a little (nnU-Net's
    rule says off) while HD95 falls from 35 to 3 mm; within dice_tolerance the HD95 gain decides."""
    ref = np.zeros((40, 40, 40), np.uint8)
    ref[4:8, 4:8, 4:8] = 1  # the lesion, 64 voxels
    ref[10:12, 4:7, 4:5] = 1  # a true satellite 2 voxels away, 6 voxels
    pred = ref.copy()
    pred[34:36, 34:36, 34] = 1  # a far false-positive speck, 4 voxels
    strict = decide_largest_component([pred], [ref], [[1]], [(1.0, 1.0, 1.0)], dice_tolerance=0.0)
    assert strict["enabled"] == [False] and strict["dice_after"][0] < strict["dice_before"][0]
    assert strict["hd95_before"][0] > 30 and strict["hd95_after"][0] < 4
    assert decide_largest_component([pred], [ref], [[1]], [(1.0, 1.0, 1.0)], dice_tolerance=0.02)["enabled"] == [True]
    # in mm: the same case at 2 mm spacing doubles both distances
    coarse = decide_largest_component([pred], [ref], [[1]], [(2.0, 2.0, 2.0)], dice_tolerance=0.02)
    assert coarse["hd95_before"][0] == pytest.approx(2 * strict["hd95_before"][0])
    # a true distant lesion is never cut: Dice and HD95 both worsen
    far = ref.copy()
    far[34:36, 34:36, 34] = 1
    assert decide_largest_component([far], [far], [[1]], dice_tolerance=0.5)["enabled"] == [False]


def test_apply_postprocessing() -> None:
    seg = _hollow_cube(False)
    seg[0, 0, 10] = 1  # speck
    decision = {"groups": [[1], [2]], "enabled": [True, False]}
    out = apply_postprocessing(seg, decision, fill_holes_labels=[1])
    assert out[0, 0, 10] == 0 and (out[4:7, 4:7, 4:7] == 1).all()
    np.testing.assert_array_equal(apply_postprocessing(seg, {"groups": [[1]], "enabled": [False]}), seg)
    oc = apply_postprocessing(seg, {"groups": [], "enabled": []}, open_close={"labels": [1], "op": "open"})
    assert oc[0, 0, 10] == 0
