"""Missing-modality synthesis (voxflow.synth): networks, training (learning, seeding, resume), inference, metrics.

The stores are synthetic: channel 0 a smooth random field, channel 1 a smooth deterministic function of it, so
a generator can learn to synthesize either from the other."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from voxflow.preprocess.store import write_subject_store
from voxflow.synth import metrics
from voxflow.synth.infer import synthesize
from voxflow.synth.model import (PatchDiscriminator3d, build_generator, discriminator_loss,
                                 generator_adversarial_loss, generator_input, random_availability,
                                 reconstruction_loss)
from voxflow.synth.model import load_generator
from voxflow.synth.train import split_stores, train_synthesis

SHAPE = (32, 32, 32)
MODS = ["t1", "t2"]
TINY = {"patch_size": [32, 32, 32], "base_features": 4, "disc_features": 4, "batch_size": 2, "device": "cpu",
        "val_patches": 1, "log_every": 1}


def _f(x: np.ndarray) -> np.ndarray:
    return 1.5 * np.tanh(x) + 0.5


def _subject(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal(SHAPE), 3.0)
    field = (field - field.mean()) / field.std()
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    mask = (zz**2 / 0.8 + yy**2 / 0.9 + xx**2 / 0.7) < 1.0
    img = np.stack([field, _f(field)]).astype(np.float32) * mask
    return img, mask.astype(np.uint8)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_stores")
    paths = []
    for i in range(3):
        img, mask = _subject(i)
        p = root / f"sub{i}.zarr"
        write_subject_store(p, img, mask, None, MODS, (1.0, 1.0, 1.0), (0, 0, 0), np.eye(3), {}, dtype="float32",
                            chunk=32)
        paths.append(str(p))
    return paths


# --- networks ------------------------------------------------------------------------------------------------------

def test_shapes_of_generator_input_generator_and_discriminator():
    img = torch.randn(2, 3, 32, 32, 32)
    avail = torch.tensor([[True, False, True], [False, True, True]])
    x = generator_input(img, avail)
    assert x.shape == (2, 6, 32, 32, 32)
    assert torch.equal(x[0, 1], torch.zeros(32, 32, 32)) and torch.equal(x[0, 0], img[0, 0])
    assert torch.equal(x[1, 3], torch.zeros(32, 32, 32)) and torch.equal(x[1, 4], torch.ones(32, 32, 32))
    g = build_generator(3, [32, 32, 32], base_features=4)
    y = g(x)
    assert y.shape == (2, 3, 32, 32, 32)
    d = PatchDiscriminator3d(9, base_features=4)
    s = d(torch.cat([x, y], 1))
    assert s.shape == (2, 1, 2, 2, 2)
    with pytest.raises(ValueError):
        generator_input(img, avail[:, :2])
    with pytest.raises(ValueError):
        build_generator(1, [32, 32, 32])


def test_random_availability_drops_some_never_all_and_is_seeded():
    a = random_availability(500, 4, torch.Generator().manual_seed(3))
    dropped = (~a).sum(1)
    assert a.dtype == torch.bool and a.shape == (500, 4)
    assert int(dropped.min()) >= 1 and int(dropped.max()) <= 3
    assert float((dropped == 1).float().mean()) > 0.6  # mostly one missing, as CollaGAN
    assert int(dropped.max()) > 1  # but other patterns too
    assert torch.equal(a, random_availability(500, 4, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, random_availability(500, 4, torch.Generator().manual_seed(4)))
    two = random_availability(50, 2, torch.Generator().manual_seed(0))
    assert torch.equal(two.sum(1), torch.ones(50, dtype=torch.long))


def test_losses():
    s = torch.zeros(1, 1, 2, 2, 2)
    assert float(discriminator_loss("lsgan", s + 1, s)) == 0.0
    assert float(generator_adversarial_loss("lsgan", s + 1)) == 0.0
    assert float(discriminator_loss("hinge", s + 1, s - 1)) == 0.0
    assert float(generator_adversarial_loss("hinge", s + 2)) == -2.0
    with pytest.raises(ValueError):
        generator_adversarial_loss("wgan", s)
    pred, tgt = torch.zeros(1, 2, 4, 4, 4), torch.ones(1, 2, 4, 4, 4)
    tgt[:, 1] = 3.0
    mask = torch.ones(1, 1, 4, 4, 4)
    avail = torch.tensor([[True, False]])
    # channel 0 error 1 (weight 1), channel 1 error 3 (weight 4): (1 + 12) / 5
    assert float(reconstruction_loss(pred, tgt, mask, avail, 4.0)) == pytest.approx(13 / 5)
    mask[..., :2] = 0  # outside the mask nothing counts
    tgt[..., :2] = 100.0
    assert float(reconstruction_loss(pred, tgt, mask, avail, 4.0)) == pytest.approx(13 / 5)


# --- metrics -------------------------------------------------------------------------------------------------------

def test_metrics_identical_and_ordering():
    img, mask = _subject(7)
    real = img[1]
    assert metrics.mae(real, real, mask) == 0.0
    assert metrics.psnr(real, real, mask) == float("inf")
    assert metrics.ssim3d(real, real, mask) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    small = real + 0.05 * rng.standard_normal(real.shape).astype(np.float32)
    large = real + 0.3 * rng.standard_normal(real.shape).astype(np.float32)
    assert metrics.mae(real, small, mask) < metrics.mae(real, large, mask)
    assert metrics.psnr(real, small, mask) > metrics.psnr(real, large, mask) > 0
    assert 1.0 > metrics.ssim3d(real, small, mask) > metrics.ssim3d(real, large, mask)
    # only the mask counts
    outside = real.copy()
    outside[mask == 0] = 50.0
    assert metrics.mae(real, outside, mask) == 0.0
    dr = float(real[mask > 0].max() - real[mask > 0].min())
    mse = float(((real - large)[mask > 0].astype(np.float64) ** 2).mean())
    assert metrics.psnr(real, large, mask) == pytest.approx(10 * np.log10(dr**2 / mse))


def test_synthesis_figure(tmp_path):
    img, mask = _subject(1)
    out = metrics.synthesis_figure({"t1": img[0], "t2": img[1]}, ["t2"], tmp_path / "fig.png", real={"t2": img[1]},
                                   title="sub1", mask=mask)
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        metrics.synthesis_figure({"t1": img[0]}, ["flair"], tmp_path / "bad.png")


# --- training --------------------------------------------------------------------------------------------------------

def test_split_stores():
    assert split_stores(["a"], 0.2, 0) == (["a"], ["a"])
    tr, va = split_stores(["a", "b", "c"], 0.2, 0)
    assert len(va) == 1 and sorted(tr + va) == ["a", "b", "c"]
    tr, va = split_stores(["a", "b"], 0.9, 0)
    assert len(tr) == 1 and len(va) == 1


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_run")
    cfg = {**TINY, "iterations": 80, "lr": 2e-3, "val_every": 40, "checkpoint_every": 40, "log_every": 10}
    info = train_synthesis(stores, cfg, out)
    return out, info


def test_training_learns_the_missing_modality_and_writes_its_files(trained):
    out, info = trained
    assert info["step"] == 80 and not info["stopped"]
    for name in ("generator.pt", "checkpoint.pt", "curve.csv", "synthesis.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "synthesis.json").read_text())
    assert summary["modalities"] == MODS and summary["spacing"] == [1.0, 1.0, 1.0]
    assert len(summary["val_subjects"]) == 1 and len(summary["train_subjects"]) == 2
    assert not set(summary["val_subjects"]) & set(summary["train_subjects"])
    assert summary["config"]["iterations"] == 80 and summary["config"]["l1_weight"] == 100.0
    val = summary["validation"]
    for mod in MODS:
        assert set(val[mod]) >= {"psnr", "ssim", "mae", "mae_zero_filled"}
    # t2 = f(t1): synthesized t2 clearly better than a zero-filled channel
    assert val["t2"]["mae"] < 0.4 * val["t2"]["mae_zero_filled"], val  # measured: 0.17 vs 0.84
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10, 81, 10))
    assert rows[3]["val_mae_t2"] and not rows[0]["val_mae_t2"]
    assert {"loss_g_l1", "loss_g_adv", "loss_d", "val_psnr_t1"} <= set(rows[0])
    assert float(rows[-1]["loss_g_l1"]) < float(rows[0]["loss_g_l1"])
    # the saved generator reproduces the numbers through load_generator + synthesize
    net, meta = load_generator(out / "generator.pt", torch.device("cpu"))
    assert meta["modalities"] == MODS and meta["n_modalities"] == 2 and meta["patch_size"] == [32, 32, 32]
    img, mask = _subject(int(summary["val_subjects"][0].removeprefix("sub")))
    syn = synthesize(img, [True, False], net, meta, mask=mask)
    assert metrics.mae(img[1], syn[1], mask) == pytest.approx(val["t2"]["mae"], rel=1e-4)


def test_synthesize_keeps_available_channels_and_fills_the_missing_one(trained):
    out, _ = trained
    net, meta = load_generator(out / "generator.pt", "cpu")
    img, mask = _subject(5)
    img = img + 0.123  # nonzero outside the mask too
    garbage = img.copy()
    garbage[1] = 1000.0  # the missing channel's content is never read
    syn = synthesize(garbage, [True, False], net, meta, mask=mask)
    assert syn.dtype == np.float32 and syn.shape == img.shape
    assert np.array_equal(syn[0], img[0])  # bit-identical
    assert np.all(syn[1][mask == 0] == 0)
    assert np.abs(syn[1][mask > 0]).max() < 100 and np.abs(syn[1][mask > 0]).mean() > 0.1
    assert np.array_equal(synthesize(img, [True, True], net, meta), img)
    unmasked = synthesize(img, [True, False], net, meta)
    assert np.any(unmasked[1][mask == 0] != 0)
    with pytest.raises(ValueError, match="no modality"):
        synthesize(img, [False, False], net, meta)
    with pytest.raises(ValueError, match="modalities"):
        synthesize(np.concatenate([img, img[:1]]), [True, True, False], net, meta)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_seeded_runs_agree_and_a_killed_run_resumes_to_the_same_generator(stores, tmp_path):
    cfg = {**TINY, "iterations": 4, "checkpoint_every": 2, "val_every": 2}
    train_synthesis(stores, cfg, tmp_path / "a")
    train_synthesis(stores, cfg, tmp_path / "b")
    train_synthesis(stores, {**cfg, "seed": 1}, tmp_path / "c")
    info = train_synthesis(stores, {**cfg, "stop_after": 3}, tmp_path / "d")  # killed after step 3
    assert info["stopped"] and info["step"] == 3
    assert (tmp_path / "d" / "checkpoint.pt").is_file() and not (tmp_path / "d" / "generator.pt").exists()
    assert torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)["step"] == 2  # step 3 lost
    info = train_synthesis(stores, cfg, tmp_path / "d")  # the rerun resumes at step 2
    assert info["step"] == 4 and not info["stopped"]
    a, b, c, d = (_weights(tmp_path / x / "generator.pt") for x in "abcd")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], d[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert (tmp_path / "a" / "curve.csv").read_text() == (tmp_path / "d" / "curve.csv").read_text()
    # a changed setting is another run: not resumed from the finished checkpoint
    info = train_synthesis(stores, {**cfg, "l1_weight": 10.0}, tmp_path / "d")
    assert info["step"] == 4
    assert not all(torch.equal(a[k], v) for k, v in _weights(tmp_path / "d" / "generator.pt").items())


def test_budget_stops_early_and_still_writes_the_model(stores, tmp_path):
    info = train_synthesis(stores, {**TINY, "iterations": 50, "budget_minutes": 1e-6}, tmp_path, progress=True)
    assert info["step"] == 1 and not info["stopped"]
    assert (tmp_path / "generator.pt").is_file()
    assert json.loads((tmp_path / "synthesis.json").read_text())["iterations_done"] == 1
    rows = list(csv.DictReader(open(tmp_path / "curve.csv")))
    assert len(rows) == 1 and rows[0]["val_mae_t1"]
