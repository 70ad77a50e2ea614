"""Input layouts through the workflow (the layouts themselves: tests/unit/inputs/test_layouts.py): real runs
through ingest for the brats, msd and bids layouts, and through the zarr stores for a sheet cohort with a DICOM
subject, whose patient name must appear in no output."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from support.layouts import PATIENT_ID, PATIENT_NAME, config_error, load_cohort, write_dicom_series, write_sheet
from support.outputs import files_under, tmp_names_under
from support.workflow import fail_msg, run_snakemake


def _volume(path: Path, shape=(20, 18, 16), spacing=(2.0, 2.0, 2.5), seed=0, label_values=None) -> Path:
    """A small real image (random texture, or a label map holding `label_values`), written with SimpleITK."""
    rng = np.random.default_rng(seed)
    if label_values is None:
        arr = rng.integers(0, 1000, shape[::-1]).astype(np.int16)
    else:
        arr = np.zeros(shape[::-1], np.uint8)
        for i, v in enumerate(label_values):
            arr[2 + 2 * i:4 + 2 * i, 4:10, 4:10] = v
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


# --- a real run: sheet cohort with NIfTI, DICOM + MHA + NRRD, and an empty cell, through zarr ----------------

@pytest.mark.slow
def test_sheet_run_through_zarr_with_dicom_keeps_patient_name_out(tmp_path):
    from voxflow.demo.mri import generate_subject
    from voxflow.core.stores import read_subject_store

    data = tmp_path / "data"
    for i, s in enumerate(["nii01", "dcm01"]):
        generate_subject(s, i, data / "raw", tmp_path / "truth", modalities=("t1", "t2"), spacing_scale=3.0)
    raw = data / "raw" / "dcm01"
    t1 = sitk.ReadImage(str(raw / "t1.nii.gz"))
    write_dicom_series(t1, data / "dicom" / "dcm01_t1", "1.2.826.0.1.3680043.2.1125.10")
    sitk.WriteImage(sitk.ReadImage(str(raw / "t2.nii.gz")), str(data / "dcm01_t2.mha"), True)
    sitk.WriteImage(sitk.ReadImage(str(raw / "seg.nii.gz")), str(data / "dcm01_seg.nrrd"), True)
    shutil.rmtree(raw)
    dicom_bytes = b"".join(p.read_bytes() for p in (data / "dicom" / "dcm01_t1").iterdir())
    assert PATIENT_NAME.encode() in dicom_bytes and PATIENT_ID.encode() in dicom_bytes  # the test can see a leak
    sheet = write_sheet(data / "sheet.csv", [
        ["subject", "t1", "t2", "seg"],
        ["nii01", "raw/nii01/t1.nii.gz", "raw/nii01/t2.nii.gz", "raw/nii01/seg.nii.gz"],
        ["dcm01", "dicom/dcm01_t1", "dcm01_t2.mha", "dcm01_seg.nrrd"],
        ["hole01", "raw/nii01/t1.nii.gz", "", "raw/nii01/seg.nii.gz"],
    ])
    out = tmp_path / "results"
    cfg = {"output_dir": str(out), "split": {"n_folds": 2},
           "input": {"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "t2"], "on_error": "stop"},
           "preprocess": {"skullstrip": {"method": "none"}, "mni": {"resolution_mm": 2, "transform": "rigid"}}}
    subjects = ["nii01", "dcm01", "hole01"]
    res = run_snakemake(tmp_path, cfg, [str(out / "zarr" / f"{s}.zarr") for s in subjects], "--keep-going")
    assert res.returncode != 0, fail_msg(res)  # hole01 fails ...
    for s in ("nii01", "dcm01"):  # ... the others finish
        store = read_subject_store(out / "zarr" / f"{s}.zarr")
        assert store["meta"]["modalities"] == ["t1", "t2"] and store["meta"]["has_label"], fail_msg(res)
        assert set(np.unique(store["label"])) <= {0, 1, 2, 4} and (store["label"] > 0).sum() > 50
    # the DICOM subject's ingested t1 is the series' volume
    ingested, expected = sitk.ReadImage(str(out / "preprocess" / "dcm01" / "ingest" / "t1.nii")), sitk.DICOMOrient(t1)
    assert np.array_equal(sitk.GetArrayFromImage(ingested), sitk.GetArrayFromImage(expected))
    assert np.allclose(ingested.GetOrigin(), expected.GetOrigin(), atol=1e-3)
    assert np.allclose(ingested.GetDirection(), expected.GetDirection(), atol=1e-5)
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if "voxflow ERROR" in ln]
    assert lines and all(ln == f"voxflow ERROR [ingest] subject=hole01 file={sheet}: modality 't2' is missing for "
                         "this subject (empty cell in line 4)" for ln in lines), fail_msg(res)
    assert not (out / "zarr" / "hole01.zarr").exists()
    assert tmp_names_under(out) == []

    # privacy: the patient's name and ID are nowhere in the outputs (gzip members read decompressed)
    files = files_under(out)
    assert any(p.suffix == ".png" for p in files) and any(p.name == ".zattrs" for p in files)
    assert any(p.suffix == ".log" for p in files) and any(p.suffix == ".json" for p in files)
    needles = [PATIENT_NAME.encode(), PATIENT_ID.encode(), b"Janeprivacy", b"JANEPRIVACY"]
    for p in files:
        blob = p.read_bytes()
        if blob[:2] == b"\x1f\x8b":
            blob += gzip.decompress(blob)
        assert not [n for n in needles if n in blob], f"patient identity in {p}"
    console = (res.stdout + res.stderr).encode()
    assert not [n for n in needles if n in console]


# --- brats, msd, bids ----------------------------------------------------------------------------------------

def _ingest(tmp_path: Path, inp: dict, subjects: list[str], **top):
    """Run the workflow's ingest rule for `subjects` (--keep-going); return (result, output dir, error lines)."""
    out = tmp_path / "results"
    cfg = {"output_dir": str(out), "input": {**inp, "on_error": "stop"}, "split": {"n_folds": 2}, **top}
    res = run_snakemake(tmp_path, cfg, [str(out / "preprocess" / s / "ingest" / "info.json") for s in subjects],
                        "--keep-going")
    errors = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if "voxflow ERROR" in ln]
    return res, out, errors


def _ingested_sources(out: Path, subject: str) -> dict:
    info = json.loads((out / "preprocess" / subject / "ingest" / "info.json").read_text())
    return {m: v["source"] for m, v in info["modalities"].items()}


@pytest.mark.slow
def test_brats_both_namings(tmp_path):
    root = tmp_path / "brats"
    old, new, gap = "BraTS20_Training_001", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000"
    for i, suffix in enumerate(["t1", "t1ce", "t2", "flair"]):
        _volume(root / old / f"{old}_{suffix}.nii.gz", seed=i)
    for s in (new, gap):
        for i, suffix in enumerate(["t1n", "t1c", "t2w", "t2f"]):
            if not (s == gap and suffix == "t2f"):
                _volume(root / s / f"{s}-{suffix}.nii.gz", seed=10 + i)
    _volume(root / old / f"{old}_seg.nii.gz", label_values=[1, 2, 4])
    for s in (new, gap):
        _volume(root / s / f"{s}-seg.nii.gz", label_values=[1, 2, 3])
    (root / ".cache").mkdir()
    inp = {"layout": "brats", "root": str(root), "modalities": ["t1", "t1c", "t2", "flair"],
           "label_values": [0, 1, 2, 3, 4]}
    cohort, _ = load_cohort(inp)
    assert cohort.subjects == [new, gap, old]
    assert cohort.images[old] == {m: str(root / old / f"{old}_{f}.nii.gz")
                                  for m, f in zip(["t1", "t1c", "t2", "flair"], ["t1", "t1ce", "t2", "flair"])}
    assert cohort.images[new] == {m: str(root / new / f"{new}-{f}.nii.gz")
                                  for m, f in zip(["t1", "t1c", "t2", "flair"], ["t1n", "t1c", "t2w", "t2f"])}
    assert cohort.images[gap]["flair"] == str(root / gap / f"{gap}-t2f.nii.gz")  # absent: expected in its naming
    assert cohort.labels == {old: str(root / old / f"{old}_seg.nii.gz"), new: str(root / new / f"{new}-seg.nii.gz"),
                             gap: str(root / gap / f"{gap}-seg.nii.gz")}
    res, out, errors = _ingest(tmp_path, inp, cohort.subjects)
    assert _ingested_sources(out, old) == cohort.images[old], fail_msg(res)
    assert _ingested_sources(out, new) == cohort.images[new]
    assert errors and all(ln == f"voxflow ERROR [ingest] subject={gap} file={root / gap / (gap + '-t2f.nii.gz')}: "
                          "flair image file is missing" for ln in errors), fail_msg(res)


def _msd_dataset(root: Path, cases_tr: list[str], cases_ts: list[str], dataset: dict) -> None:
    for i, c in enumerate(cases_tr + cases_ts):
        folder = "imagesTr" if c in cases_tr else "imagesTs"
        for ch in range(2):
            _volume(root / folder / f"{c}_{ch:04d}.nii.gz", seed=10 * i + ch)
        if c in cases_tr:
            _volume(root / "labelsTr" / f"{c}.nii.gz", label_values=[1, 3])
    (root / "dataset.json").write_text(json.dumps(dataset))


@pytest.mark.slow
def test_msd_channels_labels_and_test_cases(tmp_path):
    root = tmp_path / "Task01_BrainTumour"
    _msd_dataset(root, ["BRATS_001", "BRATS_002"], ["BRATS_101"], {
        "name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}})
    inp = {"layout": "msd", "root": str(root), "modalities": ["t1w", "flair"]}
    cohort, cfg = load_cohort(inp | {"msd_sets": ["imagesTr", "imagesTs"]})
    assert cohort.subjects == ["BRATS_001", "BRATS_002", "BRATS_101"]
    assert cohort.images["BRATS_002"] == {"t1w": str(root / "imagesTr" / "BRATS_002_0001.nii.gz"),
                                          "flair": str(root / "imagesTr" / "BRATS_002_0000.nii.gz")}
    assert cohort.images["BRATS_101"]["flair"] == str(root / "imagesTs" / "BRATS_101_0000.nii.gz")
    assert cohort.labels == {"BRATS_001": str(root / "labelsTr" / "BRATS_001.nii.gz"),
                             "BRATS_002": str(root / "labelsTr" / "BRATS_002.nii.gz"), "BRATS_101": None}
    assert cfg["input"]["label_values"] == [0, 1, 2, 3]  # from dataset.json, not the BraTS default
    assert cohort.problems == {"BRATS_101": (str(root / "imagesTs"), "imagesTs case BRATS_101 has no label; run "
                                             "imagesTs with input.label: null")}
    # test cases without labels; explicit label values win over dataset.json
    cohort, cfg = load_cohort(inp | {"msd_sets": ["imagesTs"], "label": None})
    assert cohort.subjects == ["BRATS_101"] and cohort.labels == {"BRATS_101": None} and not cohort.problems
    assert load_cohort(inp | {"label_values": [0, 1, 3]})[1]["input"]["label_values"] == [0, 1, 3]
    # nnU-Net v2 dataset.json
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR", "1": "T1-weighted"},
                                                   "labels": {"background": 0, "edema": 1, "tumor": [1, 3]},
                                                   "file_ending": ".nii.gz"}))
    cohort, cfg = load_cohort(inp | {"modalities": ["T1weighted", "FLAIR"]})
    assert cohort.images["BRATS_001"]["T1weighted"].endswith("BRATS_001_0001.nii.gz")
    assert cfg["input"]["label_values"] == [0, 1, 3]
    assert config_error(inp) == (f"config error at 'input.modalities': ['t1w'] are not channels of "
                                  f"{root}/dataset.json; allowed values: ['FLAIR', 'T1-weighted']")
    # label value 3 passes ingest only because the values came from dataset.json
    res, out, errors = _ingest(tmp_path, inp | {"modalities": ["T1weighted", "FLAIR"]}, ["BRATS_001", "BRATS_002"])
    assert res.returncode == 0 and not errors, fail_msg(res)
    assert _ingested_sources(out, "BRATS_001") == {"T1weighted": str(root / "imagesTr" / "BRATS_001_0001.nii.gz"),
                                                   "FLAIR": str(root / "imagesTr" / "BRATS_001_0000.nii.gz")}
    assert (out / "preprocess" / "BRATS_002" / "ingest" / "label.nii.gz").is_file()
    (root / "dataset.json").unlink()
    assert config_error(inp) == (f"config error at 'input.root': the msd layout needs {root}/dataset.json "
                                  "(channel names and labels)")


@pytest.mark.slow
def test_bids_sessions_derivatives_and_missing_t1w(tmp_path):
    root = tmp_path / "bids"
    anat = {"sub-01": root / "sub-01" / "anat", "sub-02_ses-1": root / "sub-02" / "ses-1" / "anat",
            "sub-02_ses-2": root / "sub-02" / "ses-2" / "anat", "sub-03": root / "sub-03" / "anat"}
    deriv = root / "derivatives" / "manual"
    for i, (s, d) in enumerate(anat.items()):
        prefix = s  # sub-02_ses-1: BIDS file names carry the session too
        if s != "sub-03":
            _volume(d / f"{prefix}_acq-mprage_T1w.nii.gz", seed=i)
        _volume(d / f"{prefix}_FLAIR.nii.gz", seed=10 + i)
        (d / f"{prefix}_T1w.json").write_text("{}")
        _volume(deriv / d.relative_to(root) / f"{prefix}_dseg.nii.gz", label_values=[1, 2])
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    inp = {"layout": "bids", "root": str(root), "modalities": ["T1w", "FLAIR"], "label": "dseg",
           "derivatives": "derivatives/manual", "label_values": [0, 1, 2]}
    cohort, _ = load_cohort(inp)
    assert cohort.subjects == list(anat)
    assert cohort.images["sub-02_ses-2"] == {"T1w": str(anat["sub-02_ses-2"] / "sub-02_ses-2_acq-mprage_T1w.nii.gz"),
                                             "FLAIR": str(anat["sub-02_ses-2"] / "sub-02_ses-2_FLAIR.nii.gz")}
    assert cohort.labels["sub-02_ses-1"] == str(deriv / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_dseg.nii.gz")
    assert cohort.images["sub-03"]["T1w"] == ""
    assert cohort.problems == {"sub-03": (str(anat["sub-03"]), "no *_T1w.nii.gz file for modality 'T1w'")}
    # two runs of a modality are ambiguous: that subject's problem too
    _volume(anat["sub-01"] / "sub-01_run-2_FLAIR.nii.gz")
    one, _ = load_cohort(inp | {"subjects": ["sub-01"], "label": None})
    assert one.problems == {"sub-01": (str(anat["sub-01"]), "2 *_FLAIR.nii.gz files for modality 'FLAIR' "
                                          "(sub-01_FLAIR.nii.gz, sub-01_run-2_FLAIR.nii.gz): keep one")}
    assert one.labels == {"sub-01": None}
    (anat["sub-01"] / "sub-01_run-2_FLAIR.nii.gz").unlink()
    assert config_error(inp | {"derivatives": None}).startswith("config error at 'input.derivatives': the bids "
                                                                  "layout reads labels from a derivatives folder")
    assert config_error(inp | {"subjects": ["sub-04"]}).startswith("config error at 'input.subjects': ['sub-04'] "
                                                                     "not found in")
    res, out, errors = _ingest(tmp_path, inp, ["sub-01", "sub-02_ses-1", "sub-03"])
    assert _ingested_sources(out, "sub-02_ses-1") == cohort.images["sub-02_ses-1"], fail_msg(res)
    assert (out / "preprocess" / "sub-01" / "ingest" / "label.nii.gz").is_file()
    assert errors and all(ln == f"voxflow ERROR [ingest] subject=sub-03 file={anat['sub-03']}: no *_T1w.nii.gz "
                          "file for modality 'T1w'" for ln in errors), fail_msg(res)
