"""The Snakemake workflow, run as a user runs it: a tiny demo cohort end to end (through the zarr stores),
and a folders-layout cohort with broken subjects under --keep-going."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from support.outputs import dice, tmp_names_under
from support.workflow import fail_msg, run_snakemake, small_training_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RULES = ["ingest", "coreg", "n4", "skullstrip", "mni", "to_zarr"]


# --- end to end on the demo cohort ---------------------------------------------------------------------------

DEMO = ["demo000", "demo001", "demo002"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    out = work / "results"
    cfg = small_training_split({
        "output_dir": str(out),
        # per-step jobs (input.on_error: stop): their stores, QC figures, logs and benchmarks are the targets
        "input": {"layout": "demo", "modalities": ["t1", "t2", "flair"], "on_error": "stop"},
        "demo": {"n_subjects": 3, "spacing_scale": 3.0},  # 3-4.5 mm (flair 9 mm through-plane)
        "preprocess": {"mni": {"resolution_mm": 2}},
    }, 3)
    targets = [str(out / "zarr" / f"{s}.zarr") for s in DEMO]
    targets += [str(out / "qc" / s / f"{q}.png") for s in DEMO for q in ("n4", "skullstrip", "mni")]
    first = run_snakemake(work, cfg, targets)
    return dict(work=work, out=out, cfg=cfg, targets=targets, first=first)


@pytest.mark.slow
def test_demo_end_to_end(demo_run):
    from voxflow.core.stores import read_subject_store

    res, out = demo_run["first"], demo_run["out"]
    assert res.returncode == 0, fail_msg(res)
    import ants

    template_mask = ants.image_read(str(out / "template" / "mni152_2mm_mask.nii.gz")).numpy().T > 0
    for s in DEMO:
        store = read_subject_store(out / "zarr" / f"{s}.zarr")
        meta, image, label, mask = store["meta"], store["image"], store["label"], store["mask"] > 0
        assert meta["modalities"] == ["t1", "t2", "flair"] and image.shape[0] == 3
        assert image.shape[1:] == template_mask.shape == label.shape == mask.shape  # MNI 2 mm grid
        assert meta["spacing_zyx"] == [2.0, 2.0, 2.0]
        assert np.isfinite(image.astype(np.float32)).all()
        for c in range(3):  # z-scored inside the brain
            vals = image[c][mask].astype(np.float32)
            assert abs(vals.mean()) < 0.05 and abs(vals.std() - 1) < 0.05
        # the brain lands on the template's brain
        assert dice(mask, template_mask) > 0.9, s
        # labels present, with BraTS values, inside the brain, and each lesion where the generator put it
        assert meta["has_label"] and set(np.unique(label)) <= {0, 1, 2, 4} and (label > 0).sum() > 100
        assert ((label > 0) & mask).sum() >= 0.95 * (label > 0).sum()
        truth = json.loads((out / "demo" / "truth" / f"{s}_truth.json").read_text())
        direction = np.array(meta["direction"]).reshape(3, 3)
        idx = np.argwhere(label == 1)[:, ::-1] * np.array(meta["spacing_zyx"][::-1])  # necrosis, (x,y,z) mm
        necrosis_ras = (np.array(meta["origin_xyz"]) + idx @ direction.T) * [-1, -1, 1]  # LPS -> RAS (MNI)
        for lesion in truth["lesions"]:
            dist = np.linalg.norm(necrosis_ras - lesion["centre_mni_mm"], axis=1).min()
            assert dist < 4.0, f"{s}: lesion centre {lesion['centre_mni_mm']} is {dist:.1f} mm from its necrosis"
        # transforms kept for the way back
        xfm = Path(meta["transforms"]["dir"])
        assert all((xfm / n).is_file() for n in meta["transforms"]["mni_to_native"])
        # QC, logs and benchmarks
        for q in ("n4", "skullstrip", "mni"):
            png = out / "qc" / s / f"{q}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000, png
        for rule in ["demo_subject"] + RULES:
            bench = (out / "benchmarks" / rule / f"{s}.tsv").read_text().splitlines()
            assert bench[0].split("\t")[0] == "s" and float(bench[1].split("\t")[0]) > 0, (rule, s)
            assert (out / "logs" / rule / f"{s}.log").is_file()
    assert tmp_names_under(out) == []


@pytest.mark.slow
def test_demo_second_run_is_a_no_op(demo_run):
    assert demo_run["first"].returncode == 0, fail_msg(demo_run["first"])
    stores = [demo_run["out"] / "zarr" / f"{s}.zarr" for s in DEMO]
    before = {p: p.stat().st_mtime_ns for p in stores}
    again = run_snakemake(demo_run["work"], demo_run["cfg"], demo_run["targets"])
    assert again.returncode == 0, fail_msg(again)
    assert "Nothing to be done" in again.stdout + again.stderr, fail_msg(again)
    assert {p: p.stat().st_mtime_ns for p in stores} == before


@pytest.mark.slow
def test_one_job_per_subject_writes_what_the_per_step_rules_write(demo_run, tmp_path):
    """preprocess.granularity: subject runs the chain in one job (7x fewer jobs for big cohorts);
    registrations are seeded, so its store equals the per-step rules' store exactly."""
    from voxflow.core.stores import read_subject_store

    assert demo_run["first"].returncode == 0, fail_msg(demo_run["first"])
    s, out = DEMO[0], tmp_path / "results"
    cfg = json.loads(json.dumps(demo_run["cfg"]))
    cfg["output_dir"] = str(out)
    cfg["preprocess"]["granularity"] = "subject"
    targets = [str(out / "zarr" / f"{s}.zarr"), str(out / "qc" / s)]  # one job's QC figures: one folder
    dry = run_snakemake(tmp_path, cfg, targets, "--quiet", "rules", "--dry-run")
    assert dry.returncode == 0, fail_msg(dry)
    assert re.search(r"preprocess_subject\s+1\b", dry.stdout) and not re.search(r"^(ingest|n4|mni)\s", dry.stdout, re.M)
    res = run_snakemake(tmp_path, cfg, targets)
    assert res.returncode == 0, fail_msg(res)
    fused = read_subject_store(out / "zarr" / f"{s}.zarr")
    per_step = read_subject_store(demo_run["out"] / "zarr" / f"{s}.zarr")
    for key in ("image", "mask", "label"):
        np.testing.assert_array_equal(fused[key], per_step[key], err_msg=key)
    for k in ("spacing_zyx", "origin_xyz", "direction", "label_classes", "brain_voxels"):
        assert fused["meta"][k] == per_step["meta"][k], k
    for q in ("n4", "skullstrip", "mni"):
        assert (out / "qc" / s / f"{q}.png").read_bytes()[:8] == PNG_MAGIC
    log = (out / "logs" / "preprocess_subject" / f"{s}.log").read_text()
    for step in ["validate", "ingest"] + RULES[1:]:
        assert f"chain {step} subject={s}" in log, step
    assert tmp_names_under(out) == []
    # a changed preprocessing setting reruns the subject's job (its `settings` param); the dask scheduler does not
    cfg["dask"] = {"scheduler": "processes"}
    assert "Nothing to be done" in run_snakemake(tmp_path, cfg, targets, "-n").stdout
    cfg["preprocess"]["zarr"] = {"clevel": 5}
    dry = run_snakemake(tmp_path, cfg, targets, "--quiet", "rules", "-n")
    assert re.search(r"^preprocess_subject\s+1\b", dry.stdout, re.M), fail_msg(dry)


# --- folders layout with broken subjects ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("granularity", ["step", "subject"])
def test_folders_keep_going_reports_broken_subjects(tmp_path, granularity):
    """Both granularities: the broken subjects fail with one line each, the others finish, and the cohort
    table lists every problem (one job per subject: merged when the run ends, from tables that a failed
    job leaves in place)."""
    from voxflow.demo.mri import generate_subject
    from voxflow.inputs.validate import COLUMNS

    root = tmp_path / "data"
    for i, s in enumerate(["good1", "good2"]):
        generate_subject(s, i, root, tmp_path / "truth", modalities=("t1", "t2"), spacing_scale=3.0)
    shutil.copytree(root / "good1", root / "bad_missing")
    (root / "bad_missing" / "t2.nii.gz").unlink()
    shutil.copytree(root / "good2", root / "bad_truncated")
    t1 = root / "bad_truncated" / "t1.nii.gz"
    t1.write_bytes(t1.read_bytes()[: t1.stat().st_size * 2 // 3])

    out = tmp_path / "results"
    cfg = small_training_split({
        "output_dir": str(out),
        "input": {"layout": "folders", "root": str(root), "modalities": ["t1", "t2"], "label": "seg",
                  "on_error": "stop"},  # input.on_error: exclude is test_cohort_exclusion.py's
        "preprocess": {"n4": {"enabled": False}, "skullstrip": {"method": "none"},
                       "mni": {"resolution_mm": 2, "transform": "rigid"}, "granularity": granularity},
    }, 4)
    subjects = ["bad_missing", "bad_truncated", "good1", "good2"]
    problems = out / "validation" / "problems.tsv"
    targets = [str(out / "zarr" / f"{s}.zarr") for s in subjects] + ([str(problems)] if granularity == "step" else [])
    res = run_snakemake(tmp_path, cfg, targets, "--keep-going")
    assert res.returncode != 0, fail_msg(res)
    for s in ("good1", "good2"):
        assert (out / "zarr" / f"{s}.zarr" / ".zattrs").is_file(), fail_msg(res)
    for s in ("bad_missing", "bad_truncated"):
        assert not (out / "zarr" / f"{s}.zarr").exists()
        ingest = out / "preprocess" / s / "ingest"
        assert not ingest.exists() or not any(ingest.iterdir())

    # from "voxflow ERROR" on: Snakemake's "=====" separator of a concurrent job can end up on the same line
    lines = [ln[ln.index("voxflow ERROR"):] for ln in (res.stdout + res.stderr).splitlines() if "voxflow ERROR" in ln]
    expected = {"bad_missing": (str(root / "bad_missing" / "t2.nii.gz"), "missing"),
                "bad_truncated": (str(t1), "truncated")}
    for s, (file, problem) in expected.items():
        mine = [ln for ln in lines if f"subject={s} " in ln]
        assert mine, f"no error line for {s}:\n{fail_msg(res)}"
        assert all(f"file={file}" in ln and problem in ln and "[ingest]" in ln for ln in mine), mine
        # the same line closes the job's log
        rule = "ingest" if granularity == "step" else "preprocess_subject"
        log = (out / "logs" / rule / f"{s}.log").read_text().strip().splitlines()
        assert log[-1] == mine[0].strip()
    assert not [ln for ln in lines if "subject=good" in ln]
    rows = [ln.split("\t") for ln in problems.read_text().splitlines()]
    assert tuple(rows[0]) == COLUMNS and sorted(r[0] for r in rows[1:]) == ["bad_missing", "bad_truncated"]
    assert {r[0]: r[1] for r in rows[1:]} == {s: f for s, (f, _) in expected.items()}
    summary = (out / "validation" / "problems.txt").read_text().strip().splitlines()[-1]
    assert summary.startswith("voxflow validate: 2 of 4 subjects have problems") and summary in res.stderr
    assert tmp_names_under(out) == [] and tmp_names_under(root) == []


def test_listed_demo_subject_keeps_its_identity(tmp_path):
    """input.subjects listing demo007 generates subject 7 of the cohort (same files as in the full cohort)."""
    out = tmp_path / "results"
    cfg = small_training_split({"output_dir": str(out),
                                "input": {"layout": "demo", "subjects": ["demo004", "demo007", "demo002"]}}, 3)
    res = run_snakemake(tmp_path, cfg, [str(out / "demo" / "raw" / "demo007" / "t1.nii.gz")], "-n", "-p")
    assert res.returncode == 0, fail_msg(res)
    text = res.stdout + res.stderr
    assert '"index": 7' in text and '"index": 1' not in text, fail_msg(res)  # not its position in the list
