"""Ingest: read any SimpleITK-readable scan, validate it, and store it in canonical orientation.

Canonical orientation (identity direction in ITK's LPS world) means every later stage sees the
same axis order, whatever the scanner wrote; the physical space is unchanged, so transforms
estimated later still apply to the raw files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import SimpleITK as sitk

from voxflow.inputs.images import InputError, read_image, write_image
from voxflow.inputs.validate import check_label_grid, check_label_values
from voxflow.settings.model import modality_type

CANONICAL = "LPS"


def canonical(img: sitk.Image) -> sitk.Image:
    """Permute/flip axes so the direction matrix is as close to identity as possible."""
    return sitk.DICOMOrient(img, CANONICAL)


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
                                   "spacing": img.GetSpacing(), "type": modality_type(modality_types, mod)}
    if lab is not None and out_label:
        write_image(canonical(lab), out_label)
    return info
