"""Native space (preprocess.space: native): crop to the body/foreground and resample to a target spacing.

For CT of the body (liver, kidneys) or any non-brain data an MNI brain template has no meaning:
the subject stays in its own physical space. The reference grid is cropped to the foreground
bounding box plus a margin (CT: the largest connected region above a HU threshold, which drops
air and the scanner table; MR: the skull-stripping mask), then resampled to the target spacing.
A much coarser slice axis (anisotropy above a threshold, e.g. 0.8 x 0.8 x 5 mm) is resampled
separately, as nnU-Net does: in-plane with the smooth interpolator, through-plane by nearest
neighbour, because interpolating across 5 mm slices invents anatomy. Labels and masks are
resampled per class (linear on one-hot maps, then argmax), which keeps class volumes better
than nearest neighbour. The transforms.json written here has the entries the MNI step writes
(an identity transform: the store grid lies in the native physical space), so inference maps
predictions back to the raw grid unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from voxflow.inputs.images import InputError, write_image
from voxflow.core.atomic import atomic_path
from voxflow.core.atomic import write_json_atomic
from voxflow.settings.model import is_ct_modality

INTERPOLATORS = {"linear": sitk.sitkLinear, "bSpline": sitk.sitkBSpline}


def body_mask(arr_zyx: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """CT body: voxels above `threshold_hu`, largest 3D component, holes filled slice by slice.

    Holes are filled per axial slice, not in 3D: lungs and bowel gas touch the first or last
    slice of a body scan, so a 3D fill would see them as outside.
    """
    fg = arr_zyx > threshold_hu
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        fg = lab == int(np.argmax(sizes)) + 1
    return np.stack([ndimage.binary_fill_holes(s) for s in fg])


def crop_box(mask_zyx: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float) -> tuple[slice, ...]:
    """Bounding box of the mask, widened by `margin_mm` on every side, inside the image."""
    idx = np.argwhere(mask_zyx)
    lo, hi = idx.min(0), idx.max(0) + 1
    m = [int(math.ceil(margin_mm / s)) for s in spacing_zyx]
    return tuple(slice(max(0, a - k), min(n, b + k)) for a, b, k, n in zip(lo, hi, m, mask_zyx.shape))


def target_grid(img: sitk.Image, spacing_xyz: Sequence[float]) -> dict:
    """Grid of the same physical extent (outer voxel edges) as `img` at `spacing_xyz`."""
    old_sp, size = np.array(img.GetSpacing()), np.array(img.GetSize())
    new_sp = np.array(spacing_xyz, dtype=float)
    new_size = np.maximum(1, np.round(size * old_sp / new_sp)).astype(int)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    origin = np.array(img.GetOrigin()) + direction @ ((new_sp - old_sp) / 2)
    return {"size": [int(s) for s in new_size], "spacing": new_sp.tolist(), "origin": origin.tolist(),
            "direction": list(img.GetDirection())}


def separate_axis(spacing_xyz: Sequence[float], target_xyz: Sequence[float], threshold: float) -> int | None:
    """nnU-Net's rule: the coarse axis of the source (or else of the target) when its spacing ratio
    exceeds `threshold`; None = one isotropic 3D interpolation."""
    for spacing in (spacing_xyz, target_xyz):
        sp = np.asarray(spacing, dtype=float)
        if sp.max() / sp.min() > threshold:
            return int(np.argmax(sp))
    return None


def _resample(img: sitk.Image, grid: dict, interpolator: int, default: float) -> sitk.Image:
    return sitk.Resample(img, grid["size"], sitk.Transform(), interpolator, grid["origin"], grid["spacing"],
                         grid["direction"], default, img.GetPixelID())


def resample(img: sitk.Image, spacing_xyz: Sequence[float], interpolation: str = "bSpline",
             anisotropy_threshold: float = 3.0, default: float = 0.0) -> tuple[sitk.Image, int | None]:
    """Resample an image to `spacing_xyz`; returns (image, axis resampled separately or None)."""
    axis = separate_axis(img.GetSpacing(), spacing_xyz, anisotropy_threshold)
    final = target_grid(img, spacing_xyz)
    interp = INTERPOLATORS[interpolation]
    if axis is None:
        return _resample(img, final, interp, default), None
    # pass 1: in-plane only (the coarse axis keeps its samples, so the 3D interpolator acts in 2D)
    mid = list(spacing_xyz)
    mid[axis] = img.GetSpacing()[axis]
    img = _resample(img, target_grid(img, mid), interp, default)
    # pass 2: through-plane by nearest neighbour (in-plane positions already coincide)
    return _resample(img, final, sitk.sitkNearestNeighbor, default), axis


def resample_labels(lab: sitk.Image, classes: Sequence[int], spacing_xyz: Sequence[float],
                    anisotropy_threshold: float = 3.0) -> sitk.Image:
    """Label map to `spacing_xyz`: each class as a linear-interpolated one-hot map (through-plane
    nearest on anisotropic data, as for images), then the most likely class per voxel."""
    arr = sitk.GetArrayViewFromImage(lab)
    best: np.ndarray | None = None
    out: np.ndarray | None = None
    total: np.ndarray | None = None
    grid: sitk.Image | None = None
    for c in classes:
        onehot = sitk.GetImageFromArray((arr == c).astype(np.float32))
        onehot.CopyInformation(lab)
        grid, _ = resample(onehot, spacing_xyz, "linear", anisotropy_threshold)
        p = sitk.GetArrayFromImage(grid)
        if best is None:
            best, out, total = p.copy(), np.full(p.shape, c, np.uint8), p
        else:
            assert out is not None and total is not None
            win = p >= best  # ties go to the later (usually the smaller, nested) class, as in nnU-Net
            best[win], out[win] = p[win], c
            total += p
    assert out is not None and total is not None and best is not None, "no classes"
    out[1.0 - total > best] = 0  # foreground wins ties with background, as in nnU-Net
    res = sitk.GetImageFromArray(out)
    res.CopyInformation(grid)
    return res


def write_identity_transforms(xfm_dir: str | Path, extra: dict) -> dict:
    """transforms.json with the MNI step's keys: the store grid is in native physical space, so both
    directions are one identity transform (an ITK .mat that ants.apply_transforms reads)."""
    xfm_dir = Path(xfm_dir)
    xfm_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(xfm_dir / "identity.mat") as tmp:
        sitk.WriteTransform(sitk.AffineTransform(3), str(tmp))
    spec = {"native_to_mni": ["identity.mat"], "mni_to_native": ["identity.mat"],
            "mni_to_native_invert": [False], **extra}
    write_json_atomic(spec, xfm_dir / "transforms.json", sort_keys=False)
    return spec


def native_subject(subject: str, images: dict, reference: str, modality_types: dict, mask: str | None,
                   label: str | None, out_images: dict, out_mask: str, out_label: str | None, xfm_dir: str,
                   spacing_xyz: Sequence[float], *, crop: bool = True, margin_mm: float = 10.0,
                   body_threshold_hu: float = -500.0, interpolation: str = "bSpline",
                   anisotropy_threshold: float = 3.0, qc: dict | None = None) -> dict:
    """Crop every modality, the foreground mask and the label to the foreground box; resample them.

    `qc`, if given, receives the resampled reference and foreground mask (Z,Y,X) already in memory.
    """
    ref = sitk.ReadImage(images[reference], sitk.sitkFloat32)
    if is_ct_modality(modality_types, reference):
        fg = body_mask(sitk.GetArrayViewFromImage(ref), body_threshold_hu)
        source = f"CT body: largest region above {body_threshold_hu:g} HU"
        if not fg.any():
            raise InputError(subject, images[reference], f"no voxel above {body_threshold_hu:g} HU: no body "
                                                         "to crop to (is the image in Hounsfield units?)")
    else:
        if mask is None:
            raise ValueError(f"native space with an MR reference ({reference!r}) needs the skull-stripping mask")
        fg = sitk.GetArrayFromImage(sitk.ReadImage(mask)) > 0
        source = "skull-stripping mask"
        if not fg.any():
            raise InputError(subject, mask, "foreground mask is empty")
    spacing_zyx = ref.GetSpacing()[::-1]
    box = crop_box(fg, spacing_zyx, margin_mm) if crop else tuple(slice(0, n) for n in fg.shape)
    start_xyz = [int(b.start) for b in box[::-1]]
    size_xyz = [int(b.stop - b.start) for b in box[::-1]]

    def cut(img: sitk.Image) -> sitk.Image:
        return sitk.RegionOfInterest(img, size_xyz, start_xyz)

    lab, classes = None, []
    if label is not None and out_label:  # checked before anything is written
        lab = sitk.ReadImage(label)
        arr = sitk.GetArrayViewFromImage(lab)
        classes = sorted(int(c) for c in np.unique(arr) if c != 0)
        lost = int(np.count_nonzero(arr)) - int(np.count_nonzero(arr[box]))
        if lost:
            raise InputError(subject, label, f"{lost} labelled voxels lie outside the foreground crop box "
                                             f"(margin {margin_mm:g} mm): raise preprocess.native.crop_margin_mm")

    fg_img = sitk.GetImageFromArray(fg.astype(np.uint8))
    fg_img.CopyInformation(ref)
    fg_out = resample_labels(cut(fg_img), [1], spacing_xyz, anisotropy_threshold)
    fg_arr = sitk.GetArrayViewFromImage(fg_out)
    axis = None
    for mod, path in images.items():
        img = ref if mod == reference else sitk.ReadImage(path, sitk.sitkFloat32)
        # outside the source grid: air for CT, zero for MR
        default = -1024.0 if is_ct_modality(modality_types, mod) else 0.0
        out, axis = resample(cut(img), spacing_xyz, interpolation, anisotropy_threshold, default)
        write_image(out, out_images[mod], compress=False)
        if qc is not None and mod == reference:
            qc.update(image=sitk.GetArrayFromImage(out), mask=fg_arr > 0,
                      spacing_zyx=tuple(float(s) for s in out.GetSpacing()[::-1]))
    write_image(fg_out, out_mask)
    info = {"foreground": source, "crop": {"enabled": bool(crop), "start_xyz": start_xyz, "size_xyz": size_xyz,
                                           "margin_mm": float(margin_mm), "source_size_xyz": list(ref.GetSize())},
            "source_spacing_xyz": [float(s) for s in ref.GetSpacing()],
            "target_spacing_xyz": [float(s) for s in spacing_xyz],
            "separate_axis": axis, "shape_xyz": list(fg_out.GetSize())}
    if lab is not None and out_label:  # lab is read only when out_label is given
        cropped = cut(lab)
        lab_out = (resample_labels(cropped, classes, spacing_xyz, anisotropy_threshold) if classes
                   else _resample(cropped, target_grid(cropped, spacing_xyz), sitk.sitkNearestNeighbor, 0))
        write_image(sitk.Cast(lab_out, sitk.sitkUInt8), out_label)
        info["label_classes"] = classes
    write_identity_transforms(xfm_dir, {"space": "native", **info})
    return info
