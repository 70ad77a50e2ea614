"""Tests of the synthetic demo cohort (voxflow.demo.mri): determinism, layout, lesions, head model, bias, realism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from voxflow.demo import mri as demo

MODS = ["t1", "t2", "flair"]


def _load(path):
    img = nib.load(path)
    return img, np.asarray(img.dataobj)


def _hashes(*dirs) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in dirs for p in sorted(Path(d).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = demo.generate_subject("s0", 0, root / "raw", root / "truth", modalities=MODS, spacing_scale=2.0,
                                n_lesions=(2, 3))
    return root, out


def test_files_and_grids(subject):
    root, out = subject
    paths = out["paths"]
    assert sorted(p.name for p in (root / "raw" / "s0").iterdir()) == sorted([f"{m}.nii.gz" for m in MODS]
                                                                               + ["seg.nii.gz"])
    assert sorted(p.name for p in (root / "truth").iterdir()) == ["s0_brainmask.nii.gz", "s0_truth.json"]
    assert not list(root.rglob("*.tmp-*"))  # atomic writes left no temporary file
    ref, _ = _load(paths["t1"])
    for m in MODS:
        img, data = _load(paths[m])
        assert data.dtype == np.int16 and data.min() >= 0 and data.max() == 1000
        np.testing.assert_allclose(img.header.get_zooms(), np.array(demo.SPACING[m]) * 2.0)
        assert np.allclose(img.affine[:3, :3], np.diag(np.array(demo.SPACING[m]) * 2.0))  # RAS, axis-aligned
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    for key in ("seg", "brainmask"):
        img, data = _load(paths[key])
        assert data.dtype == np.uint8
        assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    truth = json.loads(Path(paths["truth"]).read_text())
    assert truth == json.loads(json.dumps(out["truth"]))
    assert all(abs(v) <= 10 for v in truth["rotation_deg"] + truth["translation_mm"])
    assert truth["reference"] == "t1" and 2 <= len(truth["lesions"]) <= 3


def test_lesions(subject):
    _, out = subject
    seg_img, seg = _load(out["paths"]["seg"])
    _, brain = _load(out["paths"]["brainmask"])
    _, t1 = _load(out["paths"]["t1"])
    assert set(np.unique(seg)) == {0, 1, 2, 4}
    assert not (seg > 0)[brain == 0].any()
    normal = (brain > 0) & (seg == 0)
    assert t1[seg == 1].mean() < 0.6 * t1[normal].mean()  # necrotic core is dark on T1
    inv = np.linalg.inv(seg_img.affine)
    lesions = out["truth"]["lesions"]
    for les in lesions:  # the reported native centres fall in the tumour core
        ijk = np.round(inv @ np.r_[les["centre_native_mm"], 1])[:3].astype(int)
        assert seg[tuple(ijk)] in (1, 4)
    centres = np.array([les["centre_mni_mm"] for les in lesions])
    assert min(np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]) > 30


def test_head_around_brain(subject):
    _, out = subject
    img, t1 = _load(out["paths"]["t1"])
    _, brain = _load(out["paths"]["brainmask"])
    brain = brain > 0
    assert 900e3 < brain.sum() * np.prod(img.header.get_zooms()) < 2500e3  # a brain-sized mask, in mm3
    dist = ndi.distance_transform_edt(~brain, sampling=img.header.get_zooms())
    edge = np.ones(t1.shape, bool)
    edge[1:-1, 1:-1, 1:-1] = False
    assert dist[edge].min() > 10  # the whole head is in the field of view
    air = np.median(t1[dist > 22])
    skull = np.median(t1[(dist > 3) & (dist < 6)])
    scalp = np.median(t1[(dist > 9) & (dist < 12)])
    wm = np.percentile(t1[brain], 90)
    assert scalp > 0.5 * wm and scalp > 2 * skull  # bright fat outside a dark skull
    assert skull > 2 * air and air < 0.1 * wm


def test_visible_on_flair_and_enhancing_on_t1c(tmp_path):
    out = demo.generate_subject("s1", 1, tmp_path / "raw", tmp_path / "truth", modalities=["flair", "t1c"],
                                spacing_scale=2.5)
    _, seg = _load(out["paths"]["seg"])
    _, brain = _load(out["paths"]["brainmask"])
    _, flair = _load(out["paths"]["flair"])
    assert nib.load(out["paths"]["seg"]).shape == nib.load(out["paths"]["flair"]).shape
    normal = (brain > 0) & (seg == 0)
    assert flair[seg == 2].mean() > 1.5 * flair[normal].mean()
    assert (seg > 0).sum() > 0 and not (seg > 0)[brain == 0].any()


def test_deterministic(tmp_path):
    kw = dict(modalities=["flair", "t1c"], spacing_scale=3.0, seed=7)
    runs = []
    for run in ("a", "b"):
        demo.generate_subject("s5", 5, tmp_path / run / "raw", tmp_path / run / "truth", **kw)
        runs.append(_hashes(tmp_path / run))
    assert len(runs[0]) == 5 and runs[0] == runs[1]
    demo.generate_subject("s5", 6, tmp_path / "c" / "raw", tmp_path / "c" / "truth", **kw)
    other = _hashes(tmp_path / "c")
    assert all(other[k] != runs[0][k] for k in runs[0])  # another index is another subject


def test_bias_field_varies_wm(tmp_path, monkeypatch):
    field = demo._bias_field(np.random.default_rng(0), (40, 50, 30))
    assert 0.69 < field.min() and field.max() < 1.41 and field.max() / field.min() > 1.8
    kw = dict(modalities=["t1", "t2"], spacing_scale=2.5)
    biased = demo.generate_subject("s2", 2, tmp_path / "a" / "raw", tmp_path / "a" / "truth", **kw)
    monkeypatch.setattr(demo, "_bias_field", lambda rng, shape: np.ones(shape, np.float32))
    flat = demo.generate_subject("s2", 2, tmp_path / "b" / "raw", tmp_path / "b" / "truth", **kw)
    _, seg = _load(flat["paths"]["seg"])
    _, brain = _load(flat["paths"]["brainmask"])
    _, t1_flat = _load(flat["paths"]["t1"])
    _, t1_bias = _load(biased["paths"]["t1"])
    inside = (brain > 0) & (seg == 0)
    wm = inside & (t1_flat > 0.85 * np.percentile(t1_flat[inside], 95))  # same voxels in both runs

    def cv(x):
        return x[wm].std() / x[wm].mean()

    assert wm.sum() > 1000
    assert cv(t1_bias) > 1.5 * cv(t1_flat)


@pytest.mark.parametrize("mods", [["t1"], ["t1", "t1"], ["t1", "pd"], [], ["t1", "t1c", "t2", "flair", "t2"]])
def test_invalid_modalities(tmp_path, mods):
    with pytest.raises(ValueError):
        demo.generate_subject("x", 0, tmp_path / "raw", tmp_path / "truth", modalities=mods, spacing_scale=3.0)
    assert not (tmp_path / "raw").exists()


@pytest.mark.slow
def test_deepbet_finds_the_brain(tmp_path):
    """The point of the head model: a real skull stripper must find the true brain through skull and scalp."""
    torch = pytest.importorskip("torch")
    deepbet = pytest.importorskip("deepbet")
    torch.set_num_threads(1)
    out = demo.generate_subject("s3", 3, tmp_path / "raw", tmp_path / "truth", modalities=["t1", "flair"],
                                spacing_scale=2.0)
    _, mask, _ = deepbet.BrainExtraction(no_gpu=True).run(nib.load(out["paths"]["t1"]))
    pred = np.asarray(mask.dataobj) > 0
    true = np.asarray(nib.load(out["paths"]["brainmask"]).dataobj) > 0
    assert pred.shape == true.shape
    assert 2 * (pred & true).sum() / (pred.sum() + true.sum()) >= 0.95
