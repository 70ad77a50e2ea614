"""Region-based training: the label groups, the region loss (against MONAI's), training and inference with
sigmoid outputs, and the label map painted back from the regions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from support.learning import CPU, LABEL_VALUES, SHAPE, plans_for, read_curve, synthetic_label
from voxflow.training.losses import make_loss
from voxflow.core.labels import labels_from_region_probabilities, region_index_groups, region_labels
from voxflow.training.regions import region_targets

BRATS18 = [[1, 2, 4], [1, 4], [4]]


def test_region_labels_are_the_labels_each_region_adds():
    assert region_labels(BRATS18, [0, 1, 2, 4]) == [2, 1, 4]  # BraTS 2018: edema, necrosis, enhancing
    assert region_labels([[1, 2, 3], [1, 3], [3]], [0, 1, 2, 3]) == [2, 1, 3]  # BraTS 2023
    with pytest.raises(ValueError, match=r"ambiguous.*train.region_labels"):  # BraTS 2013: core adds 1 and 3
        region_labels([[1, 2, 3, 4], [1, 3, 4], [4]], [0, 1, 2, 3, 4])
    assert region_labels([[1, 2, 3, 4], [1, 3, 4], [4]], [0, 1, 2, 3, 4], explicit=[2, 1, 4]) == [2, 1, 4]
    with pytest.raises(ValueError, match=r"labels \[3\] not among"):
        region_labels([[1, 3]], [0, 1, 2, 4])
    with pytest.raises(ValueError, match="is not in its region"):
        region_labels(BRATS18, [0, 1, 2, 4], explicit=[2, 4, 1])


def test_regions_round_trip_a_brats_label_map():
    lab = synthetic_label(seed=3)
    idx = np.searchsorted(LABEL_VALUES, lab)  # the sampler's class indices
    groups = region_index_groups(BRATS18, LABEL_VALUES)
    masks = region_targets(torch.from_numpy(idx)[None], groups)[0].numpy()
    assert masks.shape == (3, *SHAPE)
    np.testing.assert_array_equal(masks[0], lab > 0)
    np.testing.assert_array_equal(masks[1], np.isin(lab, [1, 4]))
    np.testing.assert_array_equal(masks[2], lab == 4)
    np.testing.assert_array_equal(labels_from_region_probabilities(masks * 0.9 + 0.05, [2, 1, 4]), lab)


def test_region_loss_matches_monai_dice_plus_bce():
    from monai.losses import DiceLoss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, generator=gen, requires_grad=True)
    idx = torch.randint(0, 4, (2, 1, 8, 8, 8), generator=gen)
    groups = region_index_groups(BRATS18, LABEL_VALUES)
    t = region_targets(idx[:, 0], groups)
    ours = make_loss("dice_ce", 4, regions=groups)(logits, idx)
    ref = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, t) + \
        torch.nn.functional.binary_cross_entropy_with_logits(logits, t)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    ours.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    perfect = (t * 2 - 1) * 20.0
    assert float(make_loss("dice_ce", 4, regions=groups)(perfect, idx)) < 1e-3
    with pytest.raises(ValueError, match="no region form"):
        make_loss("wce", 4, class_weights=[1, 1, 1, 1], regions=groups)


def test_train_and_predict_with_regions(base_cfg, stores, tmp_path):
    from voxflow.inference.predict import predict_probabilities, segmentation
    from voxflow.training.train import train_fold

    cfg = copy.deepcopy(base_cfg)
    cfg["train"]["regions"] = BRATS18
    plans = plans_for(cfg, stores)
    assert plans["regions"] == BRATS18 and plans["region_labels"] == [2, 1, 4] and plans["n_outputs"] == 3
    tcfg = dict(cfg["train"], deep_supervision=True)
    train_fold([stores["s0"], stores["s1"]], [stores["s2"]], plans, tcfg, tmp_path, device=CPU, progress=False)
    row = read_curve(tmp_path / "curve.csv")[-1]
    assert {"val_dice_region_1_2_4", "val_dice_region_1_4", "val_dice_region_4"} <= set(row)
    probs, got = predict_probabilities(stores["s2"], [str(tmp_path / "model_final.pt")], dict(cfg["infer"], tta=True,
                                       mirror_axes=[2]), CPU)
    assert probs.shape == (3, *SHAPE) and got["regions"] == BRATS18
    assert probs.min() >= 0 and probs.max() <= 1
    assert np.abs(probs.sum(0) - 1).max() > 1e-2, "sigmoid outputs are independent, not a softmax"
    seg = segmentation(probs, got)
    assert set(np.unique(seg)) <= {0, 1, 2, 4}
    np.testing.assert_array_equal(seg > 0, (probs > 0.5).any(0))  # painted where any region is (as nnU-Net)
    np.testing.assert_array_equal(seg == 4, probs[2] > 0.5)  # the last region paints over the others
