"""Augmentation: image/label alignment, exact flips and identity, determinism, config."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

from voxflow.training.augment import AugmentConfig, augment_batch  # noqa: E402

# the MRI artefacts (tests/test_learn_augment_mri.py) are intensity transforms too: off with the others
NO_ARTEFACTS = dict(p_inverted_gamma=0, p_bias_field=0, p_motion=0, p_ghosting=0, p_spike=0, p_low_res=0)
NO_INTENSITY = dict(p_gamma=0, p_noise=0, p_brightness=0, p_contrast=0, **NO_ARTEFACTS)
NO_SPATIAL = dict(p_rotation=0, p_scaling=0, p_elastic=0, p_mirror=0)
ALL_SPATIAL = dict(p_rotation=1, p_scaling=1, p_elastic=1, p_mirror=1, **NO_INTENSITY)


def blob(shape, centre, sigma, batch=3):
    """Off-centre anisotropic Gaussian (peak 1), so flips and rotations move it."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    r2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigma))
    img = torch.exp(-r2 / 2)[None, None].repeat(batch, 1, *[1] * len(shape))
    return img, (img > 0.5).to(torch.uint8)


CASES = {
    "3d": ((40, 40, 40), (15, 23, 18), (5, 4, 6)),
    "2d": ((64, 64), (26, 36), (9, 7)),
}


@pytest.mark.parametrize("case", CASES)
def test_spatial_keeps_image_and_label_aligned(case):
    img, lab = blob(*CASES[case])
    before = (img.clone(), lab.clone())
    cfg = AugmentConfig.from_dict(ALL_SPATIAL)
    ai, al = augment_batch(img, lab, cfg, torch.Generator().manual_seed(3))
    assert ai.shape == img.shape and al.shape == lab.shape and al.dtype == torch.uint8
    agree = (al == (ai > 0.5)).flatten(1).float().mean(1)
    assert (agree >= 0.99).all(), agree
    # disagreements are only interpolation effects at the 0.5 contour
    mism = al != (ai > 0.5)
    assert (ai[mism] - 0.5).abs().max() < 0.15
    # ... and the transform did move things (an untransformed label agrees far less)
    moved = (al != lab).flatten(1).sum(1)
    assert (moved > 0.2 * lab.flatten(1).sum(1)).all(), moved
    assert ((lab == (ai > 0.5)).flatten(1).float().mean(1) < 0.98).all()
    # inputs untouched
    assert torch.equal(img, before[0]) and torch.equal(lab, before[1])


def test_mirror_is_exact_flip():
    img, lab = blob(*CASES["3d"], batch=2)
    img = img + torch.rand(img.shape, generator=torch.Generator().manual_seed(0))
    cfg = AugmentConfig.from_dict({**NO_SPATIAL, **NO_INTENSITY, "p_mirror": 1.0, "mirror_axes": [0, 2]})
    ai, al = augment_batch(img, lab, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ai, img.flip(2).flip(4))
    assert torch.equal(al, lab.flip(2).flip(4))


def test_identity_grid_reproduces_input():
    """A zero-angle rotation and unit scaling resample exactly at voxel centres."""
    img, lab = blob(*CASES["3d"], batch=2)
    img = torch.rand(img.shape, generator=torch.Generator().manual_seed(1))
    cfg = AugmentConfig.from_dict({**NO_SPATIAL, **NO_INTENSITY, "p_rotation": 1, "rotation_deg": 0,
                                   "p_scaling": 1, "scale_range": [1, 1]})
    ai, al = augment_batch(img, lab, cfg)
    assert torch.allclose(ai, img, atol=1e-5)
    assert torch.equal(al, lab)


def test_rotation_is_about_patch_centre():
    """Rotation keeps the label volume and the centroid's distance to the patch centre."""
    shape, _centre, _sigma = CASES["3d"]
    img, lab = blob(shape, (13, 26, 15), (5, 5, 5), batch=2)
    cfg = AugmentConfig.from_dict({**NO_SPATIAL, **NO_INTENSITY, "p_rotation": 1})
    _, al = augment_batch(img, lab, cfg, torch.Generator().manual_seed(4))
    mid = torch.tensor([(n - 1) / 2 for n in shape])
    for b in range(2):
        pts = torch.nonzero(al[b, 0]).float()
        c0 = torch.nonzero(lab[b, 0]).float().mean(0)
        assert abs(len(pts) - int(lab[b].sum())) < 0.03 * int(lab[b].sum())
        assert (pts.mean(0) - mid).norm() == pytest.approx((c0 - mid).norm().item(), abs=0.3)
        assert (pts.mean(0) - c0).norm() > 1.0  # it did rotate


def test_deterministic_given_generator():
    img, lab = blob(*CASES["3d"], batch=4)
    cfg = AugmentConfig.from_dict({k: 1.0 for k in ("p_rotation", "p_scaling", "p_elastic", "p_mirror",
                                                    "p_gamma", "p_noise", "p_brightness", "p_contrast")})
    a1, l1 = augment_batch(img, lab, cfg, torch.Generator().manual_seed(7))
    a2, l2 = augment_batch(img, lab, cfg, torch.Generator().manual_seed(7))
    a3, _ = augment_batch(img, lab, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a1, a2) and torch.equal(l1, l2)
    assert not torch.allclose(a1, a3)


@pytest.mark.parametrize("case", CASES)
def test_intensity_leaves_label_unchanged(case):
    img, lab = blob(*CASES[case], batch=4)
    img = img * 3 - 1  # range [-1, 2]
    cfg = AugmentConfig.from_dict({**NO_SPATIAL, "p_gamma": 1, "p_noise": 1, "p_brightness": 1, "p_contrast": 1})
    ai, al = augment_batch(img, lab, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(al, lab)
    assert (ai - img).abs().max() > 1e-2


def test_gamma_and_contrast_keep_range():
    img, lab = blob(*CASES["2d"], batch=4)
    img = img * 3 - 1
    for key in ("p_gamma", "p_contrast"):
        cfg = AugmentConfig.from_dict({**NO_SPATIAL, **NO_INTENSITY, key: 1})
        ai, _ = augment_batch(img, lab, cfg, torch.Generator().manual_seed(6))
        assert not torch.allclose(ai, img)
        lo, hi = img.flatten(1).amin(1), img.flatten(1).amax(1)
        assert (ai.flatten(1).amin(1) >= lo - 1e-5).all() and (ai.flatten(1).amax(1) <= hi + 1e-5).all()
        if key == "p_gamma":  # gamma maps [min, max] onto itself
            assert torch.allclose(ai.flatten(1).amin(1), lo, atol=1e-5)
            assert torch.allclose(ai.flatten(1).amax(1), hi, atol=1e-5)


def test_config_from_dict():
    cfg = AugmentConfig.from_dict({"p_rotation": 0.5, "scale_range": [0.8, 1.2]})
    assert cfg.p_rotation == 0.5 and cfg.scale_range == (0.8, 1.2)
    assert cfg.p_mirror == AugmentConfig().p_mirror
    with pytest.raises(ValueError, match=r"p_rotaton.*p_rotation"):
        AugmentConfig.from_dict({"p_rotaton": 0.5})
    with pytest.raises(ValueError, match="p_noise"):
        AugmentConfig.from_dict({"p_noise": 1.5})
    with pytest.raises(ValueError, match="gamma_range"):
        AugmentConfig.from_dict({"gamma_range": [1.5, 0.7]})


def test_rejects_bad_shapes():
    img, lab = blob(*CASES["2d"], batch=2)
    with pytest.raises(ValueError):
        augment_batch(img, lab[:, 0], AugmentConfig())
    with pytest.raises(ValueError):
        augment_batch(img, lab.float(), AugmentConfig())
