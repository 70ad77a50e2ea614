"""The learning pipeline on real (tiny) zarr stores: patch sampler, split, fingerprint and plans,
training (outputs, resume after SIGKILL, seed reproducibility), 2D/2.5D, inference and the
prediction mapped back to the native grid through a real registration's kept transforms."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from voxflow.planning.planner import auto_patch, estimate_memory_gb, make_plans  # noqa: E402
from voxflow.planning.fingerprint import fingerprint  # noqa: E402
from voxflow.core.split import make_split  # noqa: E402
from voxflow.nn.sampler import PatchBatches, Store, make_loader, read_patch  # noqa: E402
from support.learning import (  # noqa: E402
    CPU,
    LABEL_VALUES,
    MODS,
    SHAPE,
    plans_for,
    read_curve,
    synthetic_label,
    write_store,
)
from voxflow.preprocess.store import write_subject_store  # noqa: E402


# --- synthetic stores (support/learning.py; fixtures `base_cfg`, `stores`: tests/unit/training/conftest.py) ---

def padded_crop(arr: np.ndarray, start, size) -> np.ndarray:
    """Reference: the crop of `arr` (last 3 axes) at `start`, zero outside the volume."""
    pad = max(*size, *(abs(s) for s in start)) + max(arr.shape[-3:])
    big = np.pad(arr, [(0, 0)] * (arr.ndim - 3) + [(pad, pad)] * 3)
    sl = tuple(slice(s + pad, s + pad + n) for s, n in zip(start, size))
    return big[(Ellipsis,) + sl]


# --- 1. sampler ---------------------------------------------------------------------------------------------

def test_batches_shapes_dtypes_and_label_mapping(tmp_path):
    label = synthetic_label(seed=1)
    path = write_store(tmp_path / "c.zarr", label, coded=True)
    patch = [32, 16, 16]  # deeper than the volume (24): every patch is zero-padded in z
    ds = PatchBatches([str(path)], patch, batch_size=3, fg_fraction=1 / 3, label_values=LABEL_VALUES, seed=3)
    lut = {0: 0, 1: 1, 2: 2, 4: 3}
    seen = set()
    it = iter(ds)
    for _ in range(10):
        img, lab = next(it)
        assert img.shape == (3, 2, *patch) and img.dtype == torch.float32
        assert lab.shape == (3, 1, *patch) and lab.dtype == torch.int64
        img, lab = img.numpy(), lab.numpy()
        for b in range(3):
            # channel 1 = linear index + 1: recover where the patch was read, compare to the reference crop
            inside = np.argwhere(img[b, 1] > 0)
            first = inside[0]
            z, y, x = np.unravel_index(int(img[b, 1][tuple(first)]) - 1, SHAPE)
            start = [z - first[0], y - first[1], x - first[2]]
            np.testing.assert_array_equal(img[b], padded_crop(np.stack([label.astype(np.float32),
                                                                        np.arange(1, label.size + 1, dtype=np.float32)
                                                                        .reshape(SHAPE)]), start, patch))
            expected = np.vectorize(lut.get)(padded_crop(label, start, patch))
            np.testing.assert_array_equal(lab[b, 0], expected)  # same place as the image, values mapped
            seen |= set(np.unique(lab[b]).tolist())
    assert seen == {0, 1, 2, 3}, "stored value 4 must become class index 3"


def test_every_batch_has_forced_foreground_even_when_rare(tmp_path):
    shape = (64, 64, 64)
    label = np.zeros(shape, np.uint8)
    label[40:42, 10:12, 50:52] = 4  # 8 voxels in 262144
    path = write_store(tmp_path / "rare.zarr", label, coded=True)
    batch, patch = 5, [16, 16, 16]
    n_fg = math.ceil(batch / 3)
    ds = PatchBatches([str(path)], patch, batch_size=batch, fg_fraction=1 / 3, label_values=LABEL_VALUES, seed=0)
    it = iter(ds)
    with_fg = []
    for _ in range(30):
        _, lab = next(it)
        with_fg.append(int((lab.flatten(1) > 0).any(1).sum()))
    assert min(with_fg) >= n_fg, f"foreground samples per batch: {with_fg} (need >= {n_fg})"
    # the rule is what makes it true: random patches alone almost never hit the blob
    assert np.mean(with_fg) < n_fg + 1, with_fg
    ds0 = PatchBatches([str(path)], patch, batch_size=batch, fg_fraction=0.0, label_values=LABEL_VALUES, seed=0)
    it0 = iter(ds0)
    assert sum(int((next(it0)[1] > 0).any()) for _ in range(30)) < 10

    # the same through a DataLoader worker: batches come whole, so the rule holds per batch
    loader = iter(make_loader(PatchBatches([str(path)], patch, batch, 1 / 3, LABEL_VALUES, seed=1), workers=1))
    for _ in range(5):
        img, lab = next(loader)
        assert img.shape == (batch, 2, *patch) and lab.shape == (batch, 1, *patch)
        assert int((lab.flatten(1) > 0).any(1).sum()) >= n_fg


def test_two_point_five_d_forced_foreground_is_on_the_centre_slice(tmp_path):
    """2D/2.5D train on the centre slice of a k-slice patch: a forced sample must have foreground there."""
    shape = (40, 32, 32)
    label = np.zeros(shape, np.uint8)
    label[20, 10:13, 10:13] = 1  # one slice thick
    path = write_store(tmp_path / "thin.zarr", label, coded=True)
    ds = PatchBatches([str(path)], [5, 32, 32], batch_size=2, fg_fraction=0.5, label_values=[0, 1], seed=0,
                      centre_z=True)
    it = iter(ds)
    for _ in range(20):
        _, lab = next(it)
        assert (lab[-1, 0, 2] > 0).any(), "forced sample lacks foreground on its centre slice"


@pytest.mark.parametrize("start,size", [
    ((-5, 20, -3), (16, 16, 16)),     # sticks out low in z and x, high in y
    ((10, -7, 20), (16, 16, 16)),     # high in z and x
    ((-8, -4, -6), (40, 40, 40)),     # patch larger than the volume on every axis
    ((0, 0, 0), (24, 32, 28)),        # exactly the volume
    ((-20, 0, 0), (16, 16, 16)),      # entirely outside (below)
    ((30, 0, 0), (16, 16, 16)),       # entirely outside (above)
])
def test_read_patch_zero_pads_and_reads_only_the_region(tmp_path, start, size):
    label = synthetic_label(seed=2)
    path = write_store(tmp_path / "p.zarr", label, seed=2)
    store = Store(str(path)).open()
    full_img, full_lab = store.image[:].astype(np.float32), store.label[:]
    img, lab = read_patch(store, start, size)
    assert img.shape == (2, *size) and lab.shape == tuple(size) and img.dtype == np.float32
    np.testing.assert_array_equal(img, padded_crop(full_img, start, size))
    np.testing.assert_array_equal(lab, padded_crop(full_lab, start, size))

    # only the overlapping region is requested from zarr
    class Recorder:
        def __init__(self, arr):
            self.arr, self.keys = arr, []

        def __getitem__(self, key):
            self.keys.append(key)
            return self.arr[key]

    store.image, store.label = Recorder(store.image), Recorder(store.label)
    read_patch(store, start, size)
    want = [(max(0, min(d, s)), max(0, min(d, s + n))) for s, n, d in zip(start, size, SHAPE)]
    for rec, spatial in ((store.image, lambda k: k[1:]), (store.label, lambda k: k)):
        assert len(rec.keys) == 1
        got = [sl.indices(d)[:2] for sl, d in zip(spatial(rec.keys[0]), SHAPE)]
        got = [(a, max(a, b)) for a, b in got]
        assert [b - a for a, b in got] == [b - a for a, b in want], (rec.keys, want)
        if all(b > a for a, b in want):
            assert got == want


# --- 2. split and plans -------------------------------------------------------------------------------------

def test_make_split_deterministic_partition_and_overrides():
    subjects = [f"sub{i:02d}" for i in range(17)]
    a = make_split(subjects, 5, 0.2, seed=7)
    assert a == make_split(list(reversed(subjects)), 5, 0.2, seed=7)  # input order does not matter
    assert a == json.loads(json.dumps(a))
    b = make_split(subjects, 5, 0.2, seed=8)
    assert (a["test"], a["folds"]) != (b["test"], b["folds"])
    for sp in (a, b):
        assert len(sp["test"]) == round(17 * 0.2)
        pool = sorted(set(subjects) - set(sp["test"]))
        vals = [s for f in sp["folds"] for s in f["val"]]
        assert sorted(vals) == pool and len(vals) == len(set(vals))  # folds partition the non-test subjects
        for f in sp["folds"]:
            assert sorted(f["train"] + f["val"]) == pool and not set(f["train"]) & set(f["val"])
        sizes = [len(f["val"]) for f in sp["folds"]]
        assert max(sizes) - min(sizes) <= 1, sizes

    c = make_split(subjects, 3, 0.2, seed=7, test_subjects=["sub03", "sub11"])
    assert c["test"] == ["sub03", "sub11"]
    assert sorted(s for f in c["folds"] for s in f["val"]) == sorted(set(subjects) - {"sub03", "sub11"})

    one = make_split(subjects, 1, 0.2, seed=7)  # no cross-validation: 20 % of the 14 training subjects validate
    assert one["test"] == a["test"] and len(one["folds"]) == 1
    train, val = one["folds"][0]["train"], one["folds"][0]["val"]
    assert len(val) == 3 and sorted(train + val) == sorted(set(subjects) - set(one["test"]))
    assert not set(train) & set(val)
    assert make_split(subjects, 1, 0.2, seed=8)["folds"][0]["val"] != val, "the held-out set is drawn with the seed"
    assert make_split(subjects[:2], 1, 0.0, seed=7, holdout_fraction=0.2)["folds"][0]["val"] != [], "at least 1"
    assert make_split(subjects[:1], 1, 0.0, seed=7)["folds"][0] == {"fold": 0, "train": subjects[:1], "val": []}
    assert make_split(subjects, 1, 0.2, seed=7, holdout_fraction=0)["folds"][0]["val"] == []
    with pytest.raises(ValueError):
        make_split(subjects[:4], 5, 0.0, seed=0)


def test_fingerprint_counts_and_shapes(tmp_path):
    shapes = [(24, 32, 28), (20, 32, 28), (24, 30, 26)]
    labels, paths, masks = [], {}, []
    for i, shp in enumerate(shapes):
        lab = synthetic_label(shp, seed=10 + i)
        mask = np.ones(shp, np.uint8)
        mask[: i * 3] = 0
        labels.append(lab), masks.append(mask)
        paths[f"b{i}"] = str(write_store(tmp_path / f"b{i}.zarr", lab, mask=mask, seed=i))
    fp = fingerprint(paths, scheduler="threads")
    assert fp["subjects"] == ["b0", "b1", "b2"]
    assert fp["shapes"] == [list(s) for s in shapes]
    assert fp["spacings"] == [[2.0, 2.0, 2.0]] * 3
    assert fp["median_shape"] == [24, 32, 28]
    vals, counts = np.unique(np.concatenate([lab.ravel() for lab in labels]), return_counts=True)
    assert fp["class_voxels"] == {str(int(v)): int(c) for v, c in zip(vals, counts)}
    assert list(fp["class_voxels"]) == ["0", "1", "2", "4"]
    assert fp["brain_voxels_median"] == int(np.median([m.sum() for m in masks]))
    assert len(fp["intensity"]["mean"]) == 2 and len(fp["intensity"]["percentiles"]["50"]) == 2
    assert fp["intensity"]["percentiles"]["0.5"][0] < fp["intensity"]["percentiles"]["99.5"][0]
    assert fp == json.loads(json.dumps(fp))


def test_make_plans_overrides_and_json_round_trip(base_cfg, stores, tmp_path):
    from voxflow.inference.model import network_from_plans
    from voxflow.core.atomic import write_json_atomic

    p = plans_for(base_cfg, stores, patch_size=[32, 16, 16], batch_size=3)
    assert p["patch_size"] == [32, 16, 16] and p["batch_size"] == 3
    assert p["overridden_by_config"] == {"patch_size": [32, 16, 16], "batch_size": 3}
    assert p["automatic"]["batch_size"] == 2 and p["automatic"]["patch_size"] == [32, 32, 32]
    assert p["n_classes"] == 4 and p["label_values"] == LABEL_VALUES and p["modalities"] == MODS
    assert p["class_voxels"] == {k: v for k, v in fingerprint(stores)["class_voxels"].items()}
    assert len(p["strides"]) == p["n_stages"] == len(p["kernels"])
    auto = plans_for(base_cfg, stores, patch_size=None, batch_size=None)
    assert auto["overridden_by_config"] == {} and auto["patch_size"] == auto["automatic"]["patch_size"]

    write_json_atomic(p, tmp_path / "plans.json")
    back = json.loads((tmp_path / "plans.json").read_text())
    assert back == p
    net = network_from_plans(back)
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 32, 16, 16)).shape == (1, 4, 32, 16, 16)


def _fake_fp(median_shape, spacing=(1.0, 1.0, 1.0)):
    return {"median_shape": list(median_shape), "median_spacing": list(spacing),
            "class_voxels": {"0": 100, "1": 1}, "intensity": {}}


def test_plan_chooses_the_stem_and_records_why(base_cfg):
    """auto: the strided stem for 3D on CPU when the patch leaves 3 stages without the full-resolution one;
    nnU-Net's full-resolution stage on a GPU, for small patches, 2D, or a set n_stages. The recorded strides
    and kernels are the network's, and the network built from the plans matches them."""
    from voxflow.inference.model import network_from_plans

    cfg = copy.deepcopy(base_cfg)
    cfg["model"].update(patch_size=[64, 64, 64], base_features=4)
    fp = _fake_fp([96, 96, 96])
    cpu = make_plans(fp, cfg, MODS, [0, 1], "cpu")
    assert cpu["stem"] == "strided" and "CPU" in cpu["stem_why"]
    assert cpu["n_stages"] == 3 and cpu["strides"] == [[2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert len(cpu["kernels"]) == cpu["n_stages"]
    net = network_from_plans(cpu).eval()
    assert [list(s) for s in net.unet.strides] == cpu["strides"]
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 64, 64, 64)).shape == (1, 2, 64, 64, 64)
    gpu = make_plans(fp, cfg, MODS, [0, 1], "cuda")
    assert gpu["stem"] == "full_resolution" and "GPU" in gpu["stem_why"] and gpu["n_stages"] == 4
    assert gpu["strides"][0] == [1, 1, 1]
    small = copy.deepcopy(cfg)
    small["model"]["patch_size"] = [32, 32, 32]
    p = make_plans(fp, small, MODS, [0, 1], "cpu")
    assert p["stem"] == "full_resolution" and "stages" in p["stem_why"]
    for key, value, why in (("stem", "full_resolution", "configured"), ("n_stages", 3, "n_stages"),
                            ("dim", "2d", "2d")):
        c = copy.deepcopy(cfg)
        c["model"][key] = value
        if key == "dim":
            c["model"]["patch_size"] = [64, 64]
        p = make_plans(fp, c, MODS, [0, 1], "cpu")
        assert p["stem"] == "full_resolution" and why in p["stem_why"], p["stem_why"]
    forced = copy.deepcopy(small)
    forced["model"]["stem"] = "strided"
    with pytest.raises(ValueError, match=r"model\.stem: strided"):
        make_plans(fp, forced, MODS, [0, 1], "cpu")


@pytest.mark.parametrize("dim", ["3d", "2d", "2.5d"])
def test_automatic_patch_shrinks_with_the_memory_budget(base_cfg, dim):
    cfg = copy.deepcopy(base_cfg)
    cfg["model"].update(dim=dim, patch_size=None, batch_size=None, base_features=32, context_slices=3)
    fp = _fake_fp([150, 190, 160])
    patches = []
    budgets = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0) if dim == "3d" else (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    for budget in budgets:
        cfg["train"]["memory_gb_cpu"] = budget
        p = make_plans(fp, cfg, MODS, [0, 1], "cpu")
        full = p["patch_size"] if dim == "3d" else [1] + p["patch_size"]
        assert p["estimated_memory_gb"] <= budget, (budget, p["patch_size"])
        assert p["memory_budget_gb"] == budget and all(s % 16 == 0 for s in p["patch_size"])
        assert len(p["patch_size"]) == (3 if dim == "3d" else 2)
        patches.append(full)
    for small, big in zip(patches, patches[1:]):
        assert all(a <= b for a, b in zip(small, big)), patches  # monotone in every axis
    assert np.prod(patches[0]) < np.prod(patches[-1]), patches
    cfg["train"]["memory_gb_cpu"] = 1000.0
    capped = make_plans(fp, cfg, MODS, [0, 1], "cpu")["patch_size"]
    assert capped == ([128, 128, 128] if dim == "3d" else [192, 160])  # capped by max_patch / the median shape
    # the GPU budget applies on cuda
    cfg["train"].update(memory_gb_cpu=budgets[0], memory_gb_gpu=budgets[-1])
    on_gpu = make_plans(fp, cfg, MODS, [0, 1], "cuda")
    assert on_gpu["memory_budget_gb"] == budgets[-1] and on_gpu["patch_size"] == patches[-1][-len(capped):]


def test_2d_automatic_patch_uses_the_budget_for_one_slice():
    # a whole 112x96 slice, batch 2, fits in 0.1 GB: the 2D patch must not be planned as if 16 slices thick
    assert estimate_memory_gb([1, 112, 96], 2, 32, 2) < 0.1
    assert auto_patch([1, 109, 91], [2.0, 2.0, 2.0], 0.1, 32, 2, max_patch=256) == [1, 112, 96]


def test_plan_step_fingerprints_only_training_subjects(base_cfg, stores, tmp_path):
    from voxflow.planning import steps

    sp_path = tmp_path / "split.json"
    steps.split("cohort", {}, {"split": str(sp_path)},
                {**base_cfg["split"], "n_folds": 2, "subjects": list(stores), "test_subjects": ["s2"]})
    sp = json.loads(sp_path.read_text())
    assert sp["test"] == ["s2"]
    inp = {"split": str(sp_path), **{f"store_{s}": p for s, p in stores.items()}}
    out = {"fingerprint": str(tmp_path / "fp.json"), "plans": str(tmp_path / "plans.json")}
    steps.fingerprint("cohort", inp, {"fingerprint": out["fingerprint"]}, {"scheduler": "threads"})
    cfg = {"model": base_cfg["model"], "train": base_cfg["train"], "modalities": MODS, "label_values": LABEL_VALUES}
    steps.plan("cohort", {"fingerprint": out["fingerprint"]}, {"plans": out["plans"]}, cfg)
    fp = json.loads(Path(out["fingerprint"]).read_text())
    assert fp["subjects"] == ["s0", "s1"]
    assert json.loads(Path(out["plans"]).read_text())["patch_size"] == [32, 16, 16]


# --- 3. training ----------------------------------------------------------------------------------------------

def _train_cfg(base_cfg, **kw) -> dict:
    cfg = copy.deepcopy(base_cfg["train"])
    cfg.update(kw)
    return cfg


def _tmp_names(d: Path) -> list[str]:
    return sorted(p.name for p in Path(d).rglob("*") if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def trained(base_cfg, stores, tmp_path_factory):
    from voxflow.training.train import train_fold

    out = tmp_path_factory.mktemp("fold0")
    plans = plans_for(base_cfg, stores)
    info = train_fold([stores["s0"], stores["s1"]], [stores["s2"]], plans, _train_cfg(base_cfg), out,
                      device=CPU, progress=False)
    return {"out": out, "plans": plans, "info": info}


def test_train_fold_writes_model_checkpoint_and_curve(trained):
    out, info = trained["out"], trained["info"]
    for name in ("model_final.pt", "checkpoint_latest.pt", "curve.csv", "curve.png"):
        assert (out / name).is_file(), name
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_curve(out / "curve.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert float(rows[1]["lr"]) < float(rows[0]["lr"]) < 0.01  # poly schedule
    assert info["final"] == str(out / "model_final.pt") and info["epochs"] == 2
    ckpt = torch.load(out / "checkpoint_latest.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(json.loads(ckpt["curve"])) == 2
    assert _tmp_names(out) == []


def test_load_trained_is_weights_only(trained, tmp_path):
    from voxflow.inference.model import load_trained

    final = trained["out"] / "model_final.pt"
    state = torch.load(final, weights_only=True)  # plain tensors and strings only
    net, plans = load_trained(final, CPU)
    assert plans == trained["plans"] and not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, state["model"][k]), k

    # a checkpoint that would run code on unpickling is refused
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": state["model"], "plans": state["plans"], "x": Payload()}, evil)
    with pytest.raises(Exception, match=r"(?i)weights_only|unpickl"):
        load_trained(evil, CPU)


def test_predict_probabilities_3d(trained, base_cfg, stores):
    from voxflow.inference.predict import labels_from_probabilities, predict_probabilities

    cfg = dict(base_cfg["infer"], tta=True, mirror_axes=[0, 1, 2])
    probs, plans = predict_probabilities(stores["s2"], [str(trained["out"] / "model_final.pt")] * 2, cfg, CPU)
    assert probs.shape == (4, *SHAPE) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    assert probs.min() >= 0 and plans == trained["plans"]
    seg = labels_from_probabilities(probs, plans["label_values"])
    assert seg.shape == SHAPE and set(np.unique(seg)) <= {0, 1, 2, 4}


def test_strided_stem_trains_saves_and_predicts(base_cfg, stores, tmp_path):
    """The strided stem through the whole learning path: plans -> train_fold -> model_final.pt (weights only)
    -> sliding-window prediction with mirroring, on a patch larger than the image (padded)."""
    from voxflow.inference.predict import predict_probabilities
    from voxflow.training.train import train_fold
    from voxflow.inference.model import load_trained

    plans = plans_for(base_cfg, stores, patch_size=[16, 64, 64], stem="strided")
    assert plans["stem"] == "strided" and plans["strides"][0] == [2, 2, 2] and plans["n_stages"] == 3
    info = train_fold([stores["s0"], stores["s1"]], [stores["s2"]], plans, _train_cfg(base_cfg), tmp_path,
                      device=CPU, progress=False)
    net, back = load_trained(Path(info["final"]), CPU)
    assert back == plans and type(net).__name__ == "StridedStemUNet"
    cfg = dict(base_cfg["infer"], tta=True, mirror_axes=[0, 1, 2])
    probs, _ = predict_probabilities(stores["s2"], [info["final"]], cfg, CPU)
    assert probs.shape == (4, *SHAPE) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)


_KILLABLE = """
import json, sys, torch
torch.set_num_threads(1)
from voxflow.training.train import train_fold
a = json.loads(open(sys.argv[1]).read())
train_fold(a["train"], a["val"], a["plans"], a["cfg"], a["out"], device=torch.device("cpu"), progress=False)
"""


def test_resume_after_sigkill(base_cfg, stores, tmp_path, caplog):
    from voxflow.training.train import train_fold

    out = tmp_path / "fold"
    plans = plans_for(base_cfg, stores)
    cfg = _train_cfg(base_cfg, epochs=400, iters_per_epoch=2, checkpoint_every=2, val_patches=2)
    args = {"train": [stores["s0"], stores["s1"]], "val": [stores["s2"]], "plans": plans, "cfg": cfg, "out": str(out)}
    (tmp_path / "args.json").write_text(json.dumps(args))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(tmp_path / "args.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt_path, epoch, deadline = out / "checkpoint_latest.pt", 0, time.time() + 180
    try:
        while proc.poll() is None and time.time() < deadline:
            if ckpt_path.exists():
                epoch = torch.load(ckpt_path, weights_only=True)["epoch"]  # never half-written
                if epoch >= 2:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and epoch < 2:
            proc.kill()
        proc.wait(timeout=30)
    assert epoch >= 2, f"no checkpoint within the time limit; rc={proc.returncode} {proc.stderr.read()[-2000:]!r}"
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model_final.pt").exists()
    ckpt = torch.load(ckpt_path, weights_only=True)
    e = int(ckpt["epoch"])
    assert e >= 2 and e % 2 == 0
    killed_rows = read_curve(out / "curve.csv")
    assert len(killed_rows) >= e

    # what a kill during a write leaves (atomic writes: a temporary name, never a truncated checkpoint)
    (out / f".checkpoint_latest.tmp-{proc.pid}.pt").write_bytes(b"half")
    caplog.set_level(logging.INFO, logger="voxflow.train")
    info = train_fold(args["train"], args["val"], plans, dict(cfg, epochs=e + 2), out, device=CPU, progress=False)
    assert f"resuming from {ckpt_path} at epoch {e}" in caplog.text
    rows = read_curve(out / "curve.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, e + 3))
    assert rows[:e] == killed_rows[:e]  # the history up to the checkpoint is kept, not retrained
    assert info["last"]["epoch"] == e + 2
    assert torch.load(ckpt_path, weights_only=True)["epoch"] == e + 2
    assert (out / "model_final.pt").is_file()
    assert _tmp_names(out) == [], "a half-written file of the killed run was left behind"


def test_same_seed_same_weights(base_cfg, stores, tmp_path):
    from voxflow.training.train import train_fold

    plans = plans_for(base_cfg, stores)
    cfg = _train_cfg(base_cfg, epochs=1, iters_per_epoch=2, workers=0)
    weights = []
    for run in ("a", "b", "c"):
        c = dict(cfg, seed=1) if run == "c" else cfg
        train_fold([stores["s0"], stores["s1"]], [], plans, c, tmp_path / run, device=CPU, progress=False)
        weights.append(torch.load(tmp_path / run / "model_final.pt", weights_only=True)["model"])
    a, b, c = weights
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between two runs with the same seed"
    assert any(not torch.equal(a[k], c[k]) for k in a), "a different seed should give different weights"


# --- 4. 2D and 2.5D -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", ["2d", "2.5d"])
def test_2d_and_2_5d_train_and_predict(base_cfg, stores, tmp_path, dim):
    from voxflow.inference.predict import predict_probabilities
    from voxflow.training.train import _fixed_val_batches, sampler_patch, to_network_input, train_fold

    plans = plans_for(base_cfg, stores, dim=dim, context_slices=3, patch_size=[32, 32], batch_size=2)
    assert plans["dim"] == dim and plans["patch_size"] == [32, 32]
    assert plans["context_slices"] == (3 if dim == "2.5d" else 1)
    cfg = _train_cfg(base_cfg, epochs=1, iters_per_epoch=2)
    train_fold([stores["s0"]], [stores["s1"]], plans, cfg, tmp_path, device=CPU, progress=False)
    assert len(read_curve(tmp_path / "curve.csv")) == 1
    # validation patches (all forced foreground) have it on the slice the 2D network is scored on,
    # also for a lesion one slice thick
    thin = np.zeros(SHAPE, np.uint8)
    thin[12, 10:20, 8:18] = 2
    thin_store = str(write_store(tmp_path / "thin.zarr", thin))
    for img, lab in _fixed_val_batches([thin_store], sampler_patch(plans), plans, dict(cfg, val_patches=16), 0):
        x, y = to_network_input(img, lab, plans)
        assert x.shape == (2, 2 * plans["context_slices"], 32, 32) and y.shape == (2, 1, 32, 32)
        assert bool((y.flatten(1) > 0).any(1).all())
    probs, p = predict_probabilities(stores["s2"], [str(tmp_path / "model_final.pt")],
                                     dict(base_cfg["infer"], tta=True, mirror_axes=[0, 1, 2]), CPU)
    assert p["dim"] == dim
    assert probs.shape == (4, *SHAPE)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    assert probs.min() >= 0


# --- 5. back to native space ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A demo subject registered to MNI (2 mm), its label in a store whose transforms point at the kept files."""
    import ants

    from voxflow.demo.mri import generate_subject
    from voxflow.preprocess.mni import keep_transforms, register_to_template, write_template

    d = tmp_path_factory.mktemp("native")
    generate_subject("demo000", 0, d / "raw", d / "truth", modalities=("t1", "t2"), spacing_scale=3.0)
    raw_t1, raw_seg = d / "raw" / "demo000" / "t1.nii.gz", d / "raw" / "demo000" / "seg.nii.gz"
    write_template(2, str(d / "mni.nii.gz"), str(d / "mni_mask.nii.gz"))
    tpl, tpl_mask = ants.image_read(str(d / "mni.nii.gz")), ants.image_read(str(d / "mni_mask.nii.gz"))
    t1 = ants.image_read(str(raw_t1))
    brain = ants.image_read(str(d / "truth" / "demo000_brainmask.nii.gz"))
    reg = register_to_template(t1 * brain, tpl, "affine")
    spec = keep_transforms(reg, d / "xfm")
    seg_mni = ants.apply_transforms(fixed=tpl, moving=ants.image_read(str(raw_seg)), transformlist=reg["fwdtransforms"],
                                    interpolator="genericLabel")
    label = seg_mni.numpy().T.astype(np.uint8)
    mask = (tpl_mask.numpy().T > 0).astype(np.uint8)
    img = tpl.numpy().T.astype(np.float32)
    img = (img - img[mask > 0].mean()) / img[mask > 0].std()
    transforms = dict(spec, dir=str((d / "xfm").resolve()), native_reference=str(raw_t1.resolve()))
    store = d / "demo000.zarr"
    write_subject_store(store, np.stack([img, img * mask]), mask, label, MODS, tuple(tpl.spacing[::-1]), tpl.origin,
                        tpl.direction, transforms)
    return {"dir": d, "store": store, "raw_t1": raw_t1, "raw_seg": raw_seg, "label_mni": label}


def _assert_same_geometry(out_path: Path, ref_path: Path):
    import nibabel as nib

    out, ref = nib.load(str(out_path)), nib.load(str(ref_path))
    assert out.shape == ref.shape
    assert np.array_equal(out.affine, ref.affine)
    for get in ("get_qform", "get_sform"):
        qa, ca = getattr(out.header, get)(coded=True)
        qb, cb = getattr(ref.header, get)(coded=True)
        assert int(ca) == int(cb) and np.array_equal(qa, qb), get
    assert out.header.get_zooms() == ref.header.get_zooms()
    assert out.header.get_xyzt_units() == ref.header.get_xyzt_units()
    return out


def test_label_to_native_and_back_keeps_geometry_and_lesion(registered, tmp_path):
    import nibabel as nib

    from voxflow.inference.predict import store_geometry, to_native, write_like

    meta = store_geometry(str(registered["store"]))
    assert meta["transforms"]["native_reference"] == str(registered["raw_t1"].resolve())
    native = to_native(registered["label_mni"], meta, is_label=True)
    out = tmp_path / "seg_native.nii.gz"
    write_like(native, meta["transforms"]["native_reference"], out)
    img = _assert_same_geometry(out, registered["raw_t1"])
    assert img.get_data_dtype() == np.uint8
    got = np.asarray(img.dataobj)
    truth = np.asarray(nib.load(str(registered["raw_seg"])).dataobj)
    assert set(np.unique(got)) <= set(np.unique(truth)) == {0, 1, 2, 4}
    a, b = got > 0, truth > 0
    d = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert d >= 0.95, f"whole-lesion Dice native -> MNI -> native: {d:.3f}"
    assert _tmp_names(tmp_path) == []


def test_predict_subject_writes_native_and_store_grid(registered, trained, base_cfg, tmp_path):
    import nibabel as nib

    from voxflow.inference.predict import predict_subject, store_geometry

    cfg = dict(base_cfg["infer"], overlap=0.0)
    # `registered` is an MNI152 store: its grid's prediction is the workflow's <subject>_seg_mni.nii.gz
    out_grid, out_native, out_prob = (tmp_path / n for n in ("seg_mni.nii.gz", "seg.nii.gz", "prob.nii.gz"))
    info = predict_subject(str(registered["store"]), [str(trained["out"] / "model_final.pt")],
                           {"groups": [[1, 2, 4]], "enabled": [True]}, cfg, str(out_grid), str(out_native),
                           str(out_prob), device=CPU)
    seg = _assert_same_geometry(out_native, registered["raw_t1"])
    vals = set(np.unique(np.asarray(seg.dataobj)).tolist())
    assert vals <= {0, 1, 2, 4} and {int(k) for k in info["native_voxels"]} == vals
    prob = _assert_same_geometry(out_prob, registered["raw_t1"])
    p = np.asarray(prob.dataobj)
    assert prob.get_data_dtype() == np.float32 and p.min() >= -1e-5 and p.max() <= 1 + 1e-5
    meta = store_geometry(str(registered["store"]))
    grid = nib.load(str(out_grid))
    assert grid.shape == tuple(meta["shape_zyx"][::-1]) and grid.get_data_dtype() == np.uint8
    np.testing.assert_allclose(grid.header.get_zooms(), meta["spacing_zyx"][::-1])
    assert (np.asarray(grid.dataobj).T[_brain(registered) == 0] == 0).all()  # nothing outside the brain mask
    assert _tmp_names(tmp_path) == []


def _brain(registered) -> np.ndarray:
    import zarr

    return zarr.open_group(str(registered["store"]), mode="r")["labels/brain/0"][:].astype(np.uint8)


# --- 5. training to a time budget --------------------------------------------------------------------------------

def test_epochs_within_budget_fits_the_measured_pace():
    from voxflow.training.train import epochs_within_budget, over_budget

    assert epochs_within_budget(10, 1000, elapsed_s=30.0, done_epochs=1) == 20  # 10 min at 30 s an epoch
    assert epochs_within_budget(10, 12, elapsed_s=30.0, done_epochs=1) == 12  # never more than train.epochs
    assert epochs_within_budget(0.1, 50, elapsed_s=30.0, done_epochs=1) == 1  # never fewer than those done
    assert epochs_within_budget(None, 7, elapsed_s=30.0, done_epochs=1) == 7
    assert over_budget(1, 60.0) and not over_budget(1, 59.0) and not over_budget(None, 1e9)


def test_budget_stops_training_and_a_rerun_keeps_the_fitted_schedule(base_cfg, stores, tmp_path, caplog):
    from voxflow.training.train import train_fold

    plans = plans_for(base_cfg, stores)
    cfg = _train_cfg(base_cfg, epochs=6, iters_per_epoch=2, checkpoint_every=10, budget_minutes=1e-4)
    with caplog.at_level(logging.INFO, logger="voxflow.train"):
        info = train_fold([stores["s0"], stores["s1"]], [stores["s2"]], plans, cfg, tmp_path, device=CPU,
                          progress=False)
    assert info["epochs"] == 1 and len(read_curve(tmp_path / "curve.csv")) == 1, "6 ms fit one epoch, not six"
    assert any("epochs (2 iterations) fit" in r.getMessage() for r in caplog.records)
    state = torch.load(tmp_path / "checkpoint_latest.pt", weights_only=True)
    assert state["budget_epochs"] == 1 and state["epoch"] == 1 and state["elapsed_s"] > 0
    before = (tmp_path / "model_final.pt").stat().st_mtime_ns
    again = train_fold([stores["s0"], stores["s1"]], [stores["s2"]], plans, cfg, tmp_path, device=CPU,
                       progress=False)
    assert again["epochs"] == 1 and again["samples"] == 0, "the rerun trained again instead of keeping the budget"
    assert (tmp_path / "model_final.pt").stat().st_mtime_ns >= before
    roomy = train_fold([stores["s0"], stores["s1"]], [], plans, dict(cfg, epochs=2, budget_minutes=60),
                       tmp_path / "roomy", device=CPU, progress=False)
    assert roomy["epochs"] == 2, "a budget is a limit: train.epochs still caps what fits"
