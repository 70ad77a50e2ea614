"""Losses against hand-computed values and against MONAI's DiceLoss."""

import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

from voxflow.training.losses import (  # noqa: E402
    deep_supervision_weights,
    inverse_frequency_weights,
    make_loss,
    soft_dice_loss,
)

# 2 classes on a 2x2x2 volume: logits of class 1 per voxel (class 0 has logit 0),
# so p1 = sigmoid(a). Target has 3 foreground voxels.
A = [2.0, -1.0, 0.5, 0.0, -3.0, 1.0, -0.5, 4.0]
T = [1, 0, 1, 0, 0, 0, 0, 1]


def _tensors():
    a = torch.tensor(A).reshape(1, 1, 2, 2, 2)
    logits = torch.cat([torch.zeros_like(a), a], dim=1).double()
    target = torch.tensor(T).reshape(1, 1, 2, 2, 2)
    return logits, target


def _p1(a):
    return 1.0 / (1.0 + math.exp(-a))


def _voxel_ce(a, t):
    return -math.log(_p1(a) if t == 1 else 1 - _p1(a))


def test_ce_hand_computed():
    logits, target = _tensors()
    expected = sum(_voxel_ce(a, t) for a, t in zip(A, T)) / 8
    got = make_loss("ce", 2)(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # all-zero logits: every voxel costs ln 2, written out
    assert make_loss("ce", 2)(torch.zeros(1, 2, 2, 2, 2), target).item() == pytest.approx(0.6931472, abs=1e-6)


def test_wce_hand_computed_and_differs_from_ce():
    logits, target = _tensors()
    w = [1.0, 3.0]
    num = sum(w[t] * _voxel_ce(a, t) for a, t in zip(A, T))
    den = sum(w[t] for t in T)  # 5 * 1 + 3 * 3 = 14
    assert den == 14.0
    got = make_loss("wce", 2, class_weights=w)(logits, target).item()
    assert got == pytest.approx(num / den, rel=1e-6)
    ce = make_loss("ce", 2)(logits, target).item()
    assert abs(got - ce) > 1e-3
    # equal weights reduce to plain CE
    assert make_loss("wce", 2, class_weights=[2.0, 2.0])(logits, target).item() == pytest.approx(ce, rel=1e-6)
    # the weight is applied to the *target* class: upweighting a class whose voxels
    # are predicted worse than average raises the loss
    fg = [_voxel_ce(a, t) for a, t in zip(A, T) if t == 1]
    assert (sum(fg) / len(fg) > ce) == (got > ce)


def test_wce_requires_weights_and_inverse_frequency():
    with pytest.raises(ValueError, match="class_weights"):
        make_loss("wce", 2)
    assert inverse_frequency_weights([90, 10]) == pytest.approx([0.2, 1.8])
    assert inverse_frequency_weights([5, 0, 5]) == pytest.approx([1.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        make_loss("nope", 2)


def test_dice_hand_computed():
    logits, target = _tensors()
    s = 1e-5
    p = [_p1(a) for a in A]
    inter = sum(pi for pi, t in zip(p, T) if t == 1)
    expected = 1 - (2 * inter + s) / (sum(p) + sum(T) + s)
    assert make_loss("dice", 2)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # all-zero logits: p = 1/2 everywhere, 3 of 8 voxels foreground:
    # dice = (2 * 1.5) / (4 + 3) = 3/7, loss = 4/7
    assert make_loss("dice", 2)(torch.zeros(1, 2, 2, 2, 2), target).item() == pytest.approx(4 / 7, abs=1e-5)
    # Dice + CE is the plain sum
    dce = make_loss("dice_ce", 2)(logits, target).item()
    ce = sum(_voxel_ce(a, t) for a, t in zip(A, T)) / 8
    assert dce == pytest.approx(expected + ce, rel=1e-6)


def test_dice_perfect_and_wrong():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4))
    onehot = torch.nn.functional.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    perfect = 50.0 * onehot
    wrong = 50.0 * onehot.roll(1, dims=1)  # every voxel predicts another class
    loss = make_loss("dice", 3)
    assert loss(perfect, target).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(wrong, target).item() == pytest.approx(1.0, abs=1e-5)
    # target without channel axis is accepted too
    assert loss(perfect, target[:, 0]).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_dice_matches_monai(spatial):
    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(1)
    logits = torch.randn((3, 4, *spatial), generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 1, *spatial), generator=g)
    ref = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                   smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    assert soft_dice_loss(logits, target).item() == pytest.approx(ref.item(), abs=1e-5)
    assert make_loss("dice", 4)(logits, target).item() == pytest.approx(ref.item(), abs=1e-5)


def test_deep_supervision_weighting():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4), generator=g)
    outs = [torch.randn((2, 3, 4, 4, 4), generator=g), torch.randn((2, 3, 2, 2, 2), generator=g)]
    plain = make_loss("dice_ce", 3)
    # nearest downsampling 4 -> 2 picks voxels 0 and 2 on each axis
    expected = (2 / 3) * plain(outs[0], target).item() + (1 / 3) * plain(outs[1], target[:, :, ::2, ::2, ::2]).item()
    ds = make_loss("dice_ce", 3, deep_supervision_weights=[1.0, 0.5])
    assert ds(outs, target).item() == pytest.approx(expected, rel=1e-6)
    # a stacked tensor (DynUNet's training output, all at full resolution)
    stacked = torch.stack([outs[0], outs[0].flip(2)], dim=1)
    expected = 0.5 * plain(outs[0], target).item() + 0.5 * plain(outs[0].flip(2), target).item()
    assert make_loss("dice_ce", 3, deep_supervision_weights=[1, 1])(stacked, target).item() == pytest.approx(
        expected, rel=1e-6)
    with pytest.raises(ValueError):
        ds([outs[0]], target)


def test_nnunet_deep_supervision_weights():
    # 1, 1/2, 1/4, 0 (coarsest dropped), over 1.75
    assert deep_supervision_weights(4) == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    assert deep_supervision_weights(1) == [1.0]
