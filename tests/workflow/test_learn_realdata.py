"""BraTS 2013 smoke test: the whole workflow (preprocessing, split, plan, train, predict) on the two
real cases of ../shared/data/brats2013-sample, trained for a token 2 iterations; the held-out case's
prediction must land on its raw grid."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from support.paths import PROJECT

BRATS = PROJECT / ".." / "shared" / "data" / "brats2013-sample"
EXAMPLE = PROJECT / "config" / "examples" / "brats2013_sample.yaml"
TEST_CASE = "brats_2013_pat0002_1"


@pytest.mark.slow
@pytest.mark.realdata
def test_brats_sample_end_to_end(tmp_path):
    import nibabel as nib

    if not (BRATS / TEST_CASE / "OTMultiClass.nii.gz").is_file():
        pytest.skip(f"BraTS sample not found at {BRATS.resolve()} (only present on the project's machines)")
    cfg = yaml.safe_load(EXAMPLE.read_text())
    out = tmp_path / "results"
    cfg["output_dir"] = str(out)
    cfg["input"]["root"] = str(BRATS.resolve())
    cfg["model"].update(base_features=8, patch_size=[32, 32, 32])
    cfg["train"].update(epochs=1, iters_per_epoch=2, val_patches=2, workers=0, threads=1)
    cfg["infer"].update(tta=False, overlap=0.25)  # fewer windows: the prediction only has to exist
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    # its own working directory (.snakemake, locks) so it never meets a workflow running in the project
    cmd = [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "2", "--configfile", str(cfg_path)]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert res.returncode == 0, f"snakemake exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"

    plans = json.loads((out / "model" / "plans.json").read_text())
    assert plans["patch_size"] == [32, 32, 32] and plans["n_classes"] == 5
    split = json.loads((out / "model" / "split.json").read_text())
    assert split["test"] == [TEST_CASE] and split["folds"][0]["train"] == ["brats_2013_pat0001_1"]
    assert (out / "model" / "fold_0" / "model_final.pt").is_file()

    pred_path = out / "predictions" / TEST_CASE / f"{TEST_CASE}_seg.nii.gz"
    assert pred_path.is_file()
    pred, raw = nib.load(str(pred_path)), nib.load(str(BRATS / TEST_CASE / "OTMultiClass.nii.gz"))
    assert pred.shape == raw.shape
    assert np.array_equal(pred.affine, raw.affine)
    values = set(np.unique(np.asarray(pred.dataobj)).tolist())
    assert values <= {0, 1, 2, 3, 4}, values
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    # predict-only with the trained model folder, in a fresh output folder, for the held-out case: the
    # same prediction, voxel for voxel (seeded registrations, one thread: the same store)
    cfg2 = json.loads(json.dumps(cfg))
    out2 = tmp_path / "predict_only"
    cfg2["output_dir"] = str(out2)
    cfg2["input"]["subjects"] = [TEST_CASE]
    cfg2["predict"] = {"model_dir": str(out / "model")}
    cfg_path.write_text(yaml.safe_dump(cfg2))
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert res.returncode == 0, f"snakemake exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    again = nib.load(str(out2 / "predictions" / TEST_CASE / f"{TEST_CASE}_seg.nii.gz"))
    assert np.array_equal(np.asarray(again.dataobj), np.asarray(pred.dataobj))
    assert (out2 / "report" / "report.html").is_file()
    # reruns follow the config: an execution setting reruns nothing, a changed inference setting or a
    # fold model replaced in place (same path, newer) reruns the prediction. Snakemake's params trigger
    # ignores params computed from a job's files, hence the rules' `settings` params (step_params).
    def planned(change) -> str:
        c = json.loads(json.dumps(cfg2))
        change(c)
        cfg_path.write_text(yaml.safe_dump(c))
        dry = subprocess.run(cmd + ["-n", "--quiet", "rules"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             check=False)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        return dry.stdout + dry.stderr

    assert "Nothing to be done" in planned(lambda c: c.update(dask={"scheduler": "processes"}))
    assert re.search(r"^predict\s+1\b", planned(lambda c: c["infer"].update(overlap=0.5)), re.M)
    model = out / "model" / "fold_0" / "model_final.pt"
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    assert re.search(r"^predict\s+1\b", planned(lambda c: None), re.M)
