"""Image I/O with validation and atomic writes.

Every reader here turns a defect into one `InputError` line that names the subject, the file
and the problem, because on a 900-subject cohort the user needs to know *which* scan is broken
without reading a traceback. Every writer writes to a temporary name in the destination folder
and renames, so that a killed job never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk


class InputError(Exception):
    """A problem with one subject's input, reported as a single line."""

    def __init__(self, subject: str, file: str | os.PathLike | None, problem: str):
        self.subject, self.file, self.problem = subject, str(file) if file else "-", problem
        super().__init__(f"subject={subject} file={self.file}: {problem}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; move it into place only if the block succeeds.

    The temporary name keeps the suffix (``.nii.gz``, ``.zarr``) so that writers that
    dispatch on the extension still work. Works for files and directories.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    stem, dot, ext = name.partition(".")
    tmp = path.with_name(f".{stem}.tmp-{os.getpid()}{dot}{ext}")
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def write_image(img: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write a SimpleITK image atomically (gzip level 1: 3x faster than the default, ~same size)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), compress, 1)


def write_ants(img, path: str | os.PathLike) -> None:
    """Write an ANTs image atomically."""
    with atomic_path(path) as tmp:
        img.to_file(str(tmp))


def _orthonormal(direction: np.ndarray, tol: float = 1e-3) -> bool:
    return bool(np.allclose(direction @ direction.T, np.eye(direction.shape[0]), atol=tol))


def read_image(path: str | os.PathLike, subject: str, *, what: str = "image",
               allow_constant: bool = False) -> sitk.Image:
    """Read a 3D scalar image with SimpleITK and check it is usable.

    Checks: the file exists and decodes fully (a truncated gzip fails here), it is 3D and scalar,
    spacing is positive, direction cosines are orthonormal, voxels are finite, and the image is
    not constant (an all-zero scan is a failed export, not data).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(subject, p, f"{what} file is missing")
    if p.stat().st_size == 0:
        raise InputError(subject, p, f"{what} file is empty")
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line.strip() for line in reason if "rror" in line), "unreadable")
        raise InputError(subject, p, f"cannot read {what} (truncated or corrupt?): {detail[:160]}") from None
    dim = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(subject, p, f"{what} has {img.GetNumberOfComponentsPerPixel()} components per voxel, expected a scalar image")
    if dim == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
        dim = 3
    if dim != 3:
        raise InputError(subject, p, f"{what} is {dim}D with size {img.GetSize()}, expected a 3D volume")
    if min(img.GetSize()) < 2:
        raise InputError(subject, p, f"{what} has size {img.GetSize()}: a 3D volume needs at least 2 voxels per axis")
    spacing = np.array(img.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(subject, p, f"{what} has invalid voxel spacing {tuple(spacing.round(4))}")
    if np.any(spacing > 20):
        raise InputError(subject, p, f"{what} has implausible voxel spacing {tuple(spacing.round(4))} mm")
    direction = np.array(img.GetDirection()).reshape(3, 3)
    if not _orthonormal(direction):
        raise InputError(subject, p, f"{what} has non-orthogonal direction cosines {tuple(direction.round(3).ravel())}")
    arr = sitk.GetArrayViewFromImage(img)
    if np.issubdtype(arr.dtype, np.floating):
        n_bad = int(np.count_nonzero(~np.isfinite(arr)))
        if n_bad:
            raise InputError(subject, p, f"{what} has {n_bad} NaN/Inf voxels")
    if not allow_constant and arr.min() == arr.max():
        raise InputError(subject, p, f"{what} is constant (all voxels = {arr.flat[0]}): empty or failed export")
    return img


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    """True if two images share size, spacing, origin and direction (within `tol` mm)."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 10)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol))


def grid_summary(img: sitk.Image) -> str:
    return (f"size {img.GetSize()}, spacing {tuple(round(s, 3) for s in img.GetSpacing())}, "
            f"origin {tuple(round(o, 1) for o in img.GetOrigin())}")
