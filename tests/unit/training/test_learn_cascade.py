"""Coarse-to-fine cascade: the plan's decision, the low-resolution stage's pooled patches, the full-resolution
stage's extra channels in training and the chained inference."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
import zarr

from support.learning import CPU, LABEL_VALUES, SHAPE, plans_for, synthetic_label
from voxflow.planning.cascade import (
    cascade_decision,
    decode_pair,
    downsample_image,
    downsample_label,
    encode_pair,
    upsample_probabilities,
)


def test_cascade_decision_follows_the_patch_coverage():
    d = cascade_decision([160, 192, 160], [64, 64, 64])
    assert d["worth_it"] and d["factor"] == 2 and d["coverage"] == pytest.approx(64**3 / (160 * 192 * 160), abs=1e-4)
    assert "worth it" in d["why"] and "downsampled 2x" in d["why"]
    small = cascade_decision([140, 140, 140], [128, 128, 128])
    assert not small["worth_it"] and "not needed" in small["why"]
    assert cascade_decision([400, 400, 400], [32, 32, 32])["factor"] == 4  # the largest factor, still short


def test_pooling_and_upsampling_keep_the_grid():
    lab = torch.from_numpy(synthetic_label(seed=1)[:24, :32, :28].astype(np.int64))[None, None]
    img = lab.float().repeat(1, 2, 1, 1, 1)
    low_img, low_lab = downsample_image(img, 2), downsample_label(lab, 2)
    assert low_img.shape == (1, 2, 12, 16, 14) and low_lab.shape == (1, 1, 12, 16, 14)
    np.testing.assert_array_equal(low_lab[0, 0].numpy(), lab[0, 0, 1::2, 1::2, 1::2].numpy())
    assert float(low_img.mean()) == pytest.approx(float(img.mean()), rel=1e-6)  # block means keep the mean
    probs = np.stack([1.0 - (low_lab[0, 0].numpy() > 0), (low_lab[0, 0].numpy() > 0)]).astype(np.float32)
    up = upsample_probabilities(probs, (23, 31, 27), 2)  # odd sizes: padded up, then cropped
    assert up.shape == (2, 23, 31, 27)
    np.testing.assert_allclose(up.sum(0), 1.0, atol=1e-5)
    t, p = torch.randint(0, 4, (2, 1, 4, 4, 4)), torch.randint(0, 4, (2, 1, 4, 4, 4))
    back_t, back_p = decode_pair(encode_pair(t, p, 4), 4)
    assert torch.equal(back_t, t) and torch.equal(back_p, p)


def test_plans_of_the_two_stages(base_cfg, stores):
    cfg = copy.deepcopy(base_cfg)
    cfg["model"]["patch_size"] = None  # planned: a small budget makes a patch that covers little of the image
    cfg["train"]["memory_gb_cpu"] = 0.002
    full = plans_for(cfg, stores, cascade_stage="fullres")
    low = plans_for(cfg, stores, cascade_stage="lowres")
    plain = plans_for(cfg, stores)
    assert full["patch_size"] == plain["patch_size"] and full["cascade"]["stage"] == "fullres"
    assert full["cascade"]["prev_channels"] == len(LABEL_VALUES) - 1
    f = low["cascade"]["factor"]
    assert low["cascade"]["stage"] == "lowres" and f >= 2
    assert low["spacing"] == [s * f for s in plain["spacing"]]
    assert full["cascade"]["why"] == low["cascade"]["why"] and "median image" in full["cascade"]["why"]


def _previous(tmp, name, lab_idx):
    arr = zarr.create_array(str(tmp / f"{name}.zarr"), shape=lab_idx.shape, chunks=(16, 16, 16), dtype="uint8")
    arr[:] = lab_idx
    return str(tmp / f"{name}.zarr")


def test_full_resolution_stage_trains_on_and_predicts_with_the_previous_stage(base_cfg, stores, tmp_path):
    from voxflow.inference.predict import class_indices, predict_probabilities
    from voxflow.training.train import train_fold
    from voxflow.inference.model import load_trained

    cfg = copy.deepcopy(base_cfg)
    low_plans = plans_for(cfg, stores, cascade_stage="lowres")
    full_plans = plans_for(cfg, stores, cascade_stage="fullres")
    tcfg = dict(cfg["train"], epochs=1, iters_per_epoch=2)
    low_dir, full_dir = tmp_path / "3d_cascade" / "lowres" / "fold_0", tmp_path / "3d_cascade" / "fold_0"
    train_fold([stores["s0"], stores["s1"]], [stores["s2"]], low_plans, tcfg, low_dir, device=CPU, progress=False)
    net, got = load_trained(low_dir / "model_final.pt", CPU)
    assert got["cascade"]["stage"] == "lowres"
    probs, _ = predict_probabilities(stores["s2"], [str(low_dir / "model_final.pt")], cfg["infer"], CPU)
    assert probs.shape == (4, *SHAPE), "the low-resolution stage predicts on the store's grid"

    with pytest.raises(ValueError, match="give `previous`"):
        train_fold([stores["s0"]], [], full_plans, tcfg, full_dir, device=CPU, progress=False)
    prev = {stores[s]: _previous(tmp_path, s, class_indices(synthetic_label(seed=i), LABEL_VALUES))
            for i, s in enumerate(["s0", "s1", "s2"])}
    train_fold([stores["s0"], stores["s1"]], [stores["s2"]], full_plans, dict(tcfg, epochs=2), full_dir,
               device=CPU, progress=False, previous=prev)
    net, got = load_trained(full_dir / "model_final.pt", CPU)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.in_channels == 2 + 3, "2 modalities + the one-hot low-resolution prediction (3 classes)"
    model = [str(full_dir / "model_final.pt")]
    truth = class_indices(synthetic_label(seed=2), LABEL_VALUES)
    with_truth, _ = predict_probabilities(stores["s2"], model, cfg["infer"], CPU, previous=truth)
    with_none, _ = predict_probabilities(stores["s2"], model, cfg["infer"], CPU, previous=np.zeros_like(truth))
    assert np.abs(with_truth - with_none).max() > 1e-4, "the previous stage's channels must reach the network"
    chained, _ = predict_probabilities(stores["s2"], model, cfg["infer"], CPU)  # the low-resolution folds beside
    assert chained.shape == (4, *SHAPE)
    shutil.rmtree(low_dir)
    with pytest.raises(FileNotFoundError, match="no low-resolution model"):
        predict_probabilities(stores["s2"], model, cfg["infer"], CPU)
