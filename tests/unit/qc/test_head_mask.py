"""The head mask, defined once (voxflow.qc.subject.head_mask): the QC scores' (above the mean, holes filled) and,
opened first, N4's fit mask (voxflow.preprocess.n4.n4_fit_mask)."""

from __future__ import annotations

import numpy as np
import pytest

from voxflow.qc.subject import head_mask


def _head():
    img = np.zeros((20, 20, 20), np.float32)
    zz, yy, xx = np.indices(img.shape)
    img[(zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 < 49] = 10.0
    img[(zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 10) ** 2 < 9] = 0.0  # a dark hole inside: filled
    img[1, 1, 1] = 50.0  # one bright voxel in the air
    return img


def test_head_mask_fills_holes_and_opening_drops_isolated_voxels():
    img = _head()
    plain, opened = head_mask(img), head_mask(img, opened=True)
    assert plain.dtype == bool and plain[10, 10, 10] and opened[10, 10, 10]
    assert plain[1, 1, 1] and not opened[1, 1, 1]
    assert not (opened & ~plain).any()  # the opening only takes away


def test_n4_fit_mask_is_the_opened_head_mask():
    ants = pytest.importorskip("ants")
    from voxflow.preprocess.n4 import n4_fit_mask

    img = _head()
    got = n4_fit_mask(ants.from_numpy(img))
    assert got.numpy().dtype == np.float32
    np.testing.assert_array_equal(got.numpy() > 0, head_mask(img, opened=True))
