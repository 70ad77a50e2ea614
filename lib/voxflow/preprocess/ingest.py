"""Ingest: read any SimpleITK-readable scan, validate it, and store it in canonical orientation.

Canonical orientation (identity direction in ITK's LPS world) means every later stage sees the
same axis order, whatever the scanner wrote; the physical space is unchanged, so transforms
estimated later still apply to the raw files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk

from voxflow.inputs.images import InputError, grid_summary, read_image, same_grid, write_image

CANONICAL = "LPS"


def canonical(img: sitk.Image) -> sitk.Image:
    """Permute/flip axes so the direction matrix is as close to identity as possible."""
    return sitk.DICOMOrient(img, CANONICAL)


def _direction(grid) -> str:
    return "(" + ",".join(f"{round(v, 3) + 0.0:g}" for v in grid.GetDirection()) + ")"


def check_label_grid(label, reference, subject: str, path: str) -> None:
    """The label must lie on the reference grid (images or header `Grid`s). When the directions differ,
    the message shows them and names what differs (size, spacing and origin alone may look identical)."""
    if same_grid(label, reference):
        return
    a, b = f"label grid ({grid_summary(label)}", f"the reference image ({grid_summary(reference)}"
    if not np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-3):
        differ = [name for name, same in (
            ("sizes", tuple(label.GetSize()) == tuple(reference.GetSize())),
            ("spacings", np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-3)),
            ("origins", np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-2))) if not same]
        raise InputError(subject, path, f"{a}, direction {_direction(label)}) does not match {b}, direction "
                                        f"{_direction(reference)}): {' and '.join(differ + ['directions'])} differ")
    raise InputError(subject, path, f"{a}) does not match {b})")


def check_label_values(label: sitk.Image, subject: str, path: str, allowed: set[int] | None) -> None:
    """Integer values in 0..255 (stored as uint8), all in the declared set when there is one."""
    arr = sitk.GetArrayViewFromImage(label)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(subject, path, "label has non-integer values")
    values = set(int(v) for v in np.unique(arr))
    if min(values) < 0 or max(values) > 255:  # stored as uint8: anything else would wrap silently
        raise InputError(subject, path, f"label values {sorted(v for v in values if not 0 <= v <= 255)} "
                                        "outside 0..255")
    if allowed is not None and not values <= allowed:
        raise InputError(subject, path,
                         f"label values {sorted(values - allowed)} not in the declared set {sorted(allowed)}")


def check_label(label: sitk.Image, reference: sitk.Image, subject: str, path: str,
                allowed: set[int] | None) -> sitk.Image:
    """The label must lie on the reference grid and hold only declared integer values."""
    check_label_grid(label, reference, subject, path)
    check_label_values(label, subject, path, allowed)
    return sitk.Cast(label, sitk.sitkUInt8)


def ingest_subject(subject: str, images: Mapping[str, str], out_images: Mapping[str, str],
                   reference: str, label: str | None = None, out_label: str | None = None,
                   label_values: set[int] | None = None, modality_types: Mapping[str, str] | None = None,
                   missing: Mapping[str, str] | None = None) -> dict:
    """Validate every modality (and the label), reorient, write float32 NIfTI.

    Raises InputError on the first problem; nothing is written for the subject in that case,
    because all files are checked before the first write. `missing` (input.missing: synthesize): modality -> why;
    the reference image stands in for each (so that every later step finds its file), info.json names them, and
    to_zarr writes zeros in their channels until the synthesis model fills them (voxflow.inputs.missing).
    """
    modality_types = modality_types or {}
    missing = dict(missing or {})
    if reference in missing:
        raise InputError(subject, None, f"reference modality '{reference}' is missing: it cannot be synthesized")
    loaded: dict[str, sitk.Image] = {}
    for mod, path in images.items():
        if mod in missing:
            continue
        if not path:
            raise InputError(subject, None, f"modality '{mod}' is missing for this subject")
        # kept in the scanner's dtype (int16 gzips twice as fast as float32); later steps read float
        loaded[mod] = read_image(path, subject, what=f"{mod} image")
    if reference not in loaded:
        raise InputError(subject, None, f"reference modality '{reference}' is missing")
    lab = None
    if label is not None:
        lab_img = read_image(label, subject, what="label", allow_constant=True)
        lab = check_label(lab_img, loaded[reference], subject, label, label_values)
    info: dict[str, Any] = {"subject": subject, "modalities": {}, **({"missing": missing} if missing else {})}
    for mod in missing:  # the stand-in: the reference image, so that coreg, N4 and the rest run unchanged
        loaded[mod] = loaded[reference]
    loaded = {m: loaded[m] for m in images}  # the configured order
    for mod, img in loaded.items():
        write_image(canonical(img), out_images[mod])
        info["modalities"][mod] = {"source": "" if mod in missing else str(images[mod]), "size": img.GetSize(),
                                   "spacing": img.GetSpacing(), "type": modality_types.get(mod, "mr")}
    if lab is not None and out_label:
        write_image(canonical(lab), out_label)
    return info
