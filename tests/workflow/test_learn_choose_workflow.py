"""One workflow run that trains two configurations and the cascade, chooses the configuration and ensemble on
out-of-fold predictions, predicts with the choice, and predicts again from the model folder alone (the choice
itself, voxflow.inference.choose: tests/unit/inference/test_learn_choose.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr


SUBJECTS = ["s01", "s02", "s03", "s04", "s05"]


@pytest.mark.slow
def test_workflow_trains_two_configurations_chooses_and_predicts(tmp_path):
    """2d, 3d and the cascade on 2 folds; the cascade's full-resolution folds train on out-of-fold low-resolution
    predictions only; the choice is the best of 7 candidates; predict-only follows inference.json."""
    from support.workflow import fail_msg, run_snakemake
    from voxflow.demo.mri import generate_subject
    from voxflow.inference.predict import class_indices

    root = tmp_path / "data"
    for i, s in enumerate(SUBJECTS):
        generate_subject(s, i, root, tmp_path / "truth", modalities=["t1", "flair"], spacing_scale=4.0)
    out = tmp_path / "results"
    cfg = {"output_dir": str(out),
           "input": {"layout": "folders", "root": str(root), "modalities": ["t1", "flair"], "label": "seg"},
           "preprocess": {"mni": {"resolution_mm": 2}, "skullstrip": {"method": "none"}, "n4": {"enabled": False}},
           "split": {"n_folds": 2, "test_fraction": 0.2},
           "model": {"configurations": ["2d", "3d"], "cascade": True, "base_features": 4, "batch_size": 2},
           "train": {"device": "cpu", "epochs": 2, "iters_per_epoch": 2, "val_patches": 2, "workers": 0,
                     "threads": 1, "memory_gb_cpu": 0.05},
           "infer": {"device": "cpu", "tta": False, "overlap": 0.25}}
    res = run_snakemake(tmp_path, cfg, [])
    assert res.returncode == 0, fail_msg(res)
    model = out / "model"
    split = json.loads((model / "split.json").read_text())
    for c in ("2d", "3d", "3d_cascade", "3d_cascade/lowres"):
        plans = json.loads((model / c / "plans.json").read_text())
        assert plans["dim"] == c.split("_")[0]
        for k in (0, 1):
            assert (model / c / f"fold_{k}" / "model_final.pt").is_file()
            with np.load(model / c / f"fold_{k}" / "val_probabilities.npz") as data:
                assert data.files and data[data.files[0]].shape[0] == plans["n_outputs"]
    # no leakage: each full-resolution fold's input for a subject is the low-resolution fold that validated on it
    plans = json.loads((model / "3d_cascade" / "plans.json").read_text())
    assert plans["cascade"]["stage"] == "fullres" and "median image" in plans["cascade"]["why"]
    low_fold = {s: k for k, f in enumerate(split["folds"]) for s in f["val"]}
    for k, f in enumerate(split["folds"]):
        for s in f["train"] + f["val"]:
            prev = np.asarray(zarr.open_array(str(model / "3d_cascade" / f"fold_{k}" / "previous" / f"{s}.zarr"))[:])
            with np.load(model / "3d_cascade" / "lowres" / f"fold_{low_fold[s]}" / "val_predictions.npz") as data:
                np.testing.assert_array_equal(prev, class_indices(data[s], plans["label_values"]))
    inference = json.loads((model / "inference.json").read_text())
    assert inference["n_validation_subjects"] == sum(len(f["val"]) for f in split["folds"]) == 4
    table = {tuple(r["members"]): r["dice"] for r in inference["table"]}
    assert len(table) == 7 and ("2d", "3d", "3d_cascade") in table
    best = max(table.values())
    assert table[tuple(inference["configurations"])] >= best - inference["tolerance"]
    assert inference["models"] == [f"{c}/fold_{k}/model_final.pt" for c in inference["configurations"] for k in (0, 1)]
    assert "enabled" in inference["postprocessing"] and (model / "plans.json").is_file()
    for s in split["test"]:
        assert (out / "predictions" / s / f"{s}_seg.nii.gz").is_file()
    assert "2d fold_0" in (out / "report" / "report.html").read_text()  # each configuration's curves

    # predict-only from the model folder alone: inference.json names the models, relative to it
    again = tmp_path / "again"
    again.mkdir()
    pcfg = {k: v for k, v in cfg.items() if k not in ("split", "model", "train")}
    pcfg.update(output_dir=str(again / "results"), predict={"model_dir": str(model)},
                input=dict(cfg["input"], label=None, subjects=split["test"]))
    res = run_snakemake(again, pcfg, [])
    assert res.returncode == 0, fail_msg(res)
    for s in split["test"]:
        assert (again / "results" / "predictions" / s / f"{s}_seg.nii.gz").is_file()

    # one archive (voxflow export-model) predicts as the folder does; a cascade packs the low-resolution folds
    # it chains (inference.json rewritten to choose the cascade, whatever won here)
    import shutil

    import torch

    from voxflow.inference.predict import predict_probabilities
    from voxflow.model_sharing.archive import export_model, open_model

    chosen = tmp_path / "cascade_model"
    shutil.copytree(model, chosen)
    models = [f"3d_cascade/fold_{k}/model_final.pt" for k in (0, 1)]
    (chosen / "inference.json").write_text(json.dumps(dict(inference, configurations=["3d_cascade"], models=models)))
    manifest = export_model(chosen, tmp_path / "model.zip")
    assert {"3d_cascade/plans.json", "3d_cascade/lowres/plans.json", "3d_cascade/lowres/fold_1/model_final.pt",
            "inference.json", *models} <= set(manifest["files"])
    assert not [n for n in manifest["files"] if n.startswith(("2d/", "3d/"))]
    assert manifest["configurations"] == ["3d_cascade"]
    opened = open_model(tmp_path / "model.zip", work_dir=tmp_path / "unpacked")
    assert opened.model_paths == [str(opened.dir / m) for m in models]
    assert opened.postprocessing == inference["postprocessing"]
    store = str(out / "zarr" / f"{split['test'][0]}.zarr")
    infer_cfg = opened.settings["infer"]
    from_archive, _ = predict_probabilities(store, opened.model_paths, infer_cfg, torch.device("cpu"))
    from_folder, _ = predict_probabilities(store, [str(chosen / m) for m in models], infer_cfg, torch.device("cpu"))
    np.testing.assert_array_equal(from_archive, from_folder)
