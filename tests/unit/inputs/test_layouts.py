"""Input layouts (voxflow.inputs.layouts): each one on a small cohort written in that layout, its error
cases, DICOM series / NRRD / MHA inputs (real workflow runs through ingest, and through the zarr stores for a
sheet cohort with a DICOM subject: tests/workflow/test_layouts_workflow.py)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from support.layouts import config_error, load_cohort, write_dicom_series, write_sheet
from support.paths import PROJECT, SCHEMA

# --- sheet ---------------------------------------------------------------------------------------------------

def test_sheet_finds_relative_absolute_and_missing(tmp_path):
    data = tmp_path / "data"
    sheet = write_sheet(data / "cohort.tsv", [
        ["subject", "t1", "t2", "seg", "age"],
        ["a", "a/t1.nii.gz", str(data / "elsewhere" / "a_t2.nrrd"), "a/seg.nii.gz", "40"],
        ["b", "b/t1_series", "b/t2.mha", "", "51"],   # DICOM folder; no label
        ["c", "c/t1.nii.gz", "", "c/seg.nii.gz", ""],   # no t2
    ], sep="\t")
    cohort, _ = load_cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "t2"]})
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
    cohort, _ = load_cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1"], "subjects": ["c", "a"],
                         "label": None})
    assert cohort.subjects == ["c", "a"] and cohort.labels == {"c": None, "a": None} and not cohort.problems


def test_sheet_errors_are_one_line(tmp_path):
    data = tmp_path / "data"
    base = {"layout": "sheet", "modalities": ["t1"], "label": None}
    dup = write_sheet(data / "dup.csv", [["subject", "t1"], ["s1", "x.nii.gz"], ["s2", "y.nii.gz"],
                                          ["s1", "z.nii.gz"]])
    msg = config_error(base | {"sheet": str(dup)})
    assert msg == f"config error at 'input.sheet': duplicated subject IDs in {dup}: s1 (lines 2, 4)"
    # a path leaving the data root fails only that subject (its ingest), and is never handed to a reader
    esc = write_sheet(data / "esc.csv", [["subject", "t1"], ["s1", "s1/t1.nii.gz"], ["s2", "../s2/t1.nii.gz"]])
    cohort, _ = load_cohort(base | {"sheet": str(esc)})
    assert cohort.subjects == ["s1", "s2"] and set(cohort.problems) == {"s2"} and cohort.images["s2"]["t1"] == ""
    assert cohort.problems["s2"] == ("../s2/t1.nii.gz", f"path escapes the data root {data} (input.root; default "
                                                         f"the sheet's folder; line 3 of {esc})")
    # absolute paths too; a wider input.root admits them
    outside = str(tmp_path / "other" / "t1.nii.gz")
    absolute = write_sheet(data / "abs.csv", [["subject", "t1"], ["s1", outside]])
    cohort, _ = load_cohort(base | {"sheet": str(absolute)})
    assert cohort.problems["s1"][0] == outside and "path escapes the data root" in cohort.problems["s1"][1]
    cohort, _ = load_cohort(base | {"sheet": str(absolute), "root": str(tmp_path)})
    assert cohort.images["s1"]["t1"] == outside and not cohort.problems
    nocol = write_sheet(data / "nocol.csv", [["subject", "T1"], ["s1", "a.nii.gz"]])
    assert ("config error at 'input.modalities': ['t1'] are not columns of"
            in config_error(base | {"sheet": str(nocol)}))
    nolabel = write_sheet(data / "nolabel.csv", [["subject", "t1"], ["s1", "a.nii.gz"]])
    assert "config error at 'input.label': no label column 'seg'" in config_error(base | {"sheet": str(nolabel),
                                                                                          "label": "seg"})
    assert config_error(base) == ("config error at 'input.sheet': the sheet layout needs input.sheet "
                                   "(a CSV/TSV file)")


def test_sheet_of_10000_subjects_parses_fast_without_touching_files(tmp_path):
    """The DAG of a large cohort is built from the sheet alone: no file it names needs to exist."""
    rows = [["subject", "t1", "t2", "seg"]] + [[f"s{i:05d}", f"s{i:05d}/t1.nii.gz", f"s{i:05d}/t2.nii.gz",
                                                f"s{i:05d}/seg.nii.gz"] for i in range(10_000)]
    sheet = write_sheet(tmp_path / "big.csv", rows)
    t0 = time.perf_counter()
    cohort, _ = load_cohort({"layout": "sheet", "sheet": str(sheet), "modalities": ["t1", "t2"]})
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
    cohort, _ = load_cohort({"layout": "folders", "root": str(tmp_path / "data"), "modalities": ["t1"], "extension": "",
                         "label": None})
    assert cohort.subjects == ["p1"] and cohort.images["p1"] == {"t1": str(tmp_path / "data" / "p1" / "t1")}
    assert np.array_equal(sitk.GetArrayFromImage(read_image(cohort.images["p1"]["t1"], "p1")),
                          sitk.GetArrayFromImage(img))


def test_layout_enum_error_lists_the_layouts():
    msg = config_error({"layout": "nnunet"})
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


def test_example_configs_are_valid():
    """The layout examples validate against the schema (their data paths are placeholders)."""
    import yaml

    from voxflow.settings import validate_config

    for name, layout in [("sheet", "sheet"), ("brats", "brats"), ("msd", "msd"), ("bids", "bids"),
                         ("dicom_folders", "folders"), ("demo_qc_faults", "demo"),
                         ("brats2018_sample", "brats"), ("demo_configurations", "demo")]:
        cfg = validate_config(yaml.safe_load((PROJECT / "config" / "examples" / f"{name}.yaml").read_text()), SCHEMA)
        assert cfg["input"]["layout"] == layout, name
