"""Plans (plans.json read through typed properties) and LabelScheme (what a model's outputs mean): the dict
make_plans writes comes back unchanged, every property is the dict's value, a missing key names plans.json's key,
and the label scheme maps probabilities to labels as softmax classes or as BraTS regions painted in order."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from support.paths import SCHEMA
from voxflow.core.atomic import write_json_atomic
from voxflow.core.labels import LabelScheme
from voxflow.planning.plans import Cascade, Plans, PlansError
from voxflow.planning.planner import make_plans

MODS = ["t1", "t2"]
LABEL_VALUES = [0, 1, 2, 4]
BRATS = [[1, 2, 4], [1, 4], [4]]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from voxflow.settings import validate_config

    cfg = validate_config({"output_dir": str(tmp_path_factory.mktemp("cfg")),
                           "input": {"layout": "demo", "modalities": MODS}}, SCHEMA)
    cfg["model"].update(base_features=4, patch_size=None, batch_size=None)
    return cfg


def _fp(median_shape=(96, 96, 96)):
    """A fingerprint as voxflow.planning.fingerprint.fingerprint writes it (what make_plans reads of it)."""
    return {"median_shape": list(median_shape), "median_spacing": [1.0, 1.25, 1.5],
            "class_voxels": {"0": 5000, "1": 40, "2": 300, "4": 12}, "intensity": {"mean": [0.0, 0.0]}}


def _plans(cfg, **model) -> dict:
    c = copy.deepcopy(cfg)
    c["model"].update(model)
    return make_plans(_fp(), c, MODS, LABEL_VALUES, "cpu")


@pytest.fixture(scope="module")
def written(cfg) -> dict[str, dict]:
    return {"3d": _plans(cfg), "2d": _plans(cfg, dim="2d"), "2.5d": _plans(cfg, dim="2.5d", context_slices=3),
            "fullres": _plans(cfg, cascade_stage="fullres"), "lowres": _plans(cfg, cascade_stage="lowres")}


@pytest.mark.parametrize("name", ["3d", "2d", "2.5d", "fullres", "lowres"])
def test_the_written_dict_round_trips(written, name, tmp_path):
    d = written[name]
    p = Plans.from_dict(d)
    assert p.to_dict() == d and p.raw == d
    assert json.dumps(p.raw, sort_keys=True) == json.dumps(d, sort_keys=True)  # the run key hashes this text
    assert Plans.of(p) is p and Plans.of(d) == p
    p.to_dict()["patch_size"].append(99)  # a copy: the plans stay as written
    assert p.raw == d
    write_json_atomic(d, tmp_path / "plans.json")
    back = Plans.load(tmp_path / "plans.json")
    assert back.to_dict() == d and back.source == str(tmp_path / "plans.json")


@pytest.mark.parametrize("name", ["3d", "2d", "fullres"])
def test_typed_accessors_are_the_dict_values(written, name):
    d = written[name]
    p = Plans.from_dict(d)
    for key in ("dim", "modalities", "label_values", "n_classes", "regions", "region_labels", "n_outputs",
                "context_slices", "patch_size", "batch_size", "n_stages", "kernels", "strides", "base_features",
                "spacing", "stem", "configuration", "class_voxels", "automatic", "overridden_by_config"):
        assert getattr(p, key) == d[key], key
    assert p.is_3d == (d["dim"] == "3d")
    assert p.class_voxel_counts == [d["class_voxels"][str(v)] for v in d["label_values"]]
    assert p.labels == LabelScheme.of(LABEL_VALUES) and p.region_index_groups is None
    if name == "3d":
        assert p.cascade is None and p.cascade_stage is None and p.n_inputs == len(MODS)
        assert p.sampler_patch == p.window_patch == d["patch_size"] and p.network_spacing == d["spacing"]
        assert p.augment_slices == 1
    elif name == "2d":
        assert len(d["patch_size"]) == 2 and p.network_spacing == d["spacing"][1:]
        assert p.sampler_patch == [d["context_slices"], *d["patch_size"]] and p.window_patch == [1, *d["patch_size"]]
        assert p.cascade is None and p.n_inputs == len(MODS)
    else:
        c = d["cascade"]
        assert c["stage"] == "fullres" and p.cascade_stage == "fullres"
        assert p.cascade == Cascade("fullres", c["factor"], c["prev_channels"]) and c["prev_channels"] == 3
        assert p.n_inputs == len(MODS) + 3, "the modalities and the low-resolution prediction one-hot"
        assert p.sampler_patch == d["patch_size"], "the full-resolution stage reads its own patch"


def test_2_5d_and_the_cascade_s_low_resolution_stage(written):
    p = Plans.from_dict(written["2.5d"])
    assert p.context_slices == 3 and p.augment_slices == 3
    assert p.sampler_patch == [3, *p.patch_size] and p.window_patch == [1, *p.patch_size]
    low = Plans.from_dict(written["lowres"])
    f = written["lowres"]["cascade"]["factor"]
    assert low.cascade == Cascade("lowres", f, 0) and low.n_inputs == len(MODS)
    assert low.sampler_patch == [s * f for s in low.patch_size], "read factor times larger, pooled after"


def test_label_scheme_of_softmax_classes():
    s = LabelScheme.of(LABEL_VALUES)
    assert s.n_outputs == 4 and s.activation == "softmax" and not s.uses_regions
    assert s.foreground_labels == [1, 2, 4] and s.foreground_groups == [[1], [2], [4]]
    assert s.region_index_groups is None
    probs = np.zeros((4, 2, 2), np.float32)  # class k wins at the voxel where it is 0.7
    for k, (z, y) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        probs[:, z, y] = 0.1
        probs[k, z, y] = 0.7
    labels = s.labels_from_probabilities(probs)
    np.testing.assert_array_equal(labels, [[0, 1], [2, 4]])
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(s.class_indices(labels), [[0, 1], [2, 3]])
    np.testing.assert_allclose(s.foreground_probability(probs), 1.0 - probs[0])


def test_label_scheme_of_brats_regions():
    s = LabelScheme.of(LABEL_VALUES, BRATS)
    assert s.region_labels == (2, 1, 4), "whole tumour paints edema, core necrosis, enhancing itself"
    assert s.n_outputs == 3 and s.activation == "sigmoid" and s.uses_regions
    assert s.foreground_groups == BRATS and s.region_index_groups == [[1, 2, 3], [1, 3], [3]]
    # (whole tumour, core, enhancing) per voxel: none, whole only, whole + core, all three, core at 0.5 (not above)
    probs = np.array([[0.3, 0.9, 0.9, 0.95, 0.9],
                      [0.1, 0.2, 0.8, 0.9, 0.5],
                      [0.0, 0.1, 0.3, 0.7, 0.1]], np.float32)
    np.testing.assert_array_equal(s.labels_from_probabilities(probs), [0, 2, 1, 4, 2])
    np.testing.assert_allclose(s.foreground_probability(probs), probs[0])
    assert LabelScheme.of(LABEL_VALUES, BRATS, explicit=[2, 1, 4]) == s
    with pytest.raises(ValueError, match=r"train\.region_labels"):
        LabelScheme.of(LABEL_VALUES, BRATS, explicit=[2, 4, 1])


def test_region_plans_give_the_region_scheme(cfg):
    from voxflow.inference.predict import segmentation

    c = copy.deepcopy(cfg)
    c["train"]["regions"] = BRATS
    d = make_plans(_fp(), c, MODS, LABEL_VALUES, "cpu")
    p = Plans.from_dict(d)
    assert p.regions == BRATS and p.region_labels == [2, 1, 4] and p.n_outputs == 3
    assert p.labels == LabelScheme.of(LABEL_VALUES, BRATS) and p.region_index_groups == [[1, 2, 3], [1, 3], [3]]
    probs = np.array([[0.9], [0.8], [0.1]], np.float32)
    assert segmentation(probs, d).tolist() == segmentation(probs, p).tolist() == [1]  # a dict or Plans, alike


def test_a_missing_key_names_plans_json_s_key(written, tmp_path):
    d = {k: v for k, v in written["3d"].items() if k != "patch_size"}
    p = Plans.from_dict(d)
    with pytest.raises(PlansError, match=r"plans\.json has no key 'patch_size'") as err:
        _ = p.patch_size
    assert isinstance(err.value, KeyError) and "rerun the plan rule" in str(err.value)
    assert p.optional("patch_size") is None and p.optional("patch_size", [8]) == [8] and p.dim == "3d"
    write_json_atomic(d, tmp_path / "plans.json")
    with pytest.raises(KeyError, match=re.escape(f"'patch_size' ({tmp_path / 'plans.json'})")):
        _ = Plans.load(tmp_path / "plans.json").sampler_patch
    full = copy.deepcopy(written["fullres"])
    del full["cascade"]["prev_channels"]
    with pytest.raises(PlansError, match=r"no key 'cascade\.prev_channels'"):
        _ = Plans.from_dict(full).n_inputs
    old = {k: v for k, v in written["3d"].items() if k not in ("stem", "n_outputs", "cascade", "configuration")}
    older = Plans.from_dict(old)  # plans of older models: the keys they lack have their defaults
    assert older.stem == "full_resolution" and older.n_outputs == 4 and older.cascade is None
    assert older.configuration is None
    with pytest.raises(ValueError, match="not a JSON object"):
        Plans.from_dict([1, 2])  # type: ignore[arg-type]
