"""Missing or unusable modalities through the workflow (input.missing: synthesize, input.unusable): one run where a
subject with an empty sheet cell, one with an absent file and one with an unusable modality are completed by the
synthesis model and predicted (what parse time, the split and ingest do with them:
tests/unit/inputs/test_missing_modality.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_workflow_completes_and_predicts_subjects_lacking_a_modality(tmp_path):
    """An empty sheet cell, an absent file and an unusable modality: the three subjects are kept, never trained on,
    completed by the synthesis model (their FLAIR channel synthesized, the rest untouched), predicted, evaluated,
    and named in their prediction's JSON and the report."""
    import zarr

    from support.workflow import fail_msg, run_snakemake
    from voxflow.demo.mri import generate_subject

    root = tmp_path / "data"
    subjects = [f"s{i:02d}" for i in range(8)]
    for i, s in enumerate(subjects):
        generate_subject(s, i, root, tmp_path / "truth", modalities=["t1", "flair"], spacing_scale=4.0)
    (root / "s06" / "flair.nii.gz").unlink()  # an absent file
    rows = [["subject", "t1", "flair", "seg"]]
    for s in subjects:
        rows.append([s, f"{s}/t1.nii.gz", "" if s == "s05" else f"{s}/flair.nii.gz", f"{s}/seg.nii.gz"])
    (root / "cohort.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    out = tmp_path / "results"
    cfg = {"output_dir": str(out),
           "input": {"layout": "sheet", "sheet": str(root / "cohort.csv"), "modalities": ["t1", "flair"],
                     "label": "seg", "missing": "synthesize", "unusable": {"s07": ["flair"]}},
           "preprocess": {"mni": {"resolution_mm": 2}, "skullstrip": {"method": "none"}, "n4": {"enabled": False}},
           "split": {"n_folds": 1, "test_fraction": 0.2, "test_subjects": None},
           "model": {"base_features": 4, "batch_size": 2},
           "synthesis": {"iterations": 12, "patch_size": [32, 32, 32], "base_features": 4, "checkpoint_every": 6,
                         "threads": 1},
           "train": {"device": "cpu", "epochs": 2, "iters_per_epoch": 2, "val_patches": 2, "workers": 0,
                     "threads": 1, "memory_gb_cpu": 0.05, "augment": {"synthetic_modality_p": 0.5}},
           "infer": {"device": "cpu", "tta": False, "overlap": 0.25}}
    res = run_snakemake(tmp_path, cfg, [])
    assert res.returncode == 0, fail_msg(res)
    incomplete = {"s05": "no file", "s06": "no file", "s07": "unusable (input.unusable)"}
    split = json.loads((out / "model" / "split.json").read_text())
    trained = {s for f in split["folds"] for s in f["train"] + f["val"]}
    assert not trained & set(incomplete) and set(incomplete) <= set(split["test"])
    assert {e["subject"]: e["missing"]["flair"] for e in split["incomplete"]} == incomplete
    synth = out / "model" / "synthesis"
    assert (synth / "generator.pt").is_file() and (synth / "curve.csv").is_file()
    summary = json.loads((synth / "synthesis.json").read_text())
    assert set(summary["train_subjects"]) | set(summary["val_subjects"]) <= trained
    for s, why in incomplete.items():
        original = zarr.open_group(str(out / "zarr" / f"{s}.zarr"), mode="r")
        completed = zarr.open_group(str(out / "completed" / f"{s}.zarr"), mode="r")
        assert original.attrs["voxflow"]["missing_modalities"] == {"flair": why}
        assert completed.attrs["voxflow"]["synthetic_modalities"]["flair"]["why"] == why
        assert "missing_modalities" not in completed.attrs["voxflow"]
        before, after = original["0"][:].astype(np.float32), completed["0"][:].astype(np.float32)
        brain = original["labels/brain/0"][:] > 0
        assert not before[1][brain].any()  # the stand-in never reaches the store: zeros until completed
        assert np.array_equal(before[0], after[0])  # t1 untouched
        assert after[1][brain].std() > 0 and not after[1][~brain].any()  # flair synthesized inside the brain
        sidecar = json.loads((out / "predictions" / s / f"{s}_seg.json").read_text())
        assert sidecar["synthetic_modalities"]["flair"]["why"] == why
        assert (out / "predictions" / s / f"{s}_seg.nii.gz").is_file()
        assert (out / "qc_synthesis" / f"{s}.png").stat().st_size > 1000
        scores = json.loads((out / "qc" / s / "scores.json").read_text())  # the stand-in is not scored
        assert "flair" not in scores["scores"] and "t1" in scores["scores"] and scores["not_scored"] == ["flair"]
    complete_test = [s for s in split["test"] if s not in incomplete]
    for s in complete_test:
        assert json.loads((out / "predictions" / s / f"{s}_seg.json").read_text())["synthetic_modalities"] == {}
    metrics = (out / "evaluation" / "metrics.tsv").read_text()
    assert all(s in metrics for s in incomplete)  # evaluated against their labels like any test subject
    html = (out / "report" / "report.html").read_text()
    assert "Synthesized modalities" in html and all(s in html for s in incomplete)
    # train.augment.synthetic_modality_p: half the training samples had a modality replaced (seeded draws)
    assert "samples had a modality synthesized" in (out / "logs" / "train" / "fold_0.log").read_text()
