"""Input formats and odd-but-valid inputs: every format that `voxflow.inputs.images.read_header`/`read_image` accept is
checked against its own header, whatever the extension says (ITK alone zero-fills or half-reads some of them:
`test_itk_alone_misreads` shows it), odd data types and NIfTI-2 are read with the right voxels, and valid but
suspicious scans come out of `voxflow.inputs.validate.check_subject` as warnings that do not stop ingest.

Small synthetic 20x24x16 images written by SimpleITK or nibabel, then cut with truncate.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from voxflow.inputs.images import InputError, read_header, read_image
from voxflow.inputs.validate import check_subject

SIZE = (20, 24, 16)  # x, y, z
N = 20 * 24 * 16
NBYTES = N * 2  # int16 voxels
SPACING = (1.0, 1.1, 1.2)
ORIGIN = (3.0, -4.0, 5.0)


def _array(dtype=np.int16) -> np.ndarray:
    return np.random.default_rng(0).integers(1, 1000, size=SIZE[::-1]).astype(dtype)  # z, y, x


def _image(arr: np.ndarray | None = None) -> sitk.Image:
    img = sitk.GetImageFromArray(_array() if arr is None else arr)
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    return img


def _write(img: sitk.Image, path: Path, compress: bool = False) -> Path:
    sitk.WriteImage(img, str(path), compress)
    return path


def _cut(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _problem(path: Path, what: str = "t1 image") -> str:
    """read_image's one-line problem for path (fails the test when it reads)."""
    with pytest.raises(InputError) as exc:
        read_image(path, "s1", what=what)
    assert exc.value.subject == "s1" and exc.value.file == str(path)
    return exc.value.problem


def _header_problem(path: Path, what: str = "t1 image") -> str:
    with pytest.raises(InputError) as exc:
        read_header(path, "s1", what=what)
    return exc.value.problem


def _reads_right(path: Path, arr: np.ndarray | None = None, geometry: bool = True) -> sitk.Image:
    img = read_image(path, "s1", what="t1 image")
    expected = _array() if arr is None else arr
    got = sitk.GetArrayFromImage(img)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    if geometry:
        assert np.allclose(img.GetSpacing(), SPACING) and np.allclose(img.GetOrigin(), ORIGIN)
        assert np.allclose(img.GetDirection(), np.eye(3).ravel())
    assert read_header(path, "s1", what="t1 image").size == SIZE
    return img


def _one_row(tmp_path: Path, path: Path, voxels: bool = True):
    rows = check_subject("s1", {"t1": str(path)}, None, "t1", voxels=voxels)
    assert len(rows) == 1, rows
    assert rows[0].subject == "s1" and rows[0].file == str(path) and rows[0].severity == "error"
    return rows[0]


# --- NIfTI whatever its name says ---------------------------------------------------------------------------------

def _plain_nifti(tmp_path: Path, name: str) -> Path:
    """An uncompressed NIfTI-1 file named `name`."""
    p = _write(_image(), tmp_path / "plain.nii")
    return Path(shutil.move(p, tmp_path / name))


def _gzip_nifti(tmp_path: Path, name: str) -> Path:
    p = _write(_image(), tmp_path / "packed.nii.gz", compress=True)
    return Path(shutil.move(p, tmp_path / name))


def test_uncompressed_nifti_named_nii_gz_reads(tmp_path):
    p = _plain_nifti(tmp_path, "t1.nii.gz")
    assert p.read_bytes()[:2] != b"\x1f\x8b"
    _reads_right(p)


def test_uncompressed_nifti_named_nii_gz_truncated(tmp_path):
    p = _plain_nifti(tmp_path, "t1.nii.gz")
    _cut(p, 352 + NBYTES - 3000)
    msg = (rf"^t1 image file is truncated \({352 + NBYTES - 3000} of the {352 + NBYTES} bytes that the NIfTI header "
           r"announces\)$")
    assert re.match(msg, _problem(p))
    assert re.match(msg, _one_row(tmp_path, p, voxels=False).problem)  # a size check: found from the header pass


def test_gzip_nifti_named_nii_reads(tmp_path):
    p = _gzip_nifti(tmp_path, "t1.nii")
    assert p.read_bytes()[:2] == b"\x1f\x8b"
    _reads_right(p)


def test_gzip_nifti_named_nii_truncated(tmp_path):
    p = _gzip_nifti(tmp_path, "t1.nii")
    _cut(p, p.stat().st_size // 2)
    assert re.match(rf"^t1 image file is truncated or corrupt \(its gzip stream ends before the {352 + NBYTES} bytes "
                    r"that the NIfTI header announces\)$", _problem(p))


def test_gzip_nifti_damaged_but_full_length(tmp_path):
    """Bytes flipped in the middle of the stream: the gzip CRC, checked to the end of the stream, catches it."""
    p = _write(_image(), tmp_path / "t1.nii.gz", compress=True)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    p.write_bytes(bytes(raw))
    assert re.match(r"^t1 image file is (truncated or )?corrupt \(its gzip stream", _problem(p))


# --- Analyze / NIfTI .hdr + .img pairs ----------------------------------------------------------------------------

def _pair(tmp_path: Path) -> tuple[Path, Path]:
    hdr = _write(_image(), tmp_path / "t1.hdr")
    return hdr, tmp_path / "t1.img"


def test_hdr_img_pair_reads(tmp_path):
    hdr, img = _pair(tmp_path)
    _reads_right(hdr)
    _reads_right(img)  # ITK also takes the pair by its .img


def test_hdr_img_pair_img_missing(tmp_path):
    hdr, img = _pair(tmp_path)
    img.unlink()
    msg = rf"^t1 image data file {re.escape(str(img))} is missing$"
    assert re.match(msg, _problem(hdr))
    assert re.match(msg, _one_row(tmp_path, hdr, voxels=False).problem)


def test_hdr_img_pair_img_short(tmp_path):
    hdr, img = _pair(tmp_path)
    _cut(img, 1000)
    msg = (rf"^t1 image data file {re.escape(str(img))} is truncated \(1000 of the {NBYTES} bytes that the header "
           r"announces\)$")
    assert re.match(msg, _problem(hdr))
    assert re.match(msg, _one_row(tmp_path, hdr).problem)
    assert re.match(r"^t1 image file is truncated \(1000 of the", _problem(img))  # given as the .img


def test_analyze_pair_by_nibabel_img_short(tmp_path):
    nib.save(nib.AnalyzeImage(_array().T, np.diag([*SPACING, 1.0])), tmp_path / "t1.hdr")
    _cut(tmp_path / "t1.img", 1000)
    assert re.match(rf"^t1 image data file .*t1\.img is truncated \(1000 of the {NBYTES} bytes",
                    _problem(tmp_path / "t1.hdr"))


# --- MetaImage ----------------------------------------------------------------------------------------------------

def test_mhd_raw_reads(tmp_path):
    _reads_right(_write(_image(), tmp_path / "t1.mhd"))


def test_mhd_raw_missing(tmp_path):
    p = _write(_image(), tmp_path / "t1.mhd")
    (tmp_path / "t1.raw").unlink()
    msg = rf"^t1 image data file {re.escape(str(tmp_path / 't1.raw'))} is missing$"
    assert re.match(msg, _problem(p))
    assert re.match(msg, _header_problem(p))


def test_mhd_raw_short(tmp_path):
    p = _write(_image(), tmp_path / "t1.mhd")
    _cut(tmp_path / "t1.raw", 1000)
    assert re.match(rf"^t1 image data file {re.escape(str(tmp_path / 't1.raw'))} is truncated \(1000 of the {NBYTES} "
                    r"bytes that the header announces\)$", _problem(p))


@pytest.mark.parametrize("name", ["t1.mha", "t1.nrrd"])  # uncompressed MetaImage, NRRD with attached raw data
def test_single_file_raw_short(tmp_path, name):
    p = _write(_image(), tmp_path / name)
    full = p.stat().st_size
    _cut(p, full - 2000)
    assert re.match(rf"^t1 image file is truncated \({full - 2000} of the {full} bytes that the header announces\)$",
                    _problem(p))


def _compressed_mha(tmp_path: Path) -> tuple[Path, int]:
    p = _write(_image(), tmp_path / "t1.mha", compress=True)
    announced = int(re.search(rb"CompressedDataSize = (\d+)", p.read_bytes()).group(1))
    return p, announced


def test_compressed_mha_reads(tmp_path):
    p, _ = _compressed_mha(tmp_path)
    _reads_right(p)


def test_compressed_mha_truncated(tmp_path):
    p, announced = _compressed_mha(tmp_path)
    header = p.stat().st_size - announced
    _cut(p, header + announced // 2)
    assert re.match(rf"^t1 image file is truncated \({announced // 2} of the {announced} compressed bytes that the "
                    r"header announces\)$", _problem(p))


def _without_size(p: Path, keep: float) -> Path:
    """The compressed MHA p without its CompressedDataSize line, keeping a fraction of the compressed data."""
    raw = p.read_bytes()
    end = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    head, data = re.sub(rb"CompressedDataSize = \d+\n", b"", raw[:end]), raw[end:]
    out = p.with_name(f"nosize{keep}.mha")
    out.write_bytes(head + data[: int(len(data) * keep)])
    return out


def test_compressed_mha_without_size_reads(tmp_path):
    """Valid, but ITK's MetaImage reader half-reads it (test_itk_alone_misreads): voxels come from our decoding."""
    p, _ = _compressed_mha(tmp_path)
    _reads_right(_without_size(p, 1.0))


def test_compressed_mha_without_size_truncated(tmp_path):
    p, _ = _compressed_mha(tmp_path)
    short = _without_size(p, 0.5)
    assert re.match(rf"^t1 image file is truncated or corrupt \(its zlib stream ends before the {NBYTES} bytes "
                    r"that the header announces\)$", _problem(short))


def test_compressed_mhd_zraw_truncated(tmp_path):
    p = _write(_image(), tmp_path / "t1.mhd", compress=True)
    zraw = tmp_path / "t1.zraw"
    full = zraw.stat().st_size
    _cut(zraw, full // 2)
    assert re.match(rf"^t1 image data file {re.escape(str(zraw))} is truncated \({full // 2} of the {full} compressed "
                    r"bytes that the header announces\)$", _problem(p))


# --- NRRD with detached data --------------------------------------------------------------------------------------

def _nhdr(tmp_path: Path, compress: bool = False) -> tuple[Path, Path]:
    p = _write(_image(), tmp_path / "t1.nhdr", compress)
    name = re.search(r"^data file: (.+)$", p.read_text(), re.M).group(1)
    return p, tmp_path / name


def test_nrrd_detached_raw_reads(tmp_path):
    p, data = _nhdr(tmp_path)
    assert data.name == "t1.raw"
    _reads_right(p)


def test_nrrd_detached_old_datafile_spelling_reads(tmp_path):
    p, _ = _nhdr(tmp_path)
    p.write_text(p.read_text().replace("data file:", "datafile:"))
    _reads_right(p)


def test_nrrd_detached_data_missing(tmp_path):
    p, data = _nhdr(tmp_path)
    data.unlink()
    msg = rf"^t1 image data file {re.escape(str(data))} is missing$"
    assert re.match(msg, _problem(p))
    assert re.match(msg, _header_problem(p))


def test_nrrd_detached_raw_short(tmp_path):
    p, data = _nhdr(tmp_path)
    _cut(data, 1000)
    assert re.match(rf"^t1 image data file {re.escape(str(data))} is truncated \(1000 of the {NBYTES} bytes that the "
                    r"header announces\)$", _problem(p))


def test_nrrd_detached_gzip_reads(tmp_path):
    p, data = _nhdr(tmp_path, compress=True)
    assert data.name == "t1.raw.gz"
    _reads_right(p)


def test_nrrd_detached_gzip_short(tmp_path):
    p, data = _nhdr(tmp_path, compress=True)
    _cut(data, data.stat().st_size // 2)
    assert re.match(rf"^t1 image data file {re.escape(str(data))} is truncated or corrupt \(its gzip stream ends "
                    rf"before the {NBYTES} bytes that the header announces\)$", _problem(p))


# --- what ITK alone does with these files -------------------------------------------------------------------------

def test_itk_alone_misreads(tmp_path):
    """Why the checks above exist: SimpleITK reads these without an error, with zeros for the missing voxels
    (a valid compressed MHA without CompressedDataSize: with voxels that vary from read to read), or cannot
    open a valid file. If this test fails, ITK changed; the checks stay harmless."""
    a = _array()
    short_nii = _plain_nifti(tmp_path, "t1.nii.gz")
    _cut(short_nii, 352 + NBYTES - 3000)
    hdr, img = _pair(tmp_path)
    _cut(img, 1000)
    for p, zeros in ((short_nii, 1500), (hdr, N - 500)):
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        assert got.shape == a.shape and (got == 0).sum() == zeros and np.array_equal(got[got != 0], a[got != 0]), p
    mha, _ = _compressed_mha(tmp_path)
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(_without_size(mha, 1.0))))
    assert got.shape == a.shape and not np.array_equal(got, a)
    for p in (_gzip_nifti(tmp_path, "t1gz.nii"), _nifti2(tmp_path, "t1v2.nii")):
        with pytest.raises(RuntimeError):
            sitk.ReadImage(str(p))


# --- NIfTI-2 ------------------------------------------------------------------------------------------------------

AFFINE = np.array([[0.0, 0.0, 1.2, 5.0], [-1.0, 0.0, 0.0, 4.0], [0.0, 1.1, 0.0, -3.0], [0.0, 0.0, 0.0, 1.0]])


def _nifti2(tmp_path: Path, name: str, cls=nib.Nifti2Image) -> Path:
    img = cls(_array().T, AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=2)
    nib.save(img, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("name", ["t1.nii", "t1.nii.gz"])
def test_nifti2_reads_like_nifti1(tmp_path, name):
    p = _nifti2(tmp_path, name)
    assert p.read_bytes()[:4] != b"\x1c\x02\x00\x00" or name == "t1.nii"
    n1 = sitk.ReadImage(str(_nifti2(tmp_path, "v1" + name[2:], nib.Nifti1Image)))
    img = read_image(p, "s1", what="t1 image")
    assert np.array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(n1))
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert np.allclose(getattr(img, get)(), getattr(n1, get)()), get
    assert not np.allclose(img.GetDirection(), np.eye(3).ravel())  # the header's rotation was used
    assert read_header(p, "s1", what="t1 image").size == n1.GetSize()


def test_nifti2_truncated(tmp_path):
    p = _nifti2(tmp_path, "t1.nii")
    assert p.stat().st_size == 544 + NBYTES
    _cut(p, 544 + NBYTES - 3000)
    assert re.match(rf"^t1 image file is truncated \({544 + NBYTES - 3000} of the {544 + NBYTES} bytes that the NIfTI "
                    r"header announces\)$", _problem(p))


def test_nifti2_gzip_truncated(tmp_path):
    p = _nifti2(tmp_path, "t1.nii.gz")
    _cut(p, p.stat().st_size // 2)
    assert re.match(rf"^t1 image file is truncated or corrupt \(its gzip stream ends before the {544 + NBYTES} bytes",
                    _problem(p))


# --- data types ---------------------------------------------------------------------------------------------------

def _ingest(tmp_path: Path, name: str, t1: Path, label: Path | None = None) -> dict:
    from voxflow.preprocess.ingest import ingest_subject

    out = tmp_path / name
    ingest_subject("s1", {"t1": str(t1)}, {"t1": str(out / "t1.nii.gz")}, "t1", label=str(label) if label else None,
                   out_label=str(out / "label.nii.gz") if label else None)
    return {k: sitk.ReadImage(str(out / f"{k}.nii.gz")) for k in (["t1", "label"] if label else ["t1"])}


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integer_image_goes_through_ingest(tmp_path, dtype):
    """ANTs cannot read 64-bit integer images (antspyx maps no pixel type to ITK's long): read_image narrows
    them to the smallest type holding their range, so ingest gives the int16 version's voxels."""
    wide = _write(_image(_array(dtype)), tmp_path / "wide.nii.gz", compress=True)
    assert sitk.ReadImage(str(wide)).GetPixelID() in (sitk.sitkInt64, sitk.sitkUInt64)
    img = read_image(wide, "s1", what="t1 image")
    assert img.GetPixelID() == sitk.sitkInt16  # values 1..999
    assert check_subject("s1", {"t1": str(wide)}, None, "t1") == []
    narrow = _write(_image(_array(np.int16)), tmp_path / "narrow.nii.gz", compress=True)
    got, ref = _ingest(tmp_path, "wide", wide)["t1"], _ingest(tmp_path, "narrow", narrow)["t1"]
    assert np.array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref))
    assert got.GetSpacing() == ref.GetSpacing() and got.GetOrigin() == ref.GetOrigin()


def test_64_bit_integer_ingested_image_reads_in_ants(tmp_path):
    import ants

    wide = _write(_image(_array(np.int64)), tmp_path / "wide.nii.gz", compress=True)
    with pytest.raises(KeyError):  # what the later steps would meet without the narrowing
        ants.image_read(str(wide))
    _ingest(tmp_path, "out", wide)
    assert np.array_equal(ants.image_read(str(tmp_path / "out" / "t1.nii.gz")).numpy().T, _array())


def test_large_64_bit_values_keep_their_values(tmp_path):
    arr = _array(np.int64) * 10_000_000  # beyond int32
    img = read_image(_write(_image(arr), tmp_path / "t1.nii.gz", compress=True), "s1", what="t1 image")
    assert img.GetPixelID() == sitk.sitkFloat64 and np.array_equal(sitk.GetArrayFromImage(img), arr)


def test_int64_label(tmp_path):
    lab = (_array() % 3).astype(np.int64)
    label = _write(_image(lab), tmp_path / "seg.nii.gz", compress=True)
    t1 = _write(_image(), tmp_path / "t1.nii.gz", compress=True)
    assert check_subject("s1", {"t1": str(t1)}, str(label), "t1", label_values=[0, 1, 2]) == []
    out = _ingest(tmp_path, "out", t1, label)["label"]
    assert out.GetPixelID() == sitk.sitkUInt8 and np.array_equal(sitk.GetArrayFromImage(out), lab)


def test_complex_image_rejected_with_its_type(tmp_path):
    p = tmp_path / "t1.nii"
    nib.save(nib.Nifti1Image(_array().T.astype(np.complex64), np.eye(4), dtype=np.complex64), p)
    msg = r"^t1 image has complex voxels \(complex of 32-bit float\), expected real values$"
    assert re.match(msg, _problem(p))
    assert re.match(msg, _header_problem(p))


# --- label grids ----------------------------------------------------------------------------------------------------

def test_label_differing_only_in_direction(tmp_path):
    t1 = _write(_image(), tmp_path / "t1.nii.gz", compress=True)
    lab = _image((_array() % 2).astype(np.uint8))
    lab.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    label = _write(lab, tmp_path / "seg.nii.gz", compress=True)
    rows = check_subject("s1", {"t1": str(t1)}, str(label), "t1")
    assert len(rows) == 1 and rows[0].file == str(label) and rows[0].severity == "error"
    assert re.match(r"^label grid \(size \(20, 24, 16\), spacing \(1\.0, 1\.1, 1\.2\), origin \(3\.0, -4\.0, 5\.0\), "
                    r"direction \(1,0,0,0,-1,0,0,0,1\)\) does not match the reference image \(size \(20, 24, 16\), "
                    r"spacing \(1\.0, 1\.1, 1\.2\), origin \(3\.0, -4\.0, 5\.0\), direction \(1,0,0,0,1,0,0,0,1\)\): "
                    r"directions differ$", rows[0].problem), rows[0].problem


def test_label_differing_in_origin_keeps_the_old_message(tmp_path):
    t1 = _write(_image(), tmp_path / "t1.nii.gz", compress=True)
    lab = _image((_array() % 2).astype(np.uint8))
    lab.SetOrigin((11.0, -4.0, 5.0))
    label = _write(lab, tmp_path / "seg.nii.gz", compress=True)
    (row,) = check_subject("s1", {"t1": str(t1)}, str(label), "t1")
    assert re.match(r"^label grid \(size .*\) does not match the reference image \(size .*\)$", row.problem)
    assert "direction" not in row.problem


# --- warnings -------------------------------------------------------------------------------------------------------

def _subject(tmp_path: Path, t2: sitk.Image | None = None, label: np.ndarray | None = None) -> dict:
    d = tmp_path / "s1"
    d.mkdir(exist_ok=True)
    files = {"t1": _write(_image(), d / "t1.nii.gz", compress=True)}
    if t2 is not None:
        files["t2"] = _write(t2, d / "t2.nii.gz", compress=True)
    lab = _write(_image((_array() % 3 if label is None else label).astype(np.uint8)), d / "seg.nii.gz", compress=True)
    return {"images": {k: str(v) for k, v in files.items()}, "label": str(lab)}


def test_thin_slab_by_extent_is_a_warning(tmp_path):
    t2 = sitk.GetImageFromArray(_array()[:3].repeat(3, axis=0)[:9])  # 9 slices of 0.4 mm: 3.6 of 19.2 mm along z
    t2.SetSpacing((1.0, 1.1, 0.4))
    t2.SetOrigin(ORIGIN)
    s = _subject(tmp_path, t2)
    rows = check_subject("s1", s["images"], s["label"], "t1")
    assert len(rows) == 1 and rows[0].severity == "warning" and rows[0].file == s["images"]["t2"]
    assert re.match(r"^t2 image covers 3\.6 mm along world axis z, 19% of the 19\.2 mm of the reference image \(t1\): "
                    r"a thin slab\?$", rows[0].problem), rows[0].problem
    assert check_subject("s1", s["images"], s["label"], "t1", voxels=False) == rows  # from the headers alone


def test_few_slices_is_a_warning(tmp_path):
    t2 = _image(_array()[:4])
    s = _subject(tmp_path, t2)
    (row,) = check_subject("s1", s["images"], s["label"], "t1")
    assert row.severity == "warning"
    assert re.match(r"^t2 image has 4 slices along axis k \(size \(20, 24, 4\)\): a thin slab\?$", row.problem)


def test_full_coverage_is_no_warning(tmp_path):
    t2 = _image(_array()[:, ::2, ::2])  # half the voxels per axis at half the spacing: same extent
    t2.SetSpacing((2.0, 2.2, 1.2))
    s = _subject(tmp_path, t2)
    assert check_subject("s1", s["images"], s["label"], "t1") == []


def test_empty_label_is_a_warning(tmp_path):
    s = _subject(tmp_path, label=np.zeros(SIZE[::-1]))
    (row,) = check_subject("s1", s["images"], s["label"], "t1", label_values=[0, 1, 2])
    assert row == ("s1", s["label"], "label has no foreground (all voxels are 0)", "warning")
    assert check_subject("s1", s["images"], s["label"], "t1", voxels=False) == []  # needs the voxels


def _ingest_step(tmp_path: Path, s: dict, table: Path):
    from voxflow.preprocess.steps import ingest

    out = tmp_path / "ingest"
    cfg = {"expected": {"images": s["images"], "label": s["label"]}, "modalities": list(s["images"]),
           "reference": "t1", "label_values": None, "modality_types": {}}
    outs = {**{f"img_{m}": str(out / f"{m}.nii.gz") for m in s["images"]}, "label": str(out / "label.nii.gz"),
            "info": str(out / "info.json")}
    return ingest("s1", {"validation": str(table)}, outs, cfg), out


def test_warning_only_subject_passes_ingest(tmp_path):
    from voxflow.inputs.validate import read_table, summary, write_table

    t2 = _image(_array()[:4])
    s = _subject(tmp_path, t2, label=np.zeros(SIZE[::-1]))
    rows = check_subject("s1", s["images"], s["label"], "t1")
    assert [r.severity for r in rows] == ["warning", "warning"]
    table = tmp_path / "s1.tsv"
    write_table(rows, table)
    assert read_table(table) == rows
    assert summary(rows, 1) == "voxflow validate: all 1 subjects OK (headers and voxels); 2 warnings"
    info, out = _ingest_step(tmp_path, s, table)
    assert sorted(info["modalities"]) == ["t1", "t2"] and (out / "label.nii.gz").is_file()


def test_ingest_step_fails_with_the_first_error_not_a_warning(tmp_path):
    from voxflow.inputs.validate import Row, write_table

    s = _subject(tmp_path)
    table = tmp_path / "s1.tsv"
    write_table([Row("s1", "a.nii.gz", "a warning", "warning"), Row("s1", "b.nii.gz", "first error"),
                 Row("s1", "c.nii.gz", "second error")], table)
    with pytest.raises(InputError) as exc:
        _ingest_step(tmp_path, s, table)
    assert (exc.value.file, exc.value.problem) == ("b.nii.gz", f"first error (+1 more in {table})")


# --- the table ------------------------------------------------------------------------------------------------------

def test_table_columns_old_tables_and_summary(tmp_path):
    from voxflow.inputs.validate import COLUMNS, Row, format_table, read_table, summary, write_table

    assert COLUMNS == ("subject", "file", "problem", "severity")
    rows = [Row("s1", "t1.nii.gz", "t1 image file is empty"), Row("s2", "t2.nii.gz", "thin\tslab", "warning"),
            Row("s3", "x", "a"), Row("s3", "y", "b")]
    p = tmp_path / "t.tsv"
    write_table(rows, p)
    lines = p.read_text().splitlines()
    assert lines[0] == "subject\tfile\tproblem\tseverity" and lines[2] == "s2\tt2.nii.gz\tthin slab\twarning"
    assert read_table(p)[1] == ("s2", "t2.nii.gz", "thin slab", "warning")
    old = tmp_path / "old.tsv"
    old.write_text("subject\tfile\tproblem\ns1\tt1.nii.gz\tt1 image file is empty\n")
    assert read_table(old) == [("s1", "t1.nii.gz", "t1 image file is empty", "error")]
    write_table([("s1", "t1.nii.gz", "plain 3-tuple")], p)  # 3-tuples are errors
    assert read_table(p) == [("s1", "t1.nii.gz", "plain 3-tuple", "error")]
    assert summary(rows, 10) == ("voxflow validate: 2 of 10 subjects have problems (3 problems; headers and voxels); "
                                 "1 warning")
    assert summary(rows[1:2], 10, voxels=False) == "voxflow validate: all 10 subjects OK (headers only); 1 warning"
    assert summary([], 10) == "voxflow validate: all 10 subjects OK (headers and voxels)"
    text = format_table(rows).splitlines()
    assert text[0].split() == ["subject", "file", "severity", "problem"]
    assert text[2].split() == ["s2", "t2.nii.gz", "warning", "thin", "slab"]
    with pytest.raises(ValueError):
        write_table([("s1", "f", "p", "fatal")], p)


# --- spacing fields of text headers (ITK takes a negative MetaImage spacing as positive: the flip is lost) ------

@pytest.mark.parametrize("value", ["0", "-1"])
def test_metaimage_spacing_not_positive(tmp_path, value):
    p = _write(_image(), tmp_path / "t1.mha")
    text = p.read_bytes()
    line = next(ln for ln in text.split(b"\n") if ln.startswith(b"ElementSpacing"))
    p.write_bytes(text.replace(line, b"ElementSpacing = " + value.encode() + b" 1.1 1.2"))
    shown = f"({float(value)}, 1.1, 1.2)"
    msg = rf"^t1 image has invalid voxel spacing {re.escape(shown)} \(ElementSpacing in the MetaImage header\)$"
    assert re.match(msg, _problem(p)) and re.match(msg, _header_problem(p))


def test_nrrd_zero_space_direction(tmp_path):
    p = _write(_image(), tmp_path / "t1.nrrd")
    text = p.read_bytes()
    line = next(ln for ln in text.split(b"\n") if ln.startswith(b"space directions:"))
    p.write_bytes(text.replace(line, b"space directions: (0,0,0) (0,1.1,0) (0,0,1.2)"))
    assert _problem(p) == "t1 image has invalid voxel spacing (0.0, 1.1, 1.2) (space directions in the NRRD header)"
