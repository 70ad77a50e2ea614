"""QC scores (voxflow.qc.scores): each measure moves the way its definition says when the image degrades, and the
robust flags catch a few bad subjects that a mean/std z-score would let hide."""

from __future__ import annotations

import numpy as np
import pytest

from voxflow.qc import scores as q

SHAPE = (40, 48, 40)


def phantom(noise: float = 5.0, seed: int = 0, gm: float = 60.0, wm: float = 100.0):
    """A head-like phantom: white-matter core, grey-matter shell, air around; masks of each."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(SHAPE)
    r = np.sqrt(((zz - 20) / 14) ** 2 + ((yy - 24) / 17) ** 2 + ((xx - 20) / 14) ** 2)
    wm_mask, gm_mask = r < 0.6, (r >= 0.6) & (r < 1.0)
    img = np.where(wm_mask, wm, np.where(gm_mask, gm, 0.0)) + rng.normal(0, noise, SHAPE)
    return np.abs(img), wm_mask, gm_mask, r >= 1.15


def test_snr_cnr_cjv_follow_the_noise():
    clean, wm, gm, air = phantom(noise=2.0)
    noisy, *_ = phantom(noise=8.0)
    assert q.snr(clean, wm) > 3 * q.snr(noisy, wm)
    assert q.snr(clean, wm) == pytest.approx(100 / 2.0, rel=0.1)  # mean / sd of the white matter
    assert q.cnr(clean, wm, gm, air) > 2 * q.cnr(noisy, wm, gm, air)
    assert q.cjv(clean, wm, gm) < q.cjv(noisy, wm, gm) / 2
    # no contrast between the tissues (a wrong or failed contrast): the joint variation explodes
    flat, *_ = phantom(noise=2.0, gm=80.0, wm=80.0)
    assert q.cjv(flat, wm, gm) > 10 * q.cjv(clean, wm, gm)


def test_efc_rises_with_ghosting_and_is_one_for_a_flat_image():
    clean, *_ = phantom(noise=1.0)
    ghosted = clean + 0.3 * np.roll(clean, SHAPE[1] // 2, axis=1)  # motion ghost half a field of view away
    assert q.efc(ghosted) > q.efc(clean) + 0.02
    assert q.efc(np.ones(SHAPE)) == pytest.approx(1.0)
    assert 0 < q.efc(clean) < 1


def test_fber_falls_with_background_noise_and_caps_a_silent_background():
    img, wm, gm, air = phantom(noise=1.0)
    fg = wm | gm
    noisy_bg = img + np.where(air, 20.0, 0.0)
    assert q.fber(noisy_bg, fg, air) < q.fber(img, fg, air) / 4
    silent = np.where(air, 0.0, img)
    assert q.fber(silent, fg, air) == 1e5


def test_inu_of_a_flat_and_a_strong_field():
    _, wm, gm, _ = phantom()
    brain = wm | gm
    assert q.inu_stats(np.ones(SHAPE), brain) == {"inu_median": 1.0, "inu_range": 0.0}
    ramp = 1.0 + 0.8 * (np.indices(SHAPE)[1] / SHAPE[1] - 0.5)  # +-40% across the head
    stats = q.inu_stats(ramp, brain)
    assert stats["inu_median"] == pytest.approx(1.0, abs=0.05) and stats["inu_range"] > 0.3


def test_saturation_and_empty_field():
    img, wm, gm, _ = phantom(noise=5.0)
    clipped = np.minimum(img, np.percentile(img[wm | gm], 80))
    assert q.saturated_fraction(clipped, wm | gm) >= 0.19 > q.saturated_fraction(img, wm | gm)
    assert q.empty_fraction(img, wm | gm) == 0.0
    half = img.copy()
    half[:, :, :20] = 0
    assert q.empty_fraction(half, wm | gm) == pytest.approx(0.5, abs=0.1)


def test_similarity_of_aligned_and_misaligned_images():
    a, wm, gm, _ = phantom(noise=3.0, seed=1)
    b, *_ = phantom(noise=3.0, seed=2)  # same anatomy, other noise
    inverted = 200.0 - b  # another contrast of the same anatomy: NMI sees it, correlation is negative
    moved = np.roll(b, 8, axis=2)
    assert q.normalized_mutual_information(a, b) > q.normalized_mutual_information(a, moved) + 0.05
    assert q.normalized_mutual_information(a, inverted) == pytest.approx(q.normalized_mutual_information(a, b),
                                                                         rel=0.02)
    assert q.normalized_mutual_information(a, a) == pytest.approx(2.0)
    assert q.correlation(a, b) > 0.9 > q.correlation(a, moved)
    assert q.dice(wm, wm) == 1.0 and q.dice(wm, gm) == 0.0 and q.dice(np.zeros(3), np.zeros(3)) == 1.0


def _cohort(n: int, bad: dict[str, float], seed: int = 0) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    scores = {f"s{i:02d}": {"snr": float(rng.normal(20, 1))} for i in range(n)}
    for s, v in bad.items():
        scores[s] = {"snr": v}
    return scores


def test_robust_flags_catch_outliers_that_mean_and_std_would_hide():
    scores = _cohort(12, {"bad1": 100.0, "bad2": 110.0})
    values = np.array([v["snr"] for v in scores.values()])
    classic = (values - values.mean()) / values.std()
    assert classic.max() < 3.5, "the premise: two extreme subjects inflate the std enough to hide themselves"
    flags = q.flag_outliers(scores, flag_z=3.5)
    assert q.flagged_subjects(flags) == ["bad1", "bad2"]
    worst = flags[0]
    assert worst["subject"] == "bad2" and worst["score"] == "snr" and worst["value"] == 110.0
    assert worst["median"] == pytest.approx(np.median(values)) and worst["z"] > 3.5


def test_direction_bounds_and_small_cohorts():
    low = _cohort(12, {"low": 5.0})
    assert q.flagged_subjects(q.flag_outliers(low, direction={"snr": "high"})) == []  # only high SNR would be bad
    assert q.flagged_subjects(q.flag_outliers(low, direction={"snr": "low"})) == ["low"]
    small = _cohort(5, {"low": 5.0})  # too few subjects for a cohort statistic: only the hard bounds apply
    assert q.flag_outliers(small) == []
    flags = q.flag_outliers(small, bounds={"snr": (8.0, None)})
    assert [(f["subject"], f["reason"].startswith("outside")) for f in flags] == [("low", True)]


def test_robust_z_of_a_constant_cohort():
    z = q.robust_z([1.0, 1.0, 1.0, 1.0, 2.0, float("nan")])
    assert list(z[:4]) == [0.0] * 4 and z[4] == np.inf and np.isnan(z[5])


# --- the fault generators (voxflow.demo.faults) move the score that should catch them ------------------------------


def test_each_injected_fault_moves_its_score():
    from voxflow.demo import faults as f

    img, wm, gm, air = phantom(noise=2.0, seed=3)
    brain = wm | gm
    ghosted = f.motion_ghosting(img, shift_vox=8, fraction=0.3, seed=1)
    assert ghosted.shape == img.shape and ghosted.dtype == np.float32
    assert q.efc(ghosted) > q.efc(img) + 0.01 and q.fber(ghosted, brain, air) < 0.75 * q.fber(img, brain, air)
    assert np.array_equal(f.motion_ghosting(img, seed=1), f.motion_ghosting(img, seed=1))  # seeded

    biased = f.strong_bias(img, strength=0.6, seed=2)
    field = f.bias_field(img.shape, 0.6, seed=2)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in img.shape], indexing="ij")
    centre = np.log(field)[sum(g ** 2 for g in grids) <= 0.5]  # the strength is spanned where the head is
    assert np.abs(centre).max() == pytest.approx(0.6, abs=0.01)
    assert q.cjv(biased, wm, gm) > 1.5 * q.cjv(img, wm, gm)

    noisy = f.rician_noise(img, sigma_fraction=0.15, seed=4)
    assert noisy.min() >= 0 and q.snr(noisy, wm) < q.snr(img, wm) / 3

    head = img.copy()  # the phantom is nearly symmetric: a brighter front and a lesion make it a head
    head[:, :24] *= 1.6
    head[8:16, 30:38, 8:16] += 120
    rotated = f.far_rotation(head, 150)
    assert q.correlation(head, rotated, brain) < 0.5 < q.correlation(head, f.far_rotation(head, 0), brain)

    cut = f.cut_mask(brain, keep_fraction=0.35)
    assert cut.sum() < 0.4 * brain.sum() and q.dice(cut, brain) < 0.6 and not np.any(cut & ~brain)
