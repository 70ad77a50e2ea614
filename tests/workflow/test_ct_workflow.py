"""The CT path through the Snakemake workflow: config/examples/liver_ct.yaml on a generated 3-subject
CT cohort, through the zarr stores; and the DAG of the dataset-level normalization and denoising."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from support.outputs import dice
from support.paths import PROJECT
from support.workflow import fail_msg, run_snakemake

SUBJECTS = ["ct000", "ct001", "ct002"]


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory):
    from voxflow.demo.ct import generate_ct_cohort

    work = tmp_path_factory.mktemp("ct_wf")
    truth = generate_ct_cohort(work / "data", len(SUBJECTS), spacing=(1.25, 1.25, 5.0), fov_mm=(340.0, 300.0, 60.0))
    cfg = yaml.safe_load((PROJECT / "config" / "examples" / "liver_ct.yaml").read_text())
    out = work / "results"
    cfg["output_dir"], cfg["input"]["root"] = str(out), str(work / "data")
    # default input.on_error (exclude): one job per subject runs the chain, writing its QC folder; with
    # ct_dataset normalization the stores come from to_zarr jobs after the cohort rule that learns it
    targets = [str(out / d / f) for s in SUBJECTS for d, f in (("zarr", f"{s}.zarr"), ("qc", s))]
    res = run_snakemake(work, cfg, targets)
    return dict(work=work, out=out, cfg=cfg, res=res, truth={t["truth"]["subject"]: t for t in truth})


@pytest.mark.slow
def test_liver_ct_example_through_the_zarr_stores(ct_run):
    from voxflow.inference.predict import store_geometry, to_native
    from voxflow.preprocess.native import body_mask
    from voxflow.core.stores import read_subject_store

    res, out, cfg = ct_run["res"], ct_run["out"], ct_run["cfg"]
    assert res.returncode == 0, fail_msg(res)
    target = cfg["preprocess"]["native"]["spacing_mm"]
    # dataset statistics from the training subjects only
    split = json.loads((out / "model" / "split.json").read_text())
    train = sorted({s for f in split["folds"] for s in f["train"] + f["val"]})
    learned = json.loads((out / "model" / "normalization.json").read_text())
    assert learned["subjects"] == train and split["test"] and not set(split["test"]) & set(train)
    ct = learned["modalities"]["ct"]
    lo, hi = ct["clip"]
    assert -20 < lo < 50 and 60 < hi < 110, ct  # liver + lesion HU (60 and 20-30 HU with noise)
    assert not (out / "template").exists() and not (out / "preprocess" / SUBJECTS[0] / "mni").exists()
    fg_train = []
    for s in SUBJECTS:
        store = read_subject_store(out / "zarr" / f"{s}.zarr")
        meta, image, label = store["meta"], store["image"][0].astype(np.float32), store["label"]
        assert meta["space"] == "native" and meta["spacing_zyx"] == target[::-1]
        # intensities: the training set's clip and z-score (float16 store)
        native = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "preprocess" / s / "native" / "ct.nii")))
        assert np.allclose(image, (np.clip(native, lo, hi) - ct["mean"]) / ct["std"], atol=5e-3)
        if s in train:
            fg_train.append(image[label > 0])
        # label preserved: class volumes within 3% of the raw label's
        raw_lab_img = sitk.ReadImage(ct_run["truth"][s]["paths"]["seg"])
        raw_lab = sitk.GetArrayFromImage(raw_lab_img)
        for c in (1, 2):
            raw_ml = (raw_lab == c).sum() * np.prod(raw_lab_img.GetSpacing()) / 1000
            assert (label == c).sum() * np.prod(target) / 1000 == pytest.approx(raw_ml, rel=0.03), (s, c)
        # cropped to the body: the store's box is the body's box plus the 10 mm margin
        raw = sitk.DICOMOrient(sitk.ReadImage(ct_run["truth"][s]["paths"]["ct"]), "LPS")
        hu = sitk.GetArrayFromImage(raw)
        body = np.argwhere(body_mask(hu, -500))[:, ::-1]  # (x, y, z) voxels
        sp, org = np.array(raw.GetSpacing()), np.array(raw.GetOrigin())
        lo_mm, hi_mm = org + (body.min(0) - 0.5) * sp, org + (body.max(0) + 0.5) * sp  # outer voxel edges
        s_org, s_sp = np.array(meta["origin_xyz"]), np.array(target)
        s_lo, s_hi = s_org - s_sp / 2, s_org + (np.array(meta["shape_zyx"][::-1]) - 0.5) * s_sp
        raw_lo, raw_hi = org - sp / 2, org + (np.array(raw.GetSize()) - 0.5) * sp
        want_lo, want_hi = np.maximum(lo_mm - 10, raw_lo), np.minimum(hi_mm + 10, raw_hi)  # inside the scan
        for ax in (0, 1):  # in-plane: 10 mm of air kept around the body, the rest (and the table) cropped
            assert abs(s_lo[ax] - want_lo[ax]) <= sp[ax] + 1 and abs(s_hi[ax] - want_hi[ax]) <= sp[ax] + 1, (s, ax)
        table = np.argwhere((hu > -500) & ~body_mask(hu, -500))[:, ::-1]  # the scanner table under the body
        assert len(table) > 100 and (org[1] + table[:, 1].min() * sp[1]) > s_hi[1]
        # the way back: inference's unchanged mapping puts the store's label onto the raw grid
        back = to_native(label, store_geometry(str(out / "zarr" / f"{s}.zarr"))).T
        assert dice(back == 1, raw_lab == 1) > 0.97 and dice(back == 2, raw_lab == 2) > 0.9
        assert (out / "qc" / s / "native.png").stat().st_size > 5000
    fg = np.concatenate(fg_train)
    assert abs(fg.mean()) < 0.1 and 0.85 < fg.std() < 1.1  # z-scored over the training foreground


@pytest.mark.slow
def test_liver_ct_predictions_and_metrics_never_say_mni(ct_run):
    """Native space: past the stores (a short training), the predictions and metric tables name the
    stores' grid "resampled" (the native image cropped and resampled), never "mni"."""
    import copy

    import pandas as pd

    from voxflow.inference.predict import store_geometry

    assert ct_run["res"].returncode == 0, fail_msg(ct_run["res"])
    work, out = ct_run["work"], ct_run["out"]
    cfg = copy.deepcopy(ct_run["cfg"])
    # a tiny network, trained for two steps: the names, not the segmentation, are under test (~2 min on CPU)
    cfg["train"].update(epochs=1, iters_per_epoch=2, val_patches=1)
    cfg["model"].update(base_features=8, batch_size=1, n_stages=3, patch_size=[16, 64, 64])
    cfg["infer"] = {"tta": False, "overlap": 0.0}
    res = run_snakemake(work, cfg, [str(out / "evaluation" / "summary.tsv")])
    assert res.returncode == 0, fail_msg(res)
    test = json.loads((out / "model" / "split.json").read_text())["test"]
    assert test
    for s in test:
        assert (out / "predictions" / s / f"{s}_seg.nii.gz").is_file()
        # the prediction on the store's grid: the store's shape and spacing
        grid = sitk.ReadImage(str(out / "predictions" / s / f"{s}_seg_resampled.nii.gz"))
        meta = store_geometry(str(out / "zarr" / f"{s}.zarr"))
        assert list(grid.GetSize()) == meta["shape_zyx"][::-1]
        assert np.allclose(grid.GetSpacing(), meta["spacing_zyx"][::-1])
    files = [f for d in ("predictions", "evaluation") for f in (out / d).rglob("*") if f.is_file()]
    assert files and [str(f.relative_to(out)) for f in files if "mni" in f.name.lower()] == []
    tables = [f for f in files if f.suffix == ".tsv"]
    assert {f.name for f in tables} >= {"metrics.tsv", "summary.tsv"}
    for f in tables:
        assert set(pd.read_csv(f, sep="\t").space) == {"native", "resampled"}, f


def _dry_run(tmp_path, cfg: dict):
    out = tmp_path / "results"
    cfg = {"output_dir": str(out), **cfg}
    return run_snakemake(tmp_path, cfg, [], "-n", "-p"), out


def test_nyul_dag_learns_from_training_subjects_and_denoises_before_n4(tmp_path):
    # one job per step (input.on_error: stop): the rules' inputs show the order
    cfg = {"input": {"layout": "demo", "modalities": ["t1", "t2"], "on_error": "stop"}, "demo": {"n_subjects": 5},
           "split": {"n_folds": 2, "test_subjects": ["demo003"]},
           "preprocess": {"normalize": {"method": "nyul"}, "denoise": {"enabled": True}}}
    res, out = _dry_run(tmp_path, cfg)
    assert res.returncode == 0, fail_msg(res)
    text = res.stdout + res.stderr
    block = re.search(r"rule normalization_stats:\n\s+input: ([^\n]+)", text)
    assert block, fail_msg(res)
    # the training subjects come from the split at run time (the split of the subjects not excluded, made
    # once every subject's chain reached the space step): the test subject is never among them
    assert block.group(1).split(", ") == [f"{out}/model/split.json"]
    status = re.search(r"rule subject_status:\n\s+input: ([^\n]+)\n\s+output: [^\n]*/demo000.json", text)
    assert status and f"{out}/preprocess/demo000/mni/brain_mask.nii.gz" in status.group(1), fail_msg(res)
    # a store (asked for after the checkpoint, by the training stores and the predictions) waits for the statistics
    store = run_snakemake(tmp_path, {"output_dir": str(out), **cfg}, [f"{out}/zarr/demo000.zarr"], "-n", "-p")
    assert re.search(r"rule to_zarr:\n\s+input: [^\n]*model/normalization.json", store.stdout), fail_msg(store)
    n4_inputs = re.search(r"rule n4:\n\s+input: ([^\n]+)", text).group(1)
    assert "/denoise/t1.nii" in n4_inputs and "/coreg/" not in n4_inputs


def test_ct_config_mistake_stops_the_workflow_before_any_job(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    cfg = {"input": {"layout": "folders", "root": str(tmp_path / "data"), "modalities": ["ct"],
                     "modality_types": {"ct": "ct"}, "label": None}, "preprocess": {"space": "native"}}
    res, _ = _dry_run(tmp_path, cfg)
    assert res.returncode != 0 and "config error at 'preprocess.skullstrip.method'" in res.stdout + res.stderr, \
        fail_msg(res)
