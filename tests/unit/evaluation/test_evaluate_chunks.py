"""Evaluation in chunks (evaluate.subjects_per_job): a job scores several subjects, the metrics do not
depend on how the subjects are chunked, and a failure names the subject (the DAG that gives every predicted
subject to exactly one chunk: tests/workflow/test_evaluate_chunks_dag.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from support.learning import synthetic_label, write_store
from voxflow.evaluation.evaluate import aggregate, chunk_id, evaluate
from voxflow.inputs.images import InputError

# store_space: the rule passes its STORE_SPACE ("mni", or "resampled" in native space); the store-grid
# prediction is the input <store_space>_<subject> and its rows' space
CFG = {"label_values": [0, 1, 2, 4], "labels": None, "regions": {"whole_tumor": [1, 2, 4]}, "tolerance_mm": 2.0,
       "store_space": "resampled"}


def _nifti(arr: np.ndarray, path) -> str:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Three subjects; subject i's prediction is its label shifted by i voxels (subject 0 perfect)."""
    d = tmp_path_factory.mktemp("chunks")
    inp, labels = {}, {}
    for i in range(3):
        s, ref = f"s{i}", synthetic_label(seed=i)
        pred = np.roll(ref, i, axis=1)
        labels[s] = _nifti(ref, d / f"{s}_label.nii.gz")
        inp[f"native_{s}"] = _nifti(pred, d / f"{s}_seg.nii.gz")
        inp[f"resampled_{s}"] = _nifti(pred, d / f"{s}_seg_resampled.nii.gz")
        inp[f"store_{s}"] = str(write_store(d / f"{s}.zarr", ref, seed=i))
    return d, inp, labels


def _chunk(d, inp, labels, subjects, name, cfg=CFG):
    out = {"metrics": str(d / f"{name}.tsv")}
    info = evaluate(name, {k: v for k, v in inp.items() if k.split("_", 1)[1] in subjects}, out,
                    cfg | {"labels_by_subject": {s: labels[s] for s in subjects}})
    return out["metrics"], info


def test_metrics_do_not_depend_on_the_chunking(cases):
    d, inp, labels = cases
    whole, info = _chunk(d, inp, labels, ["s0", "s1", "s2"], "all")
    assert info["subjects"] == 3
    singles = [_chunk(d, inp, labels, [s], f"one_{s}")[0] for s in ("s0", "s1", "s2")]
    pd.testing.assert_frame_equal(pd.read_csv(whole, sep="\t"),
                                  pd.concat([pd.read_csv(p, sep="\t") for p in singles], ignore_index=True))
    df = pd.read_csv(whole, sep="\t", dtype={"label": str})
    assert set(df.space) == {"native", "resampled"} and df.groupby("subject").size().nunique() == 1
    dice = df[(df.space == "native") & (df.label == "whole_tumor")].set_index("subject")["dice"]
    assert dice["s0"] == pytest.approx(1.0) and dice["s2"] < dice["s1"] < 1.0
    # the cohort tables from one chunk or three are the same
    outs = []
    for name, tables in (("one", [whole]), ("three", singles)):
        # the chunk tables under the rule's names, rebuilt by aggregate from the pattern
        pattern = str(d / f"{name}_{{chunk}}.tsv")
        for i, p in enumerate(tables):
            Path(pattern.format(chunk=chunk_id(i))).write_bytes(Path(p).read_bytes())
        out = {"metrics": str(d / f"agg_{name}.tsv"), "summary": str(d / f"sum_{name}.tsv")}
        aggregate("cohort", {}, out, {"scheduler": "threads", "table_pattern": pattern, "n_chunks": len(tables)})
        outs.append((pd.read_csv(out["metrics"], sep="\t"), pd.read_csv(out["summary"], sep="\t")))
    pd.testing.assert_frame_equal(outs[0][0], outs[1][0])
    pd.testing.assert_frame_equal(outs[0][1], outs[1][1])


def test_a_broken_prediction_names_its_subject(cases, tmp_path):
    _d, inp, labels = cases
    broken = dict(inp, native_s1=str(tmp_path / "s1_seg.nii.gz"))
    (tmp_path / "s1_seg.nii.gz").write_bytes(b"not an image")
    with pytest.raises(InputError) as err:
        _chunk(tmp_path, broken, labels, ["s0", "s1", "s2"], "broken")
    assert err.value.subject == "s1" and err.value.file == str(tmp_path / "s1_seg.nii.gz")
    assert "cannot read the native-space prediction" in str(err.value)
    assert not (tmp_path / "broken.tsv").exists()
    # the store-grid prediction is named by its space: "mni" only where the stores are MNI152
    for space in ("resampled", "mni"):
        broken = {k.replace("resampled_", f"{space}_"): v for k, v in inp.items()}
        broken[f"{space}_s1"] = str(tmp_path / "s1_seg_grid.nii.gz")
        (tmp_path / "s1_seg_grid.nii.gz").write_bytes(b"not an image")
        with pytest.raises(InputError) as err:
            _chunk(tmp_path, broken, labels, ["s0", "s1"], "broken", CFG | {"store_space": space})
        assert err.value.subject == "s1" and err.value.problem.startswith(f"cannot read the {space}-space prediction")
        assert ("mni" in err.value.problem.split(":")[0].lower()) == (space == "mni")
