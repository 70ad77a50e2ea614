"""Evaluation in chunks through the DAG (evaluate.subjects_per_job; the chunked metrics themselves:
tests/unit/evaluation/test_evaluate_chunks.py): the DAG gives every predicted subject to exactly one chunk."""

from __future__ import annotations

import re

from support.workflow import fail_msg, preprocessed_placeholders, run_snakemake


def test_dag_gives_each_predicted_subject_to_one_chunk(tmp_path):
    out = tmp_path / "results"
    cfg = {"output_dir": str(out), "input": {"layout": "demo", "modalities": ["t1", "t2"]}, "demo": {"n_subjects": 7},
           "split": {"n_folds": 2, "test_subjects": ["demo001", "demo002", "demo004", "demo005", "demo006"]},
           "evaluate": {"subjects_per_job": 2}}
    subjects = [f"demo{i:03d}" for i in range(7)]
    raw = [out / "demo" / "raw" / s / f"{n}.nii.gz" for s in subjects for n in ("t1", "t2", "seg")]
    raw += [out / "demo" / "truth" / f"{s}_brainmask.nii.gz" for s in subjects]
    # the predicted subjects are known once the cohort is
    preprocessed_placeholders(out, subjects, raw, cfg["split"]["test_subjects"])
    res = run_snakemake(tmp_path, cfg, [], "-n", "--rerun-triggers", "mtime", "--")
    assert res.returncode == 0, fail_msg(res)
    text = res.stdout + res.stderr
    blocks = re.findall(r"rule evaluate:\n\s+input: ([^\n]+)\n\s+output: ([^\n]+)", text)
    assert sorted(o for _, o in blocks) == [f"{out}/evaluation/chunks/{c}.tsv" for c in ("0000", "0001", "0002")]
    scored = [re.findall(r"predictions/(demo\d+)/\1_seg\.nii\.gz", i) for i, _ in blocks]
    assert all(f"status/subjects/{s}.json" in i for (i, _), chunk in zip(blocks, scored) for s in chunk)
    # MNI152 stores (the default preprocess.space): the store-grid predictions are <subject>_seg_mni
    assert all(f"predictions/{s}/{s}_seg_mni.nii.gz" in i for (i, _), chunk in zip(blocks, scored) for s in chunk)
    assert sorted(len(s) for s in scored) == [1, 2, 2]
    assert sorted(s for chunk in scored for s in chunk) == cfg["split"]["test_subjects"]
    agg = re.search(r"rule aggregate:\n\s+input: ([^\n]+)", text).group(1).split(", ")
    assert sorted(agg) == sorted(o for _, o in blocks)
