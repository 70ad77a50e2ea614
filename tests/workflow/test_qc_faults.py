"""Cohort QC catches real problems and leaves good data alone (issue 13).

A demo cohort of 14 subjects, 6 of them with a realistic fault made by the demo generator (voxflow.demo.faults):
k-space motion ghosting, a strong extra bias field, heavy Rician noise, a T2 volume given as T1, the head rotated
150 degrees (far outside what an affine registration recovers) and a skull-stripping failure (most of the brain cut
off the mask that the skullstrip step wrote; the chain's later steps then run on it, as they would after a real
failure). The real chain scores every subject and the cohort rule flags: every corrupted subject is flagged, by a
score that explains its fault, and no clean subject is. With qc.exclude_flagged the split keeps the flagged subjects
out of training and names them with their flags.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from support.paths import PROJECT, SCHEMA
from support.workflow import fail_msg, run_snakemake

pytestmark = pytest.mark.slow

FAULTS = {"demo001": "motion_ghosting", "demo003": "strong_bias", "demo005": "rician_noise",
          "demo007": "wrong_contrast", "demo009": "far_rotation"}
CUT_MASK = "demo011"  # skull-stripping failure, injected after the skullstrip step
N_SUBJECTS = 14
# the scores that explain each fault: at least one of them must flag the subject
EXPLAINS = {
    "motion_ghosting": {("t1", "efc"), ("t1", "fber"), ("t1", "snr_wm"), ("t1", "cjv")},
    "strong_bias": {("t1", "wm_inhomogeneity"), ("t1", "inu_range"), ("t1", "cjv"), ("t1", "snr_wm")},
    "rician_noise": {("t1", "snr_wm"), ("t1", "fber"), ("t1", "efc"), ("t1", "cjv"), ("t1", "cnr")},
    "wrong_contrast": {("t1", "wm_gm_contrast"), ("t1", "template_correlation"), ("t2", "coreg_nmi")},
    "far_rotation": {("t1", "template_correlation"), ("t1", "template_nmi"), ("mask", "mask_dice_template"),
                     ("t1", "empty_fraction")},
    "skullstrip_failure": {("mask", "brain_volume_ml"), ("mask", "mask_dice_template"), ("t1", "empty_fraction")},
}


def _cut_mask_and_rerun(out: Path, subject: str, cfg: dict) -> None:
    """Replace the subject's brain mask (and brain images) by a failed one and run the chain's later steps on it
    with the workflow's own step list (voxflow.pipeline.chain), as a job resumed after a real failure would."""
    from voxflow.pipeline.chain import RawSubject, build_chain, run_chain, step_spec
    from voxflow.settings import build_cohort
    from voxflow.demo.faults import cut_mask
    from voxflow.settings import resolve

    brain = out / "preprocess" / subject / "brain"
    img = nib.load(brain / "brain_mask.nii.gz")
    cut = cut_mask(np.asarray(img.dataobj) > 0, keep_fraction=0.35, axis=2)  # nibabel x-y-z: z is axis 2
    nib.save(nib.Nifti1Image(cut, img.affine, img.header), brain / "brain_mask.nii.gz")
    for m in ("t1", "t2"):
        path = next(brain.glob(f"{m}.nii*"))
        im = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(im.dataobj) * cut, im.affine, im.header), path)
    settings = resolve(cfg, build_cohort(cfg))
    steps = build_chain(settings.chain, str(out))
    later = [st for st in steps if st.name in ("mni", "to_zarr", "qc_scores")]
    raw = RawSubject(images={m: str(out / "demo" / "raw" / subject / f"{m}.nii.gz") for m in ("t1", "t2")})
    run_chain(subject, [step_spec(st, subject, raw) for st in later], on_error="stop")


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory):
    import yaml

    from voxflow.settings import validate_config

    work = tmp_path_factory.mktemp("qc_faults")
    out = work / "results"
    cfg = {"output_dir": str(out),
           "input": {"modalities": ["t1", "t2"]},
           "demo": {"n_subjects": N_SUBJECTS, "spacing_scale": 3.0, "faults": FAULTS},
           "split": {"n_folds": 2, "test_fraction": 0.0, "folds_to_train": [0]},
           "qc": {"exclude_flagged": True}}
    targets = [str(out / "qc" / "flags.tsv"), str(out / "model" / "split.json")]
    res = run_snakemake(work, cfg, [str(out / "status" / "cohort.json")], timeout=3000)
    assert res.returncode == 0, fail_msg(res)
    full = yaml.safe_load((PROJECT / "config" / "config.yaml").read_text())
    merged = {**full, **{k: {**full.get(k, {}), **v} if isinstance(v, dict) else v for k, v in cfg.items()}}
    validate_config(merged, str(SCHEMA))
    _cut_mask_and_rerun(out, CUT_MASK, merged)
    res = run_snakemake(work, cfg, targets, timeout=1200)
    assert res.returncode == 0, fail_msg(res)
    flags = pd.read_csv(out / "qc" / "flags.tsv", sep="\t")
    scores = pd.read_csv(out / "qc" / "scores.tsv", sep="\t")
    return {"out": out, "flags": flags, "scores": scores, "log": res.stderr}


def test_every_corrupted_subject_is_flagged_by_a_score_that_explains_it(qc_run):
    flags = qc_run["flags"]
    print(flags.to_string())  # the note quotes this table
    faults = {**FAULTS, CUT_MASK: "skullstrip_failure"}
    for subject, fault in faults.items():
        got = {(f.modality, f.score) for f in flags[flags.subject == subject].itertuples()}
        assert got & EXPLAINS[fault], f"{subject} ({fault}) flagged by {sorted(got)}, expected one of " \
                                      f"{sorted(EXPLAINS[fault])}"


def test_no_clean_subject_is_flagged(qc_run):
    faulty = set(FAULTS) | {CUT_MASK}
    clean_flags = qc_run["flags"][~qc_run["flags"].subject.isin(faulty)]
    assert clean_flags.empty, f"clean subjects flagged:\n{clean_flags.to_string()}"
    assert qc_run["scores"].subject.nunique() == N_SUBJECTS


def test_scores_are_in_each_subjects_file_and_the_flags_name_the_median(qc_run):
    out, flags = qc_run["out"], qc_run["flags"]
    one = json.loads((out / "qc" / "demo000" / "scores.json").read_text())
    assert {"t1", "t2", "mask"} <= set(one["scores"]) and {"coreg", "n4", "skullstrip", "mni"} <= set(one["steps"])
    assert {"efc", "fber", "snr_wm", "cjv", "wm_gm_contrast", "template_nmi", "inu_range"} <= set(one["scores"]["t1"])
    scores = qc_run["scores"]
    for f in flags.itertuples():  # each flag's median is the cohort's median of that score
        vals = scores[(scores.modality == f.modality) & (scores.score == f.score)]["value"].dropna()
        assert f.median == pytest.approx(float(np.median(vals)), rel=1e-4)
    assert "voxflow QC FLAG subject=demo005" in (out / "logs" / "qc_flags" / "cohort.log").read_text()


def test_exclude_flagged_keeps_them_out_of_training(qc_run):
    split = json.loads((qc_run["out"] / "model" / "split.json").read_text())
    flagged = set(qc_run["flags"].subject)
    trained = {s for f in split["folds"] for s in f["train"] + f["val"]}
    assert flagged and not flagged & trained
    assert {e["subject"] for e in split["qc_excluded"]} == flagged <= set(split["test"])
    assert all(e["flags"] and "median" in e["flags"][0] for e in split["qc_excluded"])
