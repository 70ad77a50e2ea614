"""Ingest (voxflow.preprocess.ingest): a valid subject is reoriented without moving it in space; every kind
of broken input gives one InputError line naming subject, file and problem, and writes nothing."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from support.outputs import files_under

SUBJECT = "sub-007"
MODS = ["t1", "t2", "flair"]
SHAPE = (24, 28, 20)
AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -40], [0, 0, 2.5, -20], [0, 0, 0, 1]])  # LAS, like many scanners
LABEL_VALUES = {0, 1, 2, 4}


def _head(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    zz = np.indices(SHAPE)
    ball = sum(((g - (s - 1) / 2) / (s / 2.6)) ** 2 for g, s in zip(zz, SHAPE)) < 1
    return ball * 600 + ndi.gaussian_filter(rng.normal(size=SHAPE), 1.5) * 80 + 50


def _save(path: Path, data: np.ndarray, affine=AFFINE) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


@pytest.fixture
def subject_dir(tmp_path) -> Path:
    """A valid subject: int16 t1 and flair, float32 t2, uint8 seg (BraTS values) on the t1 grid."""
    d = tmp_path / "raw" / SUBJECT
    d.mkdir(parents=True)
    _save(d / "t1.nii.gz", _head(1).astype(np.int16))
    _save(d / "t2.nii.gz", _head(2).astype(np.float32))
    _save(d / "flair.nii.gz", _head(3).astype(np.int16))
    seg = np.zeros(SHAPE, np.uint8)
    seg[10:14, 12:16, 8:12] = 2
    seg[11:13, 13:15, 9:11] = 4
    seg[12, 14, 10] = 1
    _save(d / "seg.nii.gz", seg)
    return d


def _ingest(d: Path, out: Path, label_values=LABEL_VALUES):
    from voxflow.preprocess.ingest import ingest_subject

    return ingest_subject(SUBJECT, {m: str(d / f"{m}.nii.gz") for m in MODS},
                          {m: str(out / f"{m}.nii.gz") for m in MODS}, "t1",
                          label=str(d / "seg.nii.gz"), out_label=str(out / "label.nii.gz"),
                          label_values=label_values)


def test_valid_subject_is_reoriented_in_place(subject_dir, tmp_path):
    import SimpleITK as sitk

    out = tmp_path / "out"
    info = _ingest(subject_dir, out)
    assert sorted(p.name for p in files_under(out)) == sorted([f"{m}.nii.gz" for m in MODS] + ["label.nii.gz"])
    assert set(info["modalities"]) == set(MODS)
    for name in MODS + ["seg"]:
        src = sitk.ReadImage(str(subject_dir / f"{name}.nii.gz"))
        dst = sitk.ReadImage(str(out / f"{'label' if name == 'seg' else name}.nii.gz"))
        np.testing.assert_allclose(dst.GetDirection(), np.eye(3).ravel(), atol=1e-6)  # canonical (LPS)
        # same physical space: resampling the output onto the input grid gives the input back, exactly
        back = sitk.Resample(dst, src, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0, dst.GetPixelID())
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back),
                                      sitk.GetArrayFromImage(src).astype(sitk.GetArrayFromImage(back).dtype))
    # images keep the scanner's dtype (int16 here: half the bytes to gzip); labels become uint8
    assert (sitk.ReadImage(str(out / "t1.nii.gz")).GetPixelID()
            == sitk.ReadImage(str(subject_dir / "t1.nii.gz")).GetPixelID())
    assert sitk.ReadImage(str(out / "label.nii.gz")).GetPixelID() == sitk.sitkUInt8


# --- broken inputs: each case damages one file of the valid subject -------------------------------------------

def _missing_label(d):
    (d / "seg.nii.gz").unlink()
    return "seg.nii.gz", r"missing"


def _missing_modality(d):
    (d / "flair.nii.gz").unlink()
    return "flair.nii.gz", r"flair.*missing"


def _truncated(d):
    p = d / "t2.nii.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return "t2.nii.gz", r"truncated"


def _two_d(d):
    _save(d / "t1.nii.gz", _head(1)[:, :, 10].astype(np.int16))
    return "t1.nii.gz", r"\b2D\b"


def _four_d(d):
    vol = _head(3).astype(np.int16)
    _save(d / "flair.nii.gz", np.stack([vol, vol, vol], axis=-1))
    return "flair.nii.gz", r"\b4D\b"


def _grid_mismatch(d):
    seg = np.asarray(nib.load(d / "seg.nii.gz").dataobj)
    shifted = AFFINE.copy()
    shifted[:3, 3] += [4.0, 0, 0]
    _save(d / "seg.nii.gz", seg, shifted)
    return "seg.nii.gz", r"grid.*does not match"


def _nan_voxels(d):
    t2 = _head(2).astype(np.float32)
    t2[5:7, 5, 5] = np.nan
    t2[8, 8, 8] = np.inf
    _save(d / "t2.nii.gz", t2)
    return "t2.nii.gz", r"\b3 NaN"


def _all_zero(d):
    _save(d / "flair.nii.gz", np.zeros(SHAPE, np.int16))
    return "flair.nii.gz", r"constant"


def _label_values(d):
    seg = np.asarray(nib.load(d / "seg.nii.gz").dataobj).copy()
    seg[0, 0, 0] = 3
    _save(d / "seg.nii.gz", seg)
    return "seg.nii.gz", r"label values \[3\] not in the declared set"


def _label_over_255(d):
    seg = np.asarray(nib.load(d / "seg.nii.gz").dataobj).astype(np.uint16)
    seg[0, 0, 0] = 260  # would wrap to 4 in uint8
    _save(d / "seg.nii.gz", seg)
    return "seg.nii.gz", r"260.*outside 0\.\.255"


def _non_orthogonal(d):
    sheared = AFFINE.copy()
    sheared[0, 1] = 0.8  # columns no longer orthogonal
    _save(d / "t1.nii.gz", _head(1).astype(np.int16), sheared)
    return "t1.nii.gz", r"non-orthogonal direction"


def _zero_spacing(d):
    """pixdim[1] = 0 written into the raw header (nibabel and ITK both "fix" it to 1 on the way)."""
    p = d / "t1.nii.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    struct.pack_into("<f", raw, 80, 0.0)  # pixdim[1]: offset 76 + 4 bytes
    raw[252:256] = struct.pack("<hh", 1, 0)  # qform (which uses pixdim) only
    p.write_bytes(gzip.compress(bytes(raw)))
    assert nib.Nifti1Header.from_fileobj(gzip.open(p), check=False)["pixdim"][1] == 0
    return "t1.nii.gz", r"spacing"


CASES = {f.__name__.lstrip("_"): f for f in (
    _missing_label, _missing_modality, _truncated, _two_d, _four_d, _grid_mismatch, _nan_voxels, _all_zero,
    _label_values, _label_over_255, _non_orthogonal, _zero_spacing)}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_input_one_line_and_nothing_written(case, subject_dir, tmp_path):
    from voxflow.inputs.images import InputError

    file_name, problem = CASES[case](subject_dir)
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        _ingest(subject_dir, out)
    msg = str(info.value)
    assert "\n" not in msg, "one line"
    assert f"subject={SUBJECT}" in msg
    assert Path(info.value.file).name == file_name and file_name in msg
    assert re.search(problem, msg, re.IGNORECASE), f"{case}: {msg!r} does not say {problem!r}"
    assert files_under(out) == [], "nothing may be written for a broken subject"


def test_single_volume_4d_is_accepted(subject_dir, tmp_path):
    _save(subject_dir / "t2.nii.gz", _head(2).astype(np.float32)[..., None])
    _ingest(subject_dir, tmp_path / "out")
    assert (tmp_path / "out" / "t2.nii.gz").is_file()
