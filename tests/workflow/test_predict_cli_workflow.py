"""`voxflow predict` end to end (the archive and input logic: tests/unit/model_sharing/test_predict_cli.py): the
workflow trains a tiny model, `voxflow export-model` exports it, and the one-line command predicts a held-out
subject's raw folder and gets the workflow's own prediction, voxel for voxel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from support.paths import VENV_BIN
from voxflow.model_sharing.archive import sha256_file

MODS = ["t1", "flair"]


# --- end to end: the workflow's model, exported, predicts a held-out subject as the workflow did ---------------

HELD_OUT = "demo003"


def _e2e_config(out: Path) -> dict:
    """The fault tests' tiny training (4 mm scans, no N4, no skull stripping, MNI 2 mm, 2 epochs of 2
    iterations), on the demo cohort, two folds (an ensemble), TTA and the probability map on."""
    return {"output_dir": str(out),
            "input": {"layout": "demo", "modalities": MODS},
            "demo": {"n_subjects": 4, "spacing_scale": 4.0},
            "preprocess": {"mni": {"resolution_mm": 2}, "skullstrip": {"method": "none"}, "n4": {"enabled": False}},
            "split": {"n_folds": 2, "folds_to_train": [0, 1], "test_fraction": 0.2, "test_subjects": [HELD_OUT]},
            "model": {"base_features": 4, "patch_size": [32, 32, 32], "batch_size": 2},
            "train": {"device": "cpu", "epochs": 2, "iters_per_epoch": 2, "val_patches": 2, "workers": 0,
                      "threads": 1},
            "infer": {"device": "cpu", "tta": True, "mirror_axes": [2], "overlap": 0.25, "probabilities": True}}


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    from support.workflow import run_snakemake

    work = tmp_path_factory.mktemp("predict_cli")
    out = work / "results"
    pred = out / "predictions" / HELD_OUT
    targets = [str(pred / f"{HELD_OUT}_seg.nii.gz"), str(out / "model" / "settings.json")]
    t0 = time.perf_counter()
    res = run_snakemake(work, _e2e_config(out), targets)
    return dict(work=work, out=out, res=res, seconds=time.perf_counter() - t0)


def _voxflow(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(["voxflow", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.mark.slow
def test_predict_one_subject_equals_the_workflow(workflow_run, tmp_path):
    import nibabel as nib

    from support.workflow import fail_msg

    res, out = workflow_run["res"], workflow_run["out"]
    assert res.returncode == 0, fail_msg(res)
    split = json.loads((out / "model" / "split.json").read_text())
    assert split["test"] == [HELD_OUT]  # held out: never trained on
    archive = tmp_path / "model.zip"
    exp = _voxflow("export-model", str(out / "model"), str(archive), cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    raw = out / "demo" / "raw" / HELD_OUT  # t1.nii.gz, flair.nii.gz and the label seg.nii.gz
    dest = tmp_path / "clean"
    t0 = time.perf_counter()
    run = _voxflow("predict", "-i", str(raw), "-m", str(archive), "-o", str(dest), cwd=tmp_path)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout + run.stderr[-6000:]
    assert "voxflow predict" in run.stderr and "subject" in run.stderr  # the progress bar
    mine, theirs = dest / HELD_OUT, out / "predictions" / HELD_OUT
    assert sorted(p.name for p in mine.iterdir()) == sorted(
        [f"{HELD_OUT}_seg.nii.gz", f"{HELD_OUT}_seg_mni.nii.gz", f"{HELD_OUT}_prob.nii.gz", f"{HELD_OUT}_seg.json"])
    for name in (f"{HELD_OUT}_seg.nii.gz", f"{HELD_OUT}_seg_mni.nii.gz", f"{HELD_OUT}_prob.nii.gz"):
        a, b = nib.load(mine / name), nib.load(theirs / name)
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), name
        assert np.array_equal(a.affine, b.affine), name
    seg = np.asarray(nib.load(mine / f"{HELD_OUT}_seg.nii.gz").dataobj)
    assert seg.shape == nib.load(raw / "t1.nii.gz").shape and seg.any()
    side = json.loads((mine / f"{HELD_OUT}_seg.json").read_text())
    assert side["model"]["sha256"] == sha256_file(archive) and side["modalities"] == MODS
    assert side["inputs"] == {m: str(raw / f"{m}.nii.gz") for m in MODS} and side["device"] == "cpu"
    assert side["seconds"]["total"] > 0 and side["voxflow_version"]
    assert sorted(os.listdir(dest)) == [HELD_OUT]  # work files and the unpacked model removed
    print(f"workflow run {workflow_run['seconds']:.0f} s, voxflow predict {seconds:.0f} s")


@pytest.mark.slow
def test_predict_names_a_broken_subject_in_one_line(workflow_run, tmp_path):
    """The real chain's check of a truncated scan, with the plain model folder: one line naming subject, file
    and problem, exit code 1 (the subject that only lacks a scan is named too, before any work)."""
    out = workflow_run["out"]
    assert workflow_run["res"].returncode == 0
    cohort = tmp_path / "cohort"
    shutil.copytree(out / "demo" / "raw" / HELD_OUT, cohort / "bad")
    shutil.copytree(out / "demo" / "raw" / HELD_OUT, cohort / "no_flair")
    (cohort / "no_flair" / "flair.nii.gz").unlink()
    t1 = cohort / "bad" / "t1.nii.gz"
    t1.write_bytes(t1.read_bytes()[: t1.stat().st_size // 2])
    dest = tmp_path / "pred"
    run = _voxflow("predict", "-i", str(cohort), "-m", str(out / "model"), "-o", str(dest), cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr[-6000:]
    errors = [ln for ln in run.stderr.splitlines() if "voxflow ERROR" in ln]
    assert len(errors) == 2, run.stderr[-3000:]
    assert errors[0].startswith(f"voxflow ERROR [ingest] subject=bad file={t1}: t1 image file is truncated"), errors
    assert errors[1].startswith(f"voxflow ERROR [inputs] subject=no_flair file={cohort / 'no_flair'}: no scan for "
                                "modality 'flair'"), errors
    assert "0 of 2 subjects predicted" in run.stdout and "2 failed: bad, no_flair" in run.stdout
    assert not dest.exists() or os.listdir(dest) == []
