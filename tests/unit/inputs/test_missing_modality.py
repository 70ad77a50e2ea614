"""Missing or unusable modalities (input.missing, input.unusable; voxflow.inputs.missing, voxflow.synth.complete):
what the parse time finds per subject, the split that never trains on them, ingest's stand-in, and the augmentation that
replaces a modality by the synthesis model's (one workflow run where subjects lacking a modality are completed and
predicted: tests/workflow/test_missing_modality_workflow.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from support.layouts import load_cohort


def _volume(path: Path, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).normal(100, 10, (12, 14, 16)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(img, str(path))
    return str(path)


def _sheet(tmp_path: Path) -> Path:
    """a: complete; b: empty flair cell; c: flair file absent; d: flair exists (listed unusable in the tests);
    e: t1 (the reference) cell empty."""
    data = tmp_path / "data"
    for s in "abcde":
        _volume(data / s / "t1.nii.gz")
        if s != "c":
            _volume(data / s / "flair.nii.gz", 1)
    rows = [["subject", "t1", "flair"], ["a", "a/t1.nii.gz", "a/flair.nii.gz"], ["b", "b/t1.nii.gz", ""],
            ["c", "c/t1.nii.gz", "c/flair.nii.gz"], ["d", "d/t1.nii.gz", "d/flair.nii.gz"],
            ["e", "", "e/flair.nii.gz"]]
    sheet = data / "cohort.csv"
    sheet.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return sheet


def test_reject_keeps_todays_behaviour_and_names_unusable(tmp_path):
    sheet = _sheet(tmp_path)
    cohort, _ = load_cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "flair"], "label": None,
                         "unusable": {"d": ["flair"]}})
    assert not cohort.missing
    assert "modality 'flair' is missing" in cohort.problems["b"][1]
    assert "c" not in cohort.problems  # an absent file fails at validation, as before
    assert cohort.problems["d"][1].startswith("modality 'flair' is unusable (input.unusable)")
    assert cohort.images["d"]["flair"] == ""  # never read


def test_synthesize_keeps_subjects_lacking_a_modality_but_not_the_reference(tmp_path):
    sheet = _sheet(tmp_path)
    cohort, _ = load_cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "flair"], "label": None,
                         "missing": "synthesize", "unusable": {"d": ["flair"]}})
    assert cohort.missing == {"b": {"flair": "no file"}, "c": {"flair": "no file"},
                              "d": {"flair": "unusable (input.unusable)"}}
    assert set(cohort.problems) == {"e"}  # the reference cannot be synthesized
    assert "reference modality 't1'" in cohort.problems["e"][1] and "\n" not in cohort.problems["e"][1]
    assert all(cohort.images[s]["flair"] == "" for s in "bcd") and cohort.images["a"]["flair"]


def test_config_errors_for_missing_and_unusable(tmp_path):
    from voxflow.errors import ConfigError
    from voxflow.settings.checks import check_config

    sheet = _sheet(tmp_path)
    cohort, cfg = load_cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "flair"], "label": None,
                           "missing": "synthesize", "unusable": {"zz": ["flair"], "a": ["t2"]}})
    with pytest.raises(ConfigError) as info:
        check_config(cfg, cohort)
    msg = str(info.value)
    assert "config error at 'input.unusable': 'zz' not in the cohort" in msg
    assert "config error at 'input.unusable': unknown modality 't2'" in msg
    cohort, cfg = load_cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1"], "label": None,
                           "missing": "synthesize"})
    with pytest.raises(ConfigError, match="synthesize needs at least two modalities"):
        check_config(cfg, cohort)


def test_split_never_trains_on_incomplete_subjects():
    from voxflow.core.split import make_split

    subjects = [f"s{i:02d}" for i in range(12)]
    incomplete = {"s03": {"flair": "no file"}, "s07": {"t2": "unusable (input.unusable)"}}
    sp = make_split(subjects, 3, 0.2, 0, incomplete=incomplete)
    trained = {s for f in sp["folds"] for s in f["train"] + f["val"]}
    assert not trained & set(incomplete) and set(incomplete) <= set(sp["test"])
    assert trained | set(sp["test"]) == set(subjects)
    assert sp["incomplete"] == [{"subject": s, "missing": incomplete[s]} for s in sorted(incomplete)]
    # the complete subjects split as if the incomplete ones were absent
    alone = make_split([s for s in subjects if s not in incomplete], 3, 0.2, 0)
    assert alone["folds"] == sp["folds"]


def test_ingest_stands_the_reference_in_for_a_missing_modality(tmp_path):
    from voxflow.preprocess.ingest import ingest_subject

    t1 = _volume(tmp_path / "t1.nii.gz")
    out = {m: str(tmp_path / "out" / f"{m}.nii") for m in ("t1", "flair")}
    info = ingest_subject("b", {"t1": t1, "flair": ""}, out, "t1", missing={"flair": "no file"})
    assert info["missing"] == {"flair": "no file"} and info["modalities"]["flair"]["source"] == ""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(out["flair"])),
                                  sitk.GetArrayFromImage(sitk.ReadImage(out["t1"])))
    from voxflow.inputs.images import InputError

    with pytest.raises(InputError, match="reference modality 't1' is missing"):
        ingest_subject("e", {"t1": "", "flair": t1}, out, "t1", missing={"t1": "no file"})


def test_synthetic_modality_augmentation_replaces_one_channel_inside_the_brain(tmp_path):
    """train.augment.synthetic_modality_p: p 0 changes nothing; p 1 replaces exactly one channel per sample (the
    seeded draw's), leaves the others bit-identical and 0 outside the brain; the same (seed, step) draws alike."""
    import torch

    from voxflow.synth.augment import SyntheticModality
    from voxflow.synth.model import build_generator

    torch.manual_seed(0)
    net = build_generator(3, [32, 32, 32], 4)
    path = tmp_path / "generator.pt"
    torch.save({"state_dict": net.state_dict(), "n_modalities": 3, "patch_size": [32, 32, 32], "base_features": 4,
                "n_stages": None, "spacing": [2.0, 2.0, 2.0], "modalities": ["t1", "t2", "flair"]}, path)
    img = torch.randn(4, 3, 32, 32, 32)
    img[:, :, :4] = 0  # background
    none = SyntheticModality(str(path), 0.0, torch.device("cpu"))
    assert torch.equal(none(img, 0, 5), img) and none.applied == 0
    every = SyntheticModality(str(path), 1.0, torch.device("cpu"))
    out = every(img, 0, 5)
    assert every.applied == 4
    for i in range(4):
        m = every.draws(0, 5, i, 3)
        changed = [j for j in range(3) if not torch.equal(out[i, j], img[i, j])]
        assert changed == [m]
        assert not out[i, m, :4].any() and out[i, m, 4:].std() > 0
    assert torch.equal(every(img, 0, 5), out)  # seeded by (seed, step, sample)
    assert not torch.equal(every(img, 0, 6), out)
    with pytest.raises(ValueError, match="needs the synthesis model"):
        SyntheticModality(None, 0.5, torch.device("cpu"))
