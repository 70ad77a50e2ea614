"""Dataset-level normalization: Nyul histogram standardization and nnU-Net's CT scheme, learned over the
training subjects by the cohort step (dask) and applied per subject by the to_zarr step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from voxflow.preprocess.normalize import normalize, piecewise_linear

METHODS = {"mr": "nyul", "ct": "ct_dataset"}  # resolved per modality by voxflow.settings
LANDMARKS = [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]
TRAIN, TEST = ["s0", "s1", "s2"], ["s3"]
# Each subject's MR scanner maps the same tissue mixture through a different monotone curve.
CURVES = {"s0": lambda x: 100 * x, "s1": lambda x: 3 * x + 50, "s2": lambda x: 40 * x ** 1.5,
          "s3": lambda x: 500 * np.log1p(x)}
CT_SHIFT = {"s0": 0.0, "s1": 5.0, "s2": -5.0, "s3": 400.0}  # the held-out subject is far off: leakage would show


def _tissue(rng, shape=(24, 24, 24)):
    """Three tissues (1, 2, 3) in blobs plus noise, inside a ball mask; a lesion label in one blob."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    tissue = 1.0 + (field > np.percentile(field, 40)) + (field > np.percentile(field, 80))
    x = tissue + rng.normal(0, 0.15, shape)
    z, y, xx = np.indices(shape)
    mask = (z - 12) ** 2 + (y - 12) ** 2 + (xx - 12) ** 2 < 11 ** 2
    label = (mask & (tissue == 3)).astype(np.uint8)
    return np.clip(x, 0.05, None), mask, label


def _write(arr, path, dtype=np.float32):
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.SetSpacing((2.0, 2.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Space-step outputs (mr, ct, mask, label per subject), split.json, learned JSON and zarr stores."""
    from voxflow.preprocess.native import write_identity_transforms
    from voxflow.pipeline.registry import step_function

    root = tmp_path_factory.mktemp("norm")
    raw = {}
    for i, s in enumerate(TRAIN + TEST):
        x, mask, label = _tissue(np.random.default_rng(i))
        d = root / "preprocess" / s / "native"
        mr = np.where(mask, CURVES[s](x), 0.0)
        ct = np.where(mask, 20 * x + CT_SHIFT[s], -1000.0)  # "HU": lesion tissue ~ 60-70
        _write(mr, d / "mr.nii"), _write(ct, d / "ct.nii")
        _write(mask, d / "mask.nii.gz", np.uint8), _write(label, d / "label.nii.gz", np.uint8)
        write_identity_transforms(d / "xfm", {"space": "native"})
        raw[s] = dict(mr=mr, ct=ct, mask=mask, label=label)
    split = root / "model" / "split.json"
    split.parent.mkdir(parents=True)
    split.write_text(json.dumps({"test": TEST, "folds": [{"fold": 0, "train": TRAIN[:2], "val": TRAIN[2:]}]}))
    paths = {"image": str(root / "preprocess" / "{subject}" / "native" / "{modality}.nii"),
             "mask": str(root / "preprocess" / "{subject}" / "native" / "mask.nii.gz"),
             "label": str(root / "preprocess" / "{subject}" / "native" / "label.nii.gz")}
    norm = {"method": "nyul", "per_modality": {"ct": "ct_dataset"}, "percentiles": [0.5, 99.5], "window": None,
            "samples_per_subject": 100000, "nyul": {"percentiles": LANDMARKS, "scale": [0.0, 1.0]}}
    out_json = root / "model" / "normalization.json"
    # the rule hands every subject name of the cohort; the step keeps split.json's training subjects
    step_function("normalization_stats")("cohort", {"split": str(split)}, {"normalization": str(out_json)},
                                 norm | {"subjects": TRAIN + TEST, "modalities": ["mr", "ct"], "paths": paths,
                                         "methods": METHODS,
                                         "space": "native", "scheduler": "threads"})
    zarr_cfg = {"dtype": "float32", "chunk": 64, "compressor": "lz4", "clevel": 3, "fg_samples": 100}
    for s in TRAIN + TEST:
        d = root / "preprocess" / s / "native"
        inp = {"img_mr": str(d / "mr.nii"), "img_ct": str(d / "ct.nii"), "mask": str(d / "mask.nii.gz"),
               "label": str(d / "label.nii.gz"), "xfm": str(d / "xfm"), "normalization": str(out_json)}
        step_function("to_zarr")(s, inp, {"zarr": str(root / "zarr" / f"{s}.zarr")},
                         norm | zarr_cfg | {"modalities": ["mr", "ct"], "space": "native", "methods": METHODS,
                                            "native_reference": str(d / "ct.nii")})
    return dict(root=root, raw=raw, learned=json.loads(out_json.read_text()))


def _store(cohort, s):
    from voxflow.core.stores import read_subject_store

    return read_subject_store(cohort["root"] / "zarr" / f"{s}.zarr")


def test_statistics_come_from_training_subjects_only(cohort):
    learned = cohort["learned"]
    assert learned["subjects"] == TRAIN
    assert set(learned["modalities"]["mr"]["subject_landmarks"]) == set(TRAIN)
    pooled = np.concatenate([cohort["raw"][s]["ct"][cohort["raw"][s]["label"] > 0] for s in TRAIN])
    ct = learned["modalities"]["ct"]
    assert ct["method"] == "ct_dataset" and ct["region"] == ["label > 0"]
    assert np.allclose(ct["clip"], np.percentile(pooled, [0.5, 99.5]), atol=1e-3)
    assert ct["mean"] == pytest.approx(pooled.mean(), abs=1e-3) and ct["std"] == pytest.approx(pooled.std(), abs=1e-3)


def test_nyul_landmarks_of_all_subjects_agree_within_one_percent(cohort):
    std = cohort["learned"]["modalities"]["mr"]
    assert std["scale"] == [0.0, 1.0] and std["standard"][0] == 0.0 and std["standard"][-1] == 1.0
    assert np.all(np.diff(std["standard"]) > 0)
    after, linear = {}, {}
    for s in TRAIN + TEST:
        st = _store(cohort, s)
        mask = st["mask"] > 0
        after[s] = np.percentile(st["image"][0][mask], LANDMARKS)
        raw = np.percentile(cohort["raw"][s]["mr"][cohort["raw"][s]["mask"]], LANDMARKS)
        linear[s] = (raw - raw[0]) / (raw[-1] - raw[0])  # the same subject, only rescaled linearly
        assert st["meta"]["normalization"] == {"mr": "nyul", "ct": "ct_dataset"}
        assert np.all(st["image"][0][~mask] == 0.0)  # background at the scale's low end
    spread_after = np.ptp(np.array(list(after.values())), axis=0).max()
    spread_linear = np.ptp(np.array(list(linear.values())), axis=0).max()
    assert spread_after <= 0.01, after  # 1% of the standard scale [0, 1], held-out subject s3 included
    assert np.abs(after["s3"] - std["standard"]).max() <= 0.01
    assert spread_linear > 0.05  # the curves differ: a linear rescaling alone leaves them apart


def test_ct_dataset_applies_the_training_clip_and_zscore_to_every_subject(cohort):
    ct = cohort["learned"]["modalities"]["ct"]
    lo, hi = ct["clip"]
    for s in TRAIN + TEST:
        img = _store(cohort, s)["image"][1]
        expected = (np.clip(cohort["raw"][s]["ct"], lo, hi) - ct["mean"]) / ct["std"]
        assert np.allclose(img, expected, atol=1e-4), s
    fg = np.concatenate([_store(cohort, s)["image"][1][cohort["raw"][s]["label"] > 0] for s in TRAIN])
    assert abs(fg.mean()) < 0.05 and 0.9 < fg.std() < 1.05  # z-scored over the training foreground


def test_nyul_needs_learned_statistics_and_extrapolates_linearly():
    img, mask = np.linspace(0, 10, 1000).reshape(10, 10, 10), np.ones((10, 10, 10))
    with pytest.raises(ValueError, match="statistics learned over the training set"):
        normalize(img, mask, "nyul")
    out = piecewise_linear(np.array([-1.0, 0.0, 5.0, 10.0, 12.0]), [0, 10], [0, 1])
    assert np.allclose(out, [-0.1, 0.0, 0.5, 1.0, 1.2])
    assert np.all(np.diff(piecewise_linear(np.linspace(0, 5, 50), [1, 2, 2, 3], [0, 0.4, 0.6, 1])) >= 0)
