"""Input layouts (voxflow.inputs.layouts): each one on a small cohort written in that layout, its error
cases, DICOM series / NRRD / MHA inputs, and real workflow runs through ingest (and through the
zarr stores for a sheet cohort with a DICOM subject, whose patient name must appear in no output)."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SCHEMA, files_under, tmp_names_under
from test_preprocess_workflow import _fail_msg, run_snakemake

PATIENT_NAME, PATIENT_ID = "Doe^Janeprivacy", "PID4711XQ"


def _cohort(inp: dict, **top):
    from voxflow.settings.load import build_cohort, validate_config

    cfg = validate_config(copy.deepcopy({"input": inp, **top}), SCHEMA)
    return build_cohort(cfg), cfg


def _config_error(inp: dict) -> str:
    from voxflow.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _cohort(inp)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


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


def write_dicom_series(img: sitk.Image, folder: Path, series_uid: str, extra: dict | None = None) -> None:
    """One file per slice with the geometry tags ITK reads back, and identifying patient tags."""
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.Cast(img, sitk.sitkInt16)
    d = img.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {"0010|0010": PATIENT_NAME, "0010|0020": PATIENT_ID, "0008|0060": "MR",
                "0020|000d": "1.2.826.0.1.3680043.2.1125.7", "0020|000e": series_uid,
                "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
                "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0018|0050": f"{img.GetSpacing()[2]:.4f}", **(extra or {})}
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


# --- sheet ---------------------------------------------------------------------------------------------------

def _write_sheet(path: Path, rows: list[list[str]], sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sep.join(r) for r in rows) + "\n")
    return path


def test_sheet_finds_relative_absolute_and_missing(tmp_path):
    data = tmp_path / "data"
    sheet = _write_sheet(data / "cohort.tsv", [
        ["subject", "t1", "t2", "seg", "age"],
        ["a", "a/t1.nii.gz", str(data / "elsewhere" / "a_t2.nrrd"), "a/seg.nii.gz", "40"],
        ["b", "b/t1_series", "b/t2.mha", "", "51"],   # DICOM folder; no label
        ["c", "c/t1.nii.gz", "", "c/seg.nii.gz", ""],   # no t2
    ], sep="\t")
    cohort, _ = _cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "t2"]})
    assert cohort.subjects == ["a", "b", "c"]
    assert cohort.images["a"] == {"t1": str(data / "a" / "t1.nii.gz"), "t2": str(data / "elsewhere" / "a_t2.nrrd")}
    assert cohort.images["b"] == {"t1": str(data / "b" / "t1_series"), "t2": str(data / "b" / "t2.mha")}
    assert cohort.images["c"]["t2"] == ""
    assert cohort.labels == {"a": str(data / "a" / "seg.nii.gz"), "b": None, "c": str(data / "c" / "seg.nii.gz")}
    # an empty cell is that subject's problem (its ingest fails), not the cohort's
    assert set(cohort.problems) == {"b", "c"}
    assert cohort.problems["b"] == (str(sheet), "label is missing for this subject (empty cell in line 3)")
    assert cohort.problems["c"] == (str(sheet), "modality 't2' is missing for this subject (empty cell in line 4)")
    # input.subjects picks among the sheet's subjects; no label column needed without labels
    cohort, _ = _cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1"], "subjects": ["c", "a"],
                         "label": None})
    assert cohort.subjects == ["c", "a"] and cohort.labels == {"c": None, "a": None} and not cohort.problems


def test_sheet_errors_are_one_line(tmp_path):
    data = tmp_path / "data"
    base = {"layout": "sheet", "modalities": ["t1"], "label": None}
    dup = _write_sheet(data / "dup.csv", [["subject", "t1"], ["s1", "x.nii.gz"], ["s2", "y.nii.gz"],
                                          ["s1", "z.nii.gz"]])
    msg = _config_error(base | {"sheet": str(dup)})
    assert msg == f"config error at 'input.sheet': duplicated subject IDs in {dup}: s1 (lines 2, 4)"
    # a path leaving the data root fails only that subject (its ingest), and is never handed to a reader
    esc = _write_sheet(data / "esc.csv", [["subject", "t1"], ["s1", "s1/t1.nii.gz"], ["s2", "../s2/t1.nii.gz"]])
    cohort, _ = _cohort(base | {"sheet": str(esc)})
    assert cohort.subjects == ["s1", "s2"] and set(cohort.problems) == {"s2"} and cohort.images["s2"]["t1"] == ""
    assert cohort.problems["s2"] == ("../s2/t1.nii.gz", f"path escapes the data root {data} (input.root; default "
                                                         f"the sheet's folder; line 3 of {esc})")
    # absolute paths too; a wider input.root admits them
    outside = str(tmp_path / "other" / "t1.nii.gz")
    absolute = _write_sheet(data / "abs.csv", [["subject", "t1"], ["s1", outside]])
    cohort, _ = _cohort(base | {"sheet": str(absolute)})
    assert cohort.problems["s1"][0] == outside and "path escapes the data root" in cohort.problems["s1"][1]
    cohort, _ = _cohort(base | {"sheet": str(absolute), "root": str(tmp_path)})
    assert cohort.images["s1"]["t1"] == outside and not cohort.problems
    nocol = _write_sheet(data / "nocol.csv", [["subject", "T1"], ["s1", "a.nii.gz"]])
    assert ("config error at 'input.modalities': ['t1'] are not columns of"
            in _config_error(base | {"sheet": str(nocol)}))
    nolabel = _write_sheet(data / "nolabel.csv", [["subject", "t1"], ["s1", "a.nii.gz"]])
    assert "config error at 'input.label': no label column 'seg'" in _config_error(base | {"sheet": str(nolabel),
                                                                                          "label": "seg"})
    assert _config_error(base) == ("config error at 'input.sheet': the sheet layout needs input.sheet "
                                   "(a CSV/TSV file)")


def test_sheet_of_10000_subjects_parses_fast_without_touching_files(tmp_path):
    """The DAG of a large cohort is built from the sheet alone: no file it names needs to exist."""
    rows = [["subject", "t1", "t2", "seg"]] + [[f"s{i:05d}", f"s{i:05d}/t1.nii.gz", f"s{i:05d}/t2.nii.gz",
                                                f"s{i:05d}/seg.nii.gz"] for i in range(10_000)]
    sheet = _write_sheet(tmp_path / "big.csv", rows)
    t0 = time.perf_counter()
    cohort, _ = _cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "t2"]})
    elapsed = time.perf_counter() - t0
    assert len(cohort.subjects) == 10_000 and cohort.labels["s09999"] == str(tmp_path / "s09999" / "seg.nii.gz")
    assert elapsed < 3.0, f"{elapsed:.2f} s to parse a 10 000-row sheet"


# --- DICOM, NRRD, MHA ----------------------------------------------------------------------------------------

def _oblique_image(seed=1) -> sitk.Image:
    arr = np.random.default_rng(seed).integers(0, 1000, (8, 14, 16)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.5, 1.25, 3.0))
    img.SetOrigin((-20.5, 10.25, 33.0))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return img


def test_read_image_dicom_series_nrrd_mha(tmp_path):
    from voxflow.inputs.images import InputError, read_image

    img = _oblique_image()
    write_dicom_series(img, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.8")
    got = read_image(tmp_path / "series", "s1")
    assert got.GetSize() == img.GetSize()
    assert np.allclose(got.GetSpacing(), img.GetSpacing()) and np.allclose(got.GetOrigin(), img.GetOrigin(), atol=1e-4)
    assert np.allclose(got.GetDirection(), img.GetDirection(), atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(img))
    assert not got.GetMetaDataKeys()  # no patient tags travel with the image
    for ext in (".nrrd", ".mha"):
        sitk.WriteImage(img, str(tmp_path / f"x{ext}"), True)
        got = read_image(tmp_path / f"x{ext}", "s1")
        assert np.array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(img))
        assert np.allclose(got.GetDirection(), img.GetDirection()) and np.allclose(got.GetOrigin(), img.GetOrigin())
    # a broken MHA (data file shorter than its header says) is one line, like a broken NIfTI
    raw = tmp_path / "y.mha"
    sitk.WriteImage(img, str(raw), False)
    raw.write_bytes(raw.read_bytes()[:-500])
    with pytest.raises(InputError, match=r"^subject=s1 file=.*y\.mha: image file is truncated \(\d+ of the \d+ bytes "
                                         r"that the header announces\)$"):
        read_image(raw, "s1")

    def error(folder: Path) -> str:
        with pytest.raises(InputError) as info:
            read_image(folder, "s1", what="t1 image")
        return str(info.value)

    two = tmp_path / "two"
    shutil.copytree(tmp_path / "series", two)
    write_dicom_series(img, two / "b", "1.2.826.0.1.3680043.2.1125.9")
    for f in (two / "b").iterdir():
        f.rename(two / f"b_{f.name}")
    assert error(two) == (f"subject=s1 file={two}: t1 image folder holds 2 DICOM series (1.2.826.0.1.3680043.2.1125.8, "
                          "1.2.826.0.1.3680043.2.1125.9); put one series per folder")
    gap = tmp_path / "gap"
    shutil.copytree(tmp_path / "series", gap)
    (gap / "slice004.dcm").unlink()
    assert error(gap) == (f"subject=s1 file={gap}: t1 image DICOM series has uneven slice spacing (3 to 6 mm: "
                          "missing slices?)")
    (tmp_path / "empty").mkdir()
    assert error(tmp_path / "empty") == f"subject=s1 file={tmp_path / 'empty'}: t1 image folder holds no DICOM series"
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(tmp_path / "series" / "slice000.dcm", single)
    assert "DICOM series has 1 slice: a 3D volume needs at least 2" in error(single)


def test_folders_layout_with_dicom_series_folders(tmp_path):
    """extension "" makes <root>/<subject>/<modality> a folder, which read_image takes as one DICOM series."""
    from voxflow.inputs.images import read_image

    img = _oblique_image(seed=2)
    write_dicom_series(img, tmp_path / "data" / "p1" / "t1", "1.2.826.0.1.3680043.2.1125.12")
    cohort, _ = _cohort({"layout": "folders", "root": str(tmp_path / "data"), "modalities": ["t1"], "extension": "",
                         "label": None})
    assert cohort.subjects == ["p1"] and cohort.images["p1"] == {"t1": str(tmp_path / "data" / "p1" / "t1")}
    assert np.array_equal(sitk.GetArrayFromImage(read_image(cohort.images["p1"]["t1"], "p1")),
                          sitk.GetArrayFromImage(img))


def test_layout_enum_error_lists_the_layouts():
    msg = _config_error({"layout": "nnunet"})
    assert msg == ("config error at 'input.layout': 'nnunet' is not allowed; allowed values: "
                   "['demo', 'folders', 'sheet', 'brats', 'msd', 'bids']")


def test_native_outputs_on_a_dicom_reference_grid(tmp_path):
    """Predictions go back onto the raw reference grid: for a DICOM reference, that of the series."""
    import ants

    from voxflow.inference.predict import write_like

    img = _oblique_image(seed=3)
    write_dicom_series(img, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.11")
    sitk.WriteImage(img, str(tmp_path / "same.nii.gz"))
    arr = np.zeros(img.GetSize(), np.uint8)
    arr[2:5, 3:9, 1:4] = 2
    write_like(arr, str(tmp_path / "series"), tmp_path / "pred.nii.gz")
    pred = sitk.ReadImage(str(tmp_path / "pred.nii.gz"))
    assert pred.GetSize() == img.GetSize() and np.array_equal(sitk.GetArrayFromImage(pred), arr.T)
    assert np.allclose(pred.GetOrigin(), img.GetOrigin(), atol=1e-4)
    assert np.allclose(pred.GetDirection(), img.GetDirection(), atol=1e-5)
    # the grid infer.to_native resamples onto equals ANTs' reading of the same volume as NIfTI
    from voxflow.inputs.images import read_raw

    via_dicom, via_nifti = ants.from_sitk(read_raw(tmp_path / "series")), ants.image_read(str(tmp_path / "same.nii.gz"))
    assert via_dicom.shape == via_nifti.shape and np.allclose(via_dicom.origin, via_nifti.origin, atol=1e-4)
    assert np.allclose(via_dicom.spacing, via_nifti.spacing) and np.allclose(via_dicom.direction, via_nifti.direction,
                                                                              atol=1e-5)


# --- a real run: sheet cohort with NIfTI, DICOM + MHA + NRRD, and an empty cell, through zarr ----------------

@pytest.mark.slow
def test_sheet_run_through_zarr_with_dicom_keeps_patient_name_out(tmp_path):
    from voxflow.demo.mri import generate_subject
    from voxflow.preprocess.store import read_subject_store

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
    sheet = _write_sheet(data / "sheet.csv", [
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
    assert res.returncode != 0, _fail_msg(res)  # hole01 fails ...
    for s in ("nii01", "dcm01"):  # ... the others finish
        store = read_subject_store(out / "zarr" / f"{s}.zarr")
        assert store["meta"]["modalities"] == ["t1", "t2"] and store["meta"]["has_label"], _fail_msg(res)
        assert set(np.unique(store["label"])) <= {0, 1, 2, 4} and (store["label"] > 0).sum() > 50
    # the DICOM subject's ingested t1 is the series' volume
    ingested, expected = sitk.ReadImage(str(out / "preprocess" / "dcm01" / "ingest" / "t1.nii")), sitk.DICOMOrient(t1)
    assert np.array_equal(sitk.GetArrayFromImage(ingested), sitk.GetArrayFromImage(expected))
    assert np.allclose(ingested.GetOrigin(), expected.GetOrigin(), atol=1e-3)
    assert np.allclose(ingested.GetDirection(), expected.GetDirection(), atol=1e-5)
    lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if "voxflow ERROR" in ln]
    assert lines and all(ln == f"voxflow ERROR [ingest] subject=hole01 file={sheet}: modality 't2' is missing for "
                         "this subject (empty cell in line 4)" for ln in lines), _fail_msg(res)
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
    cohort, _ = _cohort(inp)
    assert cohort.subjects == [new, gap, old]
    assert cohort.images[old] == {m: str(root / old / f"{old}_{f}.nii.gz")
                                  for m, f in zip(["t1", "t1c", "t2", "flair"], ["t1", "t1ce", "t2", "flair"])}
    assert cohort.images[new] == {m: str(root / new / f"{new}-{f}.nii.gz")
                                  for m, f in zip(["t1", "t1c", "t2", "flair"], ["t1n", "t1c", "t2w", "t2f"])}
    assert cohort.images[gap]["flair"] == str(root / gap / f"{gap}-t2f.nii.gz")  # absent: expected in its naming
    assert cohort.labels == {old: str(root / old / f"{old}_seg.nii.gz"), new: str(root / new / f"{new}-seg.nii.gz"),
                             gap: str(root / gap / f"{gap}-seg.nii.gz")}
    res, out, errors = _ingest(tmp_path, inp, cohort.subjects)
    assert _ingested_sources(out, old) == cohort.images[old], _fail_msg(res)
    assert _ingested_sources(out, new) == cohort.images[new]
    assert errors and all(ln == f"voxflow ERROR [ingest] subject={gap} file={root / gap / (gap + '-t2f.nii.gz')}: "
                          "flair image file is missing" for ln in errors), _fail_msg(res)


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
    cohort, cfg = _cohort(inp | {"msd_sets": ["imagesTr", "imagesTs"]})
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
    cohort, cfg = _cohort(inp | {"msd_sets": ["imagesTs"], "label": None})
    assert cohort.subjects == ["BRATS_101"] and cohort.labels == {"BRATS_101": None} and not cohort.problems
    assert _cohort(inp | {"label_values": [0, 1, 3]})[1]["input"]["label_values"] == [0, 1, 3]
    # nnU-Net v2 dataset.json
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR", "1": "T1-weighted"},
                                                   "labels": {"background": 0, "edema": 1, "tumor": [1, 3]},
                                                   "file_ending": ".nii.gz"}))
    cohort, cfg = _cohort(inp | {"modalities": ["T1weighted", "FLAIR"]})
    assert cohort.images["BRATS_001"]["T1weighted"].endswith("BRATS_001_0001.nii.gz")
    assert cfg["input"]["label_values"] == [0, 1, 3]
    assert _config_error(inp) == (f"config error at 'input.modalities': ['t1w'] are not channels of "
                                  f"{root}/dataset.json; allowed values: ['FLAIR', 'T1-weighted']")
    # label value 3 passes ingest only because the values came from dataset.json
    res, out, errors = _ingest(tmp_path, inp | {"modalities": ["T1weighted", "FLAIR"]}, ["BRATS_001", "BRATS_002"])
    assert res.returncode == 0 and not errors, _fail_msg(res)
    assert _ingested_sources(out, "BRATS_001") == {"T1weighted": str(root / "imagesTr" / "BRATS_001_0001.nii.gz"),
                                                   "FLAIR": str(root / "imagesTr" / "BRATS_001_0000.nii.gz")}
    assert (out / "preprocess" / "BRATS_002" / "ingest" / "label.nii.gz").is_file()
    (root / "dataset.json").unlink()
    assert _config_error(inp) == (f"config error at 'input.root': the msd layout needs {root}/dataset.json "
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
    cohort, _ = _cohort(inp)
    assert cohort.subjects == list(anat)
    assert cohort.images["sub-02_ses-2"] == {"T1w": str(anat["sub-02_ses-2"] / "sub-02_ses-2_acq-mprage_T1w.nii.gz"),
                                             "FLAIR": str(anat["sub-02_ses-2"] / "sub-02_ses-2_FLAIR.nii.gz")}
    assert cohort.labels["sub-02_ses-1"] == str(deriv / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_dseg.nii.gz")
    assert cohort.images["sub-03"]["T1w"] == ""
    assert cohort.problems == {"sub-03": (str(anat["sub-03"]), "no *_T1w.nii.gz file for modality 'T1w'")}
    # two runs of a modality are ambiguous: that subject's problem too
    _volume(anat["sub-01"] / "sub-01_run-2_FLAIR.nii.gz")
    one, _ = _cohort(inp | {"subjects": ["sub-01"], "label": None})
    assert one.problems == {"sub-01": (str(anat["sub-01"]), "2 *_FLAIR.nii.gz files for modality 'FLAIR' "
                                          "(sub-01_FLAIR.nii.gz, sub-01_run-2_FLAIR.nii.gz): keep one")}
    assert one.labels == {"sub-01": None}
    (anat["sub-01"] / "sub-01_run-2_FLAIR.nii.gz").unlink()
    assert _config_error(inp | {"derivatives": None}).startswith("config error at 'input.derivatives': the bids "
                                                                  "layout reads labels from a derivatives folder")
    assert _config_error(inp | {"subjects": ["sub-04"]}).startswith("config error at 'input.subjects': ['sub-04'] "
                                                                     "not found in")
    res, out, errors = _ingest(tmp_path, inp, ["sub-01", "sub-02_ses-1", "sub-03"])
    assert _ingested_sources(out, "sub-02_ses-1") == cohort.images["sub-02_ses-1"], _fail_msg(res)
    assert (out / "preprocess" / "sub-01" / "ingest" / "label.nii.gz").is_file()
    assert errors and all(ln == f"voxflow ERROR [ingest] subject=sub-03 file={anat['sub-03']}: no *_T1w.nii.gz "
                          "file for modality 'T1w'" for ln in errors), _fail_msg(res)


def test_example_configs_are_valid():
    """The layout examples validate against the schema (their data paths are placeholders)."""
    import yaml

    from voxflow.settings.load import validate_config

    for name, layout in [("sheet", "sheet"), ("brats", "brats"), ("msd", "msd"), ("bids", "bids"),
                         ("dicom_folders", "folders"), ("demo_qc_faults", "demo"),
                         ("brats2018_sample", "brats"), ("demo_configurations", "demo")]:
        cfg = validate_config(yaml.safe_load((SCHEMA.parent / "examples" / f"{name}.yaml").read_text()), SCHEMA)
        assert cfg["input"]["layout"] == layout, name
