"""Cohort QC around the score functions: per-step score sets (voxflow.qc.subject), the cohort table and flags
(voxflow.qc.cohort), the split that keeps flagged subjects out of training, and the demo generator's faults."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from voxflow.demo import faults as demo_faults

from voxflow.qc import subject as qc_subject
from voxflow.core.split import make_split, training_subjects
from voxflow.qc.cohort import cohort_flags, flag_summary, score_table


def phantom(seed=0, noise=0.02, swap=False):
    """A head: air, a GM shell around a WM core (T1-like: WM brighter), Rician-ish noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices((40, 48, 40)) - np.array([20, 24, 20])[:, None, None, None]
    r = np.sqrt(z ** 2 + y ** 2 + x ** 2)
    wm, gm = r < 10, (r >= 10) & (r < 15)
    img = np.where(wm, 0.8, 0.0) + np.where(gm, 0.5, 0.0) + np.where((r >= 15) & (r < 17), 0.3, 0.0)
    if swap:
        img = np.where(wm, 0.5, np.where(gm, 0.8, img))
    img = np.abs(img + rng.normal(0, noise, img.shape)).astype(np.float32)
    return img, wm.astype(np.float32), gm.astype(np.float32), r < 15


def test_image_quality_sees_noise_and_ghosts():
    clean, *_ = phantom(noise=0.02)
    noisy, *_ = phantom(noise=0.15)
    q_clean = qc_subject.image_quality(clean)
    _, wm, gm, brain = phantom()
    snr_clean = qc_subject.tissue_contrast(clean, brain, gm, wm)["snr_wm"]
    assert qc_subject.tissue_contrast(noisy, brain, gm, wm)["snr_wm"] < 0.3 * snr_clean
    q_clean = qc_subject.image_quality(clean * 1000)  # scanner-like scale (MRIQC's FBER floor is absolute)
    q_ghost = qc_subject.image_quality(demo_faults.motion_ghosting(clean * 1000, shift_vox=8, fraction=0.4))
    assert q_ghost["fber"] < q_clean["fber"] / 5  # energy moved into the air
    assert q_ghost["efc"] > q_clean["efc"]
    field = demo_faults.bias_field(clean.shape, 0.6)
    q_bias = qc_subject.image_quality(clean, field=field, field_mask=np.ones(clean.shape, bool))
    assert q_bias["inu_range"] > 0.5 and "inu_range" not in q_clean
    zscored = qc_subject.image_quality((clean - clean.mean()) / clean.std())  # already normalized: no energies
    assert np.isnan(zscored["efc"]) and np.isnan(zscored["fber"])
    _, wm, gm, brain = phantom()
    assert np.isnan(qc_subject.tissue_contrast(clean - 0.5, brain, gm, wm)["snr_wm"])


def test_tissue_contrast_sign_follows_the_contrast():
    img, wm, gm, brain = phantom()
    t1 = qc_subject.tissue_contrast(img, brain, gm, wm)
    t2 = qc_subject.tissue_contrast(phantom(swap=True)[0], brain, gm, wm)
    assert t1["wm_gm_contrast"] > 2 and t2["wm_gm_contrast"] < -2
    assert t1["cnr"] == pytest.approx(abs(t1["wm_gm_contrast"]))
    noisy = qc_subject.tissue_contrast(phantom(noise=0.2)[0], brain, gm, wm)
    assert noisy["cjv"] > 3 * t1["cjv"]


def test_template_fit_and_mask_volume():
    img, _, _, brain = phantom()
    fit = qc_subject.template_fit(img, img, brain, brain)
    assert fit["mask_dice_template"] == 1.0 and fit["template_correlation"] > 0.99 and fit["empty_fraction"] < 0.01
    rotated = demo_faults.far_rotation(img * brain, 150, axes=(0, 1))
    bad = qc_subject.template_fit(np.roll(rotated, 12, axis=0), img, brain, np.roll(brain, 12, axis=0))
    assert bad["mask_dice_template"] < 0.8 and bad["empty_fraction"] > 0.1
    assert qc_subject.mask_quality(np.ones((10, 10, 10)), (2.0, 1.0, 1.0))["brain_volume_ml"] == pytest.approx(2.0)


def test_merge_and_table_and_flags(tmp_path):
    rng = np.random.default_rng(1)
    files = {}
    for i in range(12):
        s = f"sub{i:02d}"
        a, b = tmp_path / f"{s}_n4.json", tmp_path / f"{s}_mni.json"
        efc = 0.45 + rng.normal(0, 0.005) + (0.2 if s == "sub03" else 0.0) - (0.1 if s == "sub04" else 0.0)
        qc_subject.write_step_scores(str(a), {"t1": {"efc": efc, "snr": 10 + rng.normal(0, 0.3)}}, 0.1)
        qc_subject.write_step_scores(str(b), {"mask": {"brain_volume_ml": 200.0 if s == "sub07" else 1400.0},
                                              "t1": {"cnr": float("nan")}}, 0.2)
        out = tmp_path / s / "scores.json"
        merged = qc_subject.merge_subject_scores(s, {"n4": str(a), "mni": str(b)}, str(out))
        assert set(merged["scores"]) == {"t1", "mask"} and merged["steps"] == ["mni", "n4"]
        assert "seconds" not in json.loads(a.read_text())  # the files are the same on every run
        assert json.loads(out.read_text())["scores"]["t1"]["cnr"] is None  # NaN is not JSON
        files[s] = str(out)
    table = score_table(files, "synchronous")
    assert list(table.columns) == ["subject", "modality", "score", "value"] and len(table) == 12 * 4
    flags = cohort_flags(table, flag_z=3.5)
    got = {(f.subject, f.modality, f.score) for f in flags.itertuples()}
    # efc: high is bad (sub03 flagged, sub04's low value is not); brain volume: below its sanity bound
    assert got == {("sub03", "t1", "efc"), ("sub07", "mask", "brain_volume_ml")}
    assert flags.iloc[0]["subject"] == "sub07"  # bounds first
    assert flag_summary(flags)["sub03"][0].startswith("t1 efc=0.6")
    few = cohort_flags(table[table.subject.isin([f"sub0{i}" for i in range(5)] + ["sub07"])], flag_z=3.5)
    assert set(few["subject"]) == {"sub07"}  # below 10 subjects: only the bounds


def test_split_keeps_flagged_subjects_out_of_training():
    subjects = [f"s{i:02d}" for i in range(20)]
    flagged = {"s03": ["t1 efc=0.7 (median 0.45)"], "s11": ["mask brain_volume_ml=200 (median 1400)"]}
    sp = make_split(subjects, 4, 0.2, 7, qc_excluded=flagged)
    trained = set(training_subjects(sp))
    assert not trained & set(flagged) and set(flagged) <= set(sp["test"])
    assert sp["qc_excluded"] == [{"subject": s, "flags": flagged[s]} for s in sorted(flagged)]
    assert trained | set(sp["test"]) == set(subjects)
    plain = make_split([s for s in subjects if s not in flagged], 4, 0.2, 7)
    assert plain["folds"] == sp["folds"]


@pytest.mark.parametrize("fault", demo_faults.ARRAY_FAULTS)
def test_array_faults_keep_the_demo_scale_and_are_seeded(fault):
    img, *_ = phantom()
    data = np.round(img * 1000 / img.max()).astype(np.int16)
    a, b = demo_faults.apply_fault(fault, data, seed=3), demo_faults.apply_fault(fault, data, seed=3)
    assert a.dtype == np.int16 and a.min() >= 0 and a.max() == 1000
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(float) - data).mean() > 5
    with pytest.raises(ValueError, match="unknown array fault"):
        demo_faults.apply_fault("far_rotation", data)


def test_flags_table_reads_back(tmp_path):
    flags = pd.DataFrame([{"subject": "a", "modality": "t1", "score": "efc", "value": 0.7, "median": 0.45,
                           "z": float("inf"), "reason": "robust z +inf (|z| > 3.5)"}])
    flags.to_csv(tmp_path / "flags.tsv", sep="\t", index=False)
    from voxflow.qc.cohort import read_flags

    assert flag_summary(read_flags(tmp_path / "flags.tsv")) == {"a": ["t1 efc=0.7 (median 0.45)"]}
