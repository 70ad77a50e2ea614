"""The model folder's names (voxflow.core.layout) and the one reader of a subject's store (voxflow.core.stores):
their values are the paths the workflow has always used, and the readers return what the writer
(voxflow.preprocess.store) put in."""

from __future__ import annotations

import os

import numpy as np
import pytest

from voxflow.core import layout, stores

SHAPE = (6, 7, 5)
SPACING = (2.0, 1.5, 1.0)


def test_model_folder_names_are_the_workflows():
    assert (layout.MODEL_FILE, layout.CHECKPOINT_FILE) == ("model_final.pt", "checkpoint_latest.pt")
    assert (layout.PLANS_FILE, layout.SETTINGS_FILE, layout.POSTPROCESSING_FILE, layout.INFERENCE_FILE,
            layout.FINGERPRINT_FILE, layout.NORMALIZATION_FILE, layout.SPLIT_FILE, layout.STORES_FILE) == (
        "plans.json", "settings.json", "postprocessing.json", "inference.json", "fingerprint.json",
        "normalization.json", "split.json", "stores.json")
    assert layout.fold_model("m", 2) == os.path.join("m", "fold_2", "model_final.pt")
    assert layout.fold_model("m", 0, "3d") == os.path.join("m", "3d", "fold_0", "model_final.pt")
    assert layout.fold_dir("m", 1, "3d_cascade/lowres") == os.path.join("m", "3d_cascade/lowres", "fold_1")
    assert layout.fold_model_name(3, "2d") == "2d/fold_3/model_final.pt" and layout.fold_model_name(0) == \
        "fold_0/model_final.pt"
    assert [layout.fold_index(n) for n in ("fold_0", "fold_12", "fold_x", "fold_", "xfold_1")] == \
        [0, 12, None, None, None]


def test_fold_models_by_fold_number(tmp_path):
    for k in (10, 2, 0):
        (tmp_path / f"fold_{k}").mkdir()
        (tmp_path / f"fold_{k}" / "model_final.pt").write_bytes(b"")
    (tmp_path / "fold_3").mkdir()  # no model (still training)
    (tmp_path / "fold_x").mkdir()
    (tmp_path / "fold_x" / "model_final.pt").write_bytes(b"")
    assert [p.parent.name for p in layout.fold_models(tmp_path)] == ["fold_0", "fold_2", "fold_10"]
    assert layout.fold_models(tmp_path / "missing") == []


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from voxflow.preprocess.store import write_subject_store

    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *SHAPE)).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:5, 1:6, 1:4] = 1
    label = np.zeros(SHAPE, np.uint8)
    label[2:4, 2:4, 2:3] = 2
    path = tmp_path_factory.mktemp("store") / "s1.zarr"
    write_subject_store(path, image, mask, label, ["t1", "flair"], SPACING, (0.0, 0.0, 0.0), np.eye(3).ravel(),
                        {}, fg_samples=10, extra_attrs={"subject": "s1"})
    return path, image, mask, label


def test_the_readers_return_what_the_writer_wrote(store):
    path, image, mask, label = store
    meta = stores.store_meta(path)
    assert meta["modalities"] == ["t1", "flair"] and meta["spacing_zyx"] == list(SPACING) and meta["has_label"]
    assert meta["subject"] == "s1"
    np.testing.assert_array_equal(stores.read_store_label(path), label)
    np.testing.assert_array_equal(stores.read_store_mask(path), mask)
    np.testing.assert_allclose(stores.read_store_image(path), image, rtol=2.0**-10, atol=1e-6)  # float16
    ref, spacing = stores.read_store_reference(path)
    np.testing.assert_array_equal(ref, label)
    assert spacing == list(SPACING)
    root = stores.open_store(path)  # one opening for several reads: the same answers
    assert stores.store_meta(root) == meta and stores.image_array(root).shape == (2, *SHAPE)
    np.testing.assert_array_equal(stores.label_array(root)[2:4, 2:4, 2], label[2:4, 2:4, 2])
    fg = stores.foreground_samples(root)
    assert set(fg) == {"2", "any"} and all(label[tuple(c)] == 2 for k in fg for c in fg[k])  # one class
    whole = stores.read_subject_store(path)
    assert whole["meta"] == meta and np.array_equal(whole["label"], label) and np.array_equal(whole["mask"], mask)


def test_a_store_without_label_or_attrs(store, tmp_path):
    import zarr

    from voxflow.preprocess.store import write_subject_store

    _, image, mask, _ = store
    path = tmp_path / "s2.zarr"
    write_subject_store(path, image, mask, None, ["t1", "flair"], SPACING, (0.0, 0.0, 0.0), np.eye(3).ravel(), {})
    assert not stores.store_meta(path)["has_label"] and stores.foreground_samples(path) == {}
    with pytest.raises(KeyError):
        stores.read_store_label(path)
    assert stores.read_subject_store(path)["label"] is None
    bare = tmp_path / "bare.zarr"
    zarr.open_group(str(bare), mode="w")
    assert stores.store_meta(bare, default={}) == {}
    with pytest.raises(KeyError):
        stores.store_meta(bare)
