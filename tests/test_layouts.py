"""Input layouts (voxflow.layouts): each one on a small cohort written in that layout, its error
cases, DICOM series / NRRD / MHA inputs, and real workflow runs through ingest (and through the
zarr stores for a sheet cohort with a DICOM subject, whose patient name must appear in no output)."""

from __future__ import annotations

import copy
import gzip
import json
import os
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
    from voxflow.config import build_cohort, validate_config

    cfg = validate_config(copy.deepcopy({"input": inp, **top}), SCHEMA)
    return build_cohort(cfg), cfg


def _config_error(inp: dict) -> str:
    from voxflow.config import ConfigError

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
    esc = _write_sheet(data / "esc.csv", [["subject", "t1"], ["s1", "s1/t1.nii.gz"], ["s2", "../s2/t1.nii.gz"]])
    msg = _config_error(base | {"sheet": str(esc)})
    assert msg == (f"config error at 'input.sheet': subject=s2 file=../s2/t1.nii.gz: path escapes the data root "
                   f"{data} (input.root; default the sheet's folder)")
    # absolute paths too; a wider input.root admits them
    outside = str(tmp_path / "other" / "t1.nii.gz")
    absolute = _write_sheet(data / "abs.csv", [["subject", "t1"], ["s1", outside]])
    assert "subject=s1 file=" + outside + ": path escapes" in _config_error(base | {"sheet": str(absolute)})
    cohort, _ = _cohort(base | {"sheet": str(absolute), "root": str(tmp_path)})
    assert cohort.images["s1"]["t1"] == outside
    nocol = _write_sheet(data / "nocol.csv", [["subject", "T1"], ["s1", "a.nii.gz"]])
    assert "config error at 'input.modalities': ['t1'] are not columns of" in _config_error(base | {"sheet": str(nocol)})
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
    from voxflow.io import InputError, read_image

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
    with pytest.raises(InputError, match=r"^subject=s1 file=.*y\.mha: cannot read image"):
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


# --- a real run: sheet cohort with NIfTI, DICOM + MHA + NRRD, and an empty cell, through zarr ----------------

@pytest.mark.slow
def test_sheet_run_through_zarr_with_dicom_keeps_patient_name_out(tmp_path):
    from voxflow.demo import generate_subject
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
           "input": {"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "t2"]},
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
