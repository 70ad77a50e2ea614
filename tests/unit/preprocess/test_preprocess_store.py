"""Per-subject zarr store (voxflow.preprocess.store): round trip, layout, OME-Zarr, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from support.outputs import tmp_names_under

SHAPE = (71, 80, 67)  # (z, y, x): larger than one 64-voxel chunk on every axis, two odd sizes
SPACING = (2.0, 2.5, 1.5)
ORIGIN = (90.0, 126.0, -72.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
TRANSFORMS = {"native_to_mni": ["native_to_mni_0.mat"], "mni_to_native": ["mni_to_native_0.mat"],
              "mni_to_native_invert": [True], "dir": "/somewhere/xfm", "native_reference": "/raw/t1.nii.gz"}
MODS = ["t1", "t2", "flair"]
FG_SAMPLES = 500


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(7)
    image = np.stack([ndi.gaussian_filter(rng.normal(size=SHAPE), 2) * 10 + c for c in (-1.5, 0.0, 2.0)])
    image = image.astype(np.float32)
    zz, yy, xx = np.indices(SHAPE)
    mask = (((zz - 35) / 30) ** 2 + ((yy - 40) / 35) ** 2 + ((xx - 33) / 28) ** 2 < 1).astype(np.uint8)
    label = np.zeros(SHAPE, np.uint8)
    label[((zz - 30) ** 2 + (yy - 45) ** 2 + (xx - 30) ** 2) < 12**2] = 2  # edema: > FG_SAMPLES voxels
    label[((zz - 30) ** 2 + (yy - 45) ** 2 + (xx - 30) ** 2) < 6**2] = 4  # enhancing: > FG_SAMPLES
    label[28:31, 44:47, 29:32] = 1  # necrosis: 27 voxels, fewer than FG_SAMPLES
    return image, mask, label


def _write(path, arrays, **kw):
    from voxflow.preprocess.store import write_subject_store

    image, mask, label = arrays
    write_subject_store(path, image, mask, label, MODS, SPACING, ORIGIN, DIRECTION, TRANSFORMS,
                        fg_samples=FG_SAMPLES, extra_attrs={"subject": "sub-01"}, **kw)


@pytest.fixture(scope="module")
def store(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "sub-01.zarr"
    _write(path, arrays)
    return path


def test_round_trip(store, arrays):
    from voxflow.core.stores import read_subject_store

    image, mask, label = arrays
    got = read_subject_store(store)
    assert got["image"].dtype == np.float16 and got["image"].shape == image.shape
    # float16: 11 significant bits -> relative error <= 2**-11 (plus subnormals near 0)
    err = np.abs(got["image"].astype(np.float32) - image)
    assert np.all(err <= np.abs(image) * 2.0**-11 + 1e-6), f"max error {err.max()}"
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_array_equal(got["mask"], mask)
    meta = got["meta"]
    assert meta["modalities"] == MODS
    assert meta["shape_zyx"] == list(SHAPE)
    assert meta["spacing_zyx"] == list(SPACING)
    assert meta["origin_xyz"] == list(ORIGIN)
    assert meta["direction"] == list(DIRECTION)
    assert meta["transforms"] == TRANSFORMS
    assert meta["subject"] == "sub-01"
    assert meta["has_label"] is True and meta["label_classes"] == [0, 1, 2, 4]
    assert meta["brain_voxels"] == int(mask.sum())


def test_foreground_index(store, arrays):
    import zarr

    _, _, label = arrays
    meta = zarr.open_group(str(store), mode="r")["voxflow"]
    assert sorted(meta.array_keys()) == ["fg_1", "fg_2", "fg_4", "fg_any"]
    for name in ("1", "2", "4", "any"):
        coords = meta[f"fg_{name}"][:]
        assert coords.ndim == 2 and coords.shape[1] == 3 and coords.dtype == np.int32
        values = label[tuple(coords.T)]
        if name == "any":
            assert np.all(values > 0)
            n_true = int((label > 0).sum())
        else:
            assert np.all(values == int(name)), f"fg_{name} points at classes {np.unique(values)}"
            n_true = int((label == int(name)).sum())
        assert len(coords) == min(n_true, FG_SAMPLES)
        assert len(np.unique(coords, axis=0)) == len(coords), "duplicated coordinates"
    # a small class is indexed completely
    assert {tuple(c) for c in meta["fg_1"][:]} == {tuple(c) for c in np.argwhere(label == 1)}


def test_layout_chunks_and_compressor(store):
    import zarr
    from numcodecs import Blosc

    root = zarr.open_group(str(store), mode="r")
    assert root["0"].chunks == (root["0"].shape[0], 64, 64, 64)  # all channels in one chunk
    assert root["labels/lesion/0"].chunks == (64, 64, 64)
    assert root["labels/brain/0"].chunks == (64, 64, 64)
    for name in ("0", "1", "labels/lesion/0", "labels/brain/0", "voxflow/fg_any"):
        zarray = json.loads((store / name / ".zarray").read_text())  # zarr format 2 on disk
        assert zarray["zarr_format"] == 2
        # the default: Blosc LZ4 with byte shuffle (fast decode for training reads)
        assert zarray["compressor"]["id"] == "blosc" and zarray["compressor"]["cname"] == "lz4", zarray
        assert zarray["compressor"]["shuffle"] == Blosc.SHUFFLE
    assert (store / ".zmetadata").is_file(), "consolidated metadata"


def test_ome_zarr_reads_image_and_labels(store, arrays):
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    image, _, _ = arrays
    nodes = list(Reader(parse_url(str(store)))())
    image_node = nodes[0]
    assert any(isinstance(s, Multiscales) for s in image_node.specs)
    shapes = [tuple(d.shape) for d in image_node.data]
    assert shapes[0] == image.shape and len(shapes) == 2
    assert [a["name"] for a in image_node.metadata["axes"]] == ["c", "z", "y", "x"]
    labels = {n.zarr.path.rstrip("/").split("/")[-1]: n for n in nodes
              if any(isinstance(s, Label) for s in n.specs)}
    assert set(labels) == {"lesion", "brain"}
    for name, node in labels.items():
        assert any(isinstance(s, Multiscales) for s in node.specs)
        # every label level has the spatial shape of its image level
        assert [tuple(d.shape) for d in node.data] == [s[1:] for s in shapes], name
        np.testing.assert_array_equal(np.asarray(node.data[0]),
                                      zarr.open_group(str(store), mode="r")[f"labels/{name}/0"][:])


def test_no_temporary_left_and_failed_write_leaves_nothing(store, arrays, tmp_path):
    # the module's store: only the store in its folder
    assert [p.name for p in store.parent.iterdir()] == [store.name]
    assert tmp_names_under(store.parent) == []

    path = tmp_path / "sub-02.zarr"
    from voxflow.preprocess.store import write_subject_store

    image, mask, label = arrays
    with pytest.raises(TypeError):  # fails at the very end: attributes that are not JSON
        write_subject_store(path, image, mask, label, MODS, SPACING, ORIGIN, DIRECTION, TRANSFORMS,
                            extra_attrs={"not_json": object()})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []

    # a failed rewrite keeps the complete old store
    from voxflow.core.stores import read_subject_store

    _write(path, arrays)
    with pytest.raises(TypeError):
        write_subject_store(path, image * 0 + 5, mask, label, MODS, SPACING, ORIGIN, DIRECTION, TRANSFORMS,
                            extra_attrs={"not_json": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["sub-02.zarr"]
    old = read_subject_store(path)
    assert np.abs(old["image"].astype(np.float32) - image).max() < 0.01


def test_store_without_label(arrays, tmp_path):
    from voxflow.preprocess.store import write_subject_store
    from voxflow.core.stores import read_subject_store

    image, mask, _ = arrays
    write_subject_store(tmp_path / "s.zarr", image, mask, None, MODS, SPACING, ORIGIN, DIRECTION, TRANSFORMS)
    got = read_subject_store(tmp_path / "s.zarr")
    assert got["label"] is None and got["meta"]["has_label"] is False
    np.testing.assert_array_equal(got["mask"], mask)
