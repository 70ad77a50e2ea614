"""Image I/O with validation and atomic writes.

Every reader here turns a defect into one `InputError` line that names the subject, the file
and the problem, because on a 900-subject cohort the user needs to know *which* scan is broken
without reading a traceback. Every writer writes to a temporary name in the destination folder
and renames, so that a killed job never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from voxflow.errors import InputError  # also re-exported: the readers' one error
from voxflow.inputs.formats import itk_read, orthonormal
from voxflow.core.atomic import atomic_path


def write_image(img: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write a SimpleITK image atomically (gzip level 1: 3x faster than the default, ~same size)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), compress, 1)


def write_ants(img, path: str | os.PathLike) -> None:
    """Write an ANTs image atomically."""
    with atomic_path(path) as tmp:
        img.to_file(str(tmp))


def _itk_reason(exc: Exception) -> str:
    """The informative line of a SimpleITK exception (ITK writes 'ITK ERROR: ...'), without the prefix."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "unreadable")
    return line.split("ERROR:", 1)[-1].strip() or "unreadable"


def _read_dicom_series(d: Path, subject: str, what: str) -> sitk.Image:
    """A folder holding exactly one DICOM series, slices ordered by GDCM along the slice normal.

    ITK stacks whatever slices it is given (a missing slice only prints a warning) and takes the
    spacing from the first two, so the slice positions are checked here: evenly spaced, no
    duplicates. Patient tags are not loaded into the image (no metadata dictionary is read), so
    nothing identifying can reach the outputs through it.
    """
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d))
    if not series:
        raise InputError(subject, d, f"{what} folder holds no DICOM series")
    if len(series) > 1:
        raise InputError(subject, d, f"{what} folder holds {len(series)} DICOM series ({', '.join(series[:3])}"
                                     f"{', ...' if len(series) > 3 else ''}); put one series per folder")
    files = _series_files(d, series[0])
    if len(files) < 2:
        raise InputError(subject, d, f"{what} DICOM series has {len(files)} slice: a 3D volume needs at least 2")
    positions = []
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        r.ReadImageInformation()
        positions.append(r.GetOrigin())
    pos = np.array(positions, dtype=np.float64)
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    if steps.min() < 1e-3:
        raise InputError(subject, d, f"{what} DICOM series has slices at the same position (duplicated slices?)")
    if steps.max() - steps.min() > max(0.01 * steps.min(), 1e-3):
        raise InputError(subject, d, f"{what} DICOM series has uneven slice spacing ({steps.min():.3g} to "
                                     f"{steps.max():.3g} mm: missing slices?)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _series_files(d: Path, series: str) -> list[str]:
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), series))


def read_raw(path: str | os.PathLike) -> sitk.Image:
    """A raw input as stored, unchecked (file or DICOM series folder): the grid that native-space
    outputs copy. Its input already passed `read_image` at ingest."""
    p = Path(path)
    if not p.is_dir():  # gzip NIfTI named .nii, NIfTI-2, compressed MetaImage: read as read_image does
        return itk_read(p, "-", "image", voxels=True, check=False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(_series_files(p, sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p))[0]))
    return reader.Execute()


class Grid(NamedTuple):
    """An image's 3D geometry from its header alone; has the getters `same_grid`/`grid_summary` use."""

    size: tuple
    spacing: tuple
    origin: tuple
    direction: tuple

    def GetSize(self):  # noqa: N802 - SimpleITK's getter names, so images and grids mix
        return self.size

    def GetSpacing(self):  # noqa: N802
        return self.spacing

    def GetOrigin(self):  # noqa: N802
        return self.origin

    def GetDirection(self):  # noqa: N802
        return self.direction


def check_geometry(subject: str, p: Path, what: str, size, spacing, origin, direction, components: int = 1) -> Grid:
    """The checks that need only the header (shared by `read_image` and the header pass of
    `voxflow validate`): scalar, 3D (a 4D image with one volume counts as 3D), at least 2 voxels per
    axis, spacing positive and plausible for MRI/CT (0.01-20 mm), finite origin, orthonormal direction."""
    if components != 1:
        raise InputError(subject, p, f"{what} has {components} components per voxel, expected a scalar image")
    size, dim = tuple(size), len(size)
    if dim == 4 and size[3] == 1:
        dim, size = 3, size[:3]
        spacing, origin = tuple(spacing)[:3], tuple(origin)[:3]
        direction = tuple(np.array(direction, dtype=np.float64).reshape(4, 4)[:3, :3].ravel())
    if dim != 3:
        raise InputError(subject, p, f"{what} is {dim}D with size {size}, expected a 3D volume")
    if min(size) < 2:
        raise InputError(subject, p, f"{what} has size {size}: a 3D volume needs at least 2 voxels per axis")
    sp = np.array(spacing, dtype=np.float64)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(subject, p, f"{what} has invalid voxel spacing {tuple(sp.round(4).tolist())}")
    if np.any(sp > 20) or np.any(sp < 0.01):  # < 0.01: metres written as millimetres
        raise InputError(subject, p, f"{what} has implausible voxel spacing {tuple(sp.round(4).tolist())} mm")
    if not np.all(np.isfinite(origin)):
        raise InputError(subject, p, f"{what} has a non-finite origin {tuple(float(o) for o in origin)}")
    d = np.array(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(d)) or not orthonormal(d):
        raise InputError(subject, p, f"{what} has non-orthogonal direction cosines "
                                     f"{tuple(d.round(3).ravel().tolist())}")
    return Grid(size, tuple(spacing), tuple(origin), tuple(direction))


def _unreadable(subject: str, p: Path, what: str, exc: RuntimeError) -> InputError:
    detail = _itk_reason(exc)
    if "orthonormal" in detail:  # ITK's NIfTI reader refuses sheared/scaled qform and sform
        return InputError(subject, p, f"{what} has non-orthogonal direction cosines (ITK: {detail[:120]})")
    return InputError(subject, p, f"cannot read {what} (truncated or corrupt?): {detail[:160]}")


def _check_file(p: Path, subject: str, what: str) -> None:
    if not p.exists():
        raise InputError(subject, p, f"{what} file is missing")
    if not p.is_dir() and p.stat().st_size == 0:
        raise InputError(subject, p, f"{what} file is empty")


def read_header(path: str | os.PathLike, subject: str, *, what: str = "image") -> Grid | None:
    """`read_image`'s checks that need no voxel data (milliseconds for a .nii.gz: the header is at
    the start of the gzip stream; a data file's presence and raw data's size need no decoding either), with the
    same messages. None for a DICOM series folder, whose checks need every slice's header: `read_image` does them."""
    p = Path(path)
    _check_file(p, subject, what)
    if p.is_dir():
        return None
    try:
        reader = itk_read(p, subject, what, voxels=False)
    except RuntimeError as exc:
        raise _unreadable(subject, p, what, exc) from None
    _check_pixel_type(subject, p, what, reader.GetPixelID())  # first: a complex voxel counts 2 components here
    return check_geometry(subject, p, what, reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(),
                          reader.GetDirection(), reader.GetNumberOfComponents())


def read_image(path: str | os.PathLike, subject: str, *, what: str = "image",
               allow_constant: bool = False) -> sitk.Image:
    """Read a 3D scalar image with SimpleITK and check it is usable.

    `path` is a file in any SimpleITK format (NIfTI, NRRD, MHA, a DICOM file) or a folder holding
    one DICOM series. Checks: the file exists and holds every voxel byte its header announces, whatever
    its name says (see `voxflow.inputs.formats.itk_read`), the header checks of `check_geometry` (3D, scalar, spacing,
    orientation), real finite voxels, and the image is not constant (an all-zero scan is a failed
    export, not data). 64-bit integer voxels come back narrowed (`_narrow`), the values unchanged.
    """
    p = Path(path)
    _check_file(p, subject, what)
    try:
        if p.is_dir():
            img = _read_dicom_series(p, subject, what)
        else:
            img = itk_read(p, subject, what, voxels=True)
    except RuntimeError as exc:
        raise _unreadable(subject, p, what, exc) from None
    _check_pixel_type(subject, p, what, img.GetPixelID())
    check_geometry(subject, p, what, img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection(),
                   img.GetNumberOfComponentsPerPixel())
    if img.GetDimension() == 4:  # one volume (check_geometry refused any other 4D image)
        img = img[:, :, :, 0]
    arr = sitk.GetArrayViewFromImage(img)
    if np.issubdtype(arr.dtype, np.floating):
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        if n_bad:
            raise InputError(subject, p, f"{what} has {n_bad} NaN/Inf voxels")
    if not allow_constant and arr.min() == arr.max():
        raise InputError(subject, p, f"{what} is constant (all voxels = {arr.flat[0]}): empty or failed export")
    return _narrow(img)


def _check_pixel_type(subject: str, p: Path, what: str, pixel_id: int) -> None:
    if pixel_id in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(subject, p, f"{what} has complex voxels ({sitk.GetPixelIDValueAsString(pixel_id)}), "
                                     "expected real values")


def _narrow(img: sitk.Image) -> sitk.Image:
    """64-bit integer voxels (which ANTs cannot read: antspyx maps no pixel type to ITK's long) in the first
    of int16, uint16, int32, uint32 that holds their range, else float64: same values, a type every step reads."""
    if img.GetPixelID() not in (sitk.sitkInt64, sitk.sitkUInt64):
        return img
    arr = sitk.GetArrayViewFromImage(img)
    lo, hi = int(arr.min()), int(arr.max())
    for pixel_id, dtype in ((sitk.sitkInt16, np.int16), (sitk.sitkUInt16, np.uint16), (sitk.sitkInt32, np.int32),
                            (sitk.sitkUInt32, np.uint32)):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return sitk.Cast(img, pixel_id)
    return sitk.Cast(img, sitk.sitkFloat64)


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    """True if two images share size, spacing, origin and direction (within `tol` mm)."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 10)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def grid_summary(img: sitk.Image) -> str:
    return (f"size {img.GetSize()}, spacing {tuple(round(s, 3) for s in img.GetSpacing())}, "
            f"origin {tuple(round(o, 1) for o in img.GetOrigin())}")
