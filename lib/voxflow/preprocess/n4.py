"""N4 bias-field correction (antspyx), estimated on a coarse grid.

The bias field is smooth by construction (a B-spline with a few control points), so estimating it
on a 6 mm copy of the image and interpolating the *log field* back to full resolution gives the
same correction as full-resolution N4 at a fraction of the cost; bench/preprocess.py measures it
against antspyx's defaults.
"""

from __future__ import annotations

import numpy as np

from voxflow.settings.model import is_ct_modality


def n4_fit_mask(img):
    """N4's foreground (head) mask, an image like `img`: N4 must ignore air, whose noise has no bias to estimate.

    The opened head mask (voxflow.qc.subject.head_mask: threshold at the image mean, what ants.get_mask does, one
    opening, hole filling), on the small copy N4 runs on: ants.get_mask's morphological clean-up costs 2-3 s at
    full resolution for nothing the bias fit can see.
    """
    from voxflow.qc.subject import head_mask

    return img.new_image_like(head_mask(img.numpy(), opened=True).astype(np.float32))


def n4_correct(img, mask=None, *, fit_spacing_mm: float = 6.0, iterations=(20, 10),
               spline_distance_mm: float = 100.0, convergence_tol: float = 1e-6):
    """Return (corrected image on the input grid, multiplicative bias field on the coarse fit grid).

    The field is returned at the fit resolution: it is smooth, and writing it at full resolution
    cost as much as the correction itself.
    """
    import ants

    from voxflow.preprocess.coreg import coarse_copy

    small = coarse_copy(img, fit_spacing_mm)
    small_mask = (n4_fit_mask(small) if mask is None
                  else ants.resample_image_to_target(mask, small, interp_type="nearestNeighbor"))
    # N4 works on positive intensities; shift tiny/negative values (z-scored inputs) away from 0.
    arr = small.numpy()
    offset = float(max(0.0, -arr.min())) + 1e-3 * float(np.abs(arr).max())
    small = small.new_image_like(arr + offset)
    field = ants.n4_bias_field_correction(
        small, mask=small_mask, shrink_factor=1,
        convergence={"iters": list(iterations), "tol": convergence_tol},
        spline_param=float(spline_distance_mm), return_bias_field=True, verbose=False)
    log_field = ants.image_clone(field)
    log_field = log_field.new_image_like(np.log(np.maximum(field.numpy(), 1e-6)))
    log_full = ants.resample_image_to_target(log_field, img, interp_type="linear")
    corrected = img.new_image_like(img.numpy() / np.exp(log_full.numpy()))
    return corrected, field


def correct_subject(images: dict, out_images: dict, out_fields: dict, modality_types: dict,
                    fit_spacing_mm: float, iterations, spline_distance_mm: float, enabled: bool = True,
                    reference: str | None = None, qc: dict | None = None, scores: dict | None = None) -> dict:
    """N4 on MR modalities; other modalities (CT), or all when `enabled` is false, are copied
    unchanged with a unit field (every modality gets its field file, as the rule declares).

    `qc`, if given, receives the reference modality's arrays (Z,Y,X) already in memory, so the
    QC figure needs no second read of the files just written. `scores`, if given, receives each modality's
    image-quality scores (voxflow.qc.subject.image_quality: the raw image and N4's field) and `seconds` they took.
    """
    import ants

    from voxflow.inputs.images import write_ants

    stats: dict[str, dict[str, float] | str] = {}
    for mod, path in images.items():
        img = ants.image_read(path)
        if enabled and not is_ct_modality(modality_types, mod):
            corrected, bias = n4_correct(img, fit_spacing_mm=fit_spacing_mm, iterations=iterations,
                                         spline_distance_mm=spline_distance_mm)
            b = bias.numpy()
            stats[mod] = {"field_min": float(b.min()), "field_max": float(b.max())}
        else:
            corrected = img
            coarse = ants.resample_image(img, tuple(max(float(s), fit_spacing_mm) for s in img.spacing),
                                         use_voxels=False, interp_type=0)
            bias = coarse.new_image_like(np.ones(coarse.shape, np.float32))
            stats[mod] = "skipped (N4 disabled)" if not enabled else "skipped (not MR)"
        write_ants(corrected, out_images[mod])
        write_ants(bias, out_fields[mod])
        if scores is not None:
            _score(scores, mod, img, bias if isinstance(stats[mod], dict) else None, fit_spacing_mm)
        if qc is not None and mod == reference:
            qc.update(before=img.numpy().T, after=corrected.numpy().T, field=bias.numpy().T,
                      spacing_zyx=tuple(float(x) for x in img.spacing[::-1]))
    return stats


def _score(scores: dict, mod: str, img, bias, fit_spacing_mm: float) -> None:
    """The modality's image-quality scores; the bias field's inside the head on N4's own coarse grid. The image is
    read through a view (no copy of a 1 mm volume: the scores take a subsample)."""
    import time

    from voxflow.preprocess.coreg import coarse_copy
    from voxflow.qc.subject import head_mask, image_quality

    t0 = time.perf_counter()
    field_mask = head_mask(coarse_copy(img, fit_spacing_mm).numpy().T) if bias is not None else None
    if field_mask is not None and field_mask.shape != bias.numpy().T.shape:
        field_mask = None
    scores.setdefault("by_modality", {})[mod] = image_quality(
        img.view().T, tuple(float(x) for x in img.spacing[::-1]), None if bias is None else bias.numpy().T, field_mask)
    scores["seconds"] = scores.get("seconds", 0.0) + time.perf_counter() - t0
