"""A bad subject never blocks the cohort (input.on_error: exclude, the default).

One cohort of good subjects plus broken ones (a truncated scan and a missing sequence, both rejected by
validation, and scans whose intensities were exported with a wrong scale slope, which pass validation and
fail inside the preprocessing chain) runs to its report with the plain command, no --keep-going. The
broken subjects are named with the step that failed and its reason (status/cohort.json, split.json, the
report's first section, the run's closing summary), and everything the good subjects get, their stores
and the trained weights, equals a run of the good subjects alone. With on_error: stop the first broken
subject stops the run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from support.outputs import tmp_names_under
from support.workflow import fail_msg, run_snakemake

GOOD = ["s01", "s02", "s03", "s04", "sujet-é05"]  # a unicode ID works end to end
MODS = ["t1", "flair"]


def _truncated(d: Path) -> None:
    p = d / "t1.nii.gz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _missing(d: Path) -> None:
    (d / "flair.nii.gz").unlink()


def _scaled(d: Path) -> None:
    """Valid files whose voxels are ~1e-9 of the real ones (a wrong scale slope at export): no check of the
    header or the voxels rejects them; skull stripping ('none': the non-zero voxels) finds no brain."""
    for m in MODS:
        p = d / f"{m}.nii.gz"
        img = nib.load(p)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32) * 1e-9, img.affine), p)


BROKEN = {  # subject -> (damage, step that fails, file name, problem regex)
    "bad_truncated": (_truncated, "validate", "t1.nii.gz", r"^t1 image file is truncated or corrupt"),
    "bad_missing": (_missing, "validate", "flair.nii.gz", r"^flair image file is missing$"),
    "bad_scale": (_scaled, "skullstrip", None, r"^RuntimeError: skull stripping produced an empty brain mask$"),
}


def _config(out: Path, root: Path, subjects: list[str] | None = None, on_error: str = "exclude") -> dict:
    """The fault tests' tiny training: 4 mm scans, no N4, no skull stripping, MNI 2 mm, one fold of 2 epochs."""
    return {"output_dir": str(out),
            "input": {"layout": "folders", "root": str(root), "modalities": MODS, "label": "seg",
                      "subjects": subjects, "on_error": on_error},
            "preprocess": {"mni": {"resolution_mm": 2}, "skullstrip": {"method": "none"}, "n4": {"enabled": False}},
            "split": {"n_folds": 2, "folds_to_train": [0], "test_fraction": 0.2},
            "model": {"base_features": 4, "patch_size": [32, 32, 32], "batch_size": 2},
            "train": {"device": "cpu", "epochs": 2, "iters_per_epoch": 2, "val_patches": 2, "workers": 0,
                      "threads": 1},
            "infer": {"device": "cpu", "tta": False, "overlap": 0.25}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from voxflow.demo.mri import generate_subject

    work = tmp_path_factory.mktemp("exclusion")
    root = work / "data"
    for i, s in enumerate(GOOD):
        generate_subject(s, i, root, work / "truth", modalities=MODS, spacing_scale=4.0)
    for i, (s, (damage, *_)) in enumerate(BROKEN.items()):
        shutil.copytree(root / GOOD[i], root / s)
        damage(root / s)
    (work / "mixed").mkdir(), (work / "clean").mkdir()
    mixed = run_snakemake(work / "mixed", _config(work / "mixed" / "results", root), [])
    clean = run_snakemake(work / "clean", _config(work / "clean" / "results", root, subjects=GOOD), [])
    return dict(work=work, root=root, mixed=mixed, clean=clean,
                out=work / "mixed" / "results", ref=work / "clean" / "results")


@pytest.mark.slow
def test_broken_subjects_are_excluded_and_named(runs):
    res, out, root = runs["mixed"], runs["out"], runs["root"]
    assert res.returncode == 0, fail_msg(res)
    cohort = json.loads((out / "status" / "cohort.json").read_text())
    assert cohort["subjects"] == sorted(GOOD)
    excluded = {e["subject"]: e for e in cohort["excluded"]}
    assert set(excluded) == set(BROKEN), cohort
    for s, (_, step, name, problem) in BROKEN.items():
        e = excluded[s]
        assert e["step"] == step and e["file"] == (str(root / s / name) if name else "-"), e
        assert re.search(problem, e["problem"]) and "\n" not in e["problem"], e
        status = json.loads((out / "status" / "subjects" / f"{s}.json").read_text())
        assert status["status"] == "excluded" and status["store"] is None
        assert not (out / "zarr" / f"{s}.zarr").exists()  # nothing of an excluded subject looks complete
        assert not (out / "predictions" / s).exists()
    split = json.loads((out / "model" / "split.json").read_text())
    assert split["excluded"] == cohort["excluded"]
    assert not {s for f in split["folds"] for s in f["train"] + f["val"]} & set(BROKEN)
    # the run's closing summary: one line per excluded subject with its step and reason
    text = res.stdout + res.stderr
    assert f"voxflow: {len(BROKEN)} of {len(GOOD) + len(BROKEN)} subjects excluded" in text
    for s, e in excluded.items():
        assert f"  {s}  [{e['step']}]  {e['file']}: {e['problem']}" in text
    # the report: its first section lists them
    html = (out / "report" / "report.html").read_text(encoding="utf-8")
    sections = re.findall(r'<section id="([\w-]+)">', html)
    assert sections[0] == "excluded", sections
    first = html.split('<section id="excluded">', 1)[1].split("</section>", 1)[0]
    assert all(s in first for s in BROKEN) and not any(s in first for s in GOOD)
    # the good subjects went all the way: predictions of the test subjects, metrics
    for s in split["test"]:
        assert (out / "predictions" / s / f"{s}_seg.nii.gz").is_file()
    metrics = (out / "evaluation" / "metrics.tsv").read_text()
    assert all(s in metrics for s in split["test"]) and not any(s in metrics for s in BROKEN)
    assert tmp_names_under(out) == []


@pytest.mark.slow
def test_good_subjects_get_what_a_run_without_the_broken_ones_gets(runs):
    from voxflow.core.stores import read_subject_store

    assert runs["mixed"].returncode == 0, fail_msg(runs["mixed"])
    assert runs["clean"].returncode == 0, fail_msg(runs["clean"])
    out, ref = runs["out"], runs["ref"]
    a, b = (json.loads((d / "model" / "split.json").read_text()) for d in (out, ref))
    assert b.pop("excluded") == [] and a.pop("excluded") and a == b  # the same split of the same subjects
    for s in GOOD:
        x, y = read_subject_store(out / "zarr" / f"{s}.zarr"), read_subject_store(ref / "zarr" / f"{s}.zarr")
        for key in ("image", "mask", "label"):
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{s}/{key}")
    wa = torch.load(out / "model" / "fold_0" / "model_final.pt", map_location="cpu", weights_only=True)
    wb = torch.load(ref / "model" / "fold_0" / "model_final.pt", map_location="cpu", weights_only=True)
    sa, sb = wa["model"], wb["model"]  # the state dict (voxflow.nn.checkpoints.save_checkpoint)
    assert sa.keys() == sb.keys() and len(sa) > 4
    for k in sa:
        if torch.is_tensor(sa[k]):
            assert torch.equal(sa[k], sb[k]), k
    for s in a["test"]:
        pa = nib.load(out / "predictions" / s / f"{s}_seg.nii.gz").get_fdata()
        pb = nib.load(ref / "predictions" / s / f"{s}_seg.nii.gz").get_fdata()
        np.testing.assert_array_equal(pa, pb, err_msg=s)


@pytest.mark.slow
def test_on_error_stop_stops_at_the_first_broken_subject(runs, tmp_path):
    out = tmp_path / "results"
    cfg = _config(out, runs["root"], subjects=["s01", "bad_missing"], on_error="stop")
    res = run_snakemake(tmp_path, cfg, [str(out / "status" / "cohort.json")])
    assert res.returncode != 0
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if "voxflow ERROR" in ln]
    flair = runs["root"] / "bad_missing" / "flair.nii.gz"
    assert f"voxflow ERROR [ingest] subject=bad_missing file={flair}: flair image file is missing" in lines, \
        fail_msg(res)
    assert not (out / "status" / "cohort.json").exists() and not (out / "model").exists()
