"""Skull stripping: deepbet (default), template-mask propagation, or none.

deepbet is a TorchScript network whose weights ship inside its wheel (no download). The template
method registers a whole-head template to the subject and carries its brain mask over, the
classic atlas approach, useful where the network fails (unusual contrasts, children, animals).
`none` is for data that arrives skull-stripped (BraTS): the mask is the non-zero region.
"""

from __future__ import annotations

import os
import tempfile
from typing import cast

import numpy as np
from scipy import ndimage


def _largest_component_filled(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
        mask = lab == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


def deepbet_mask(img, threshold: float = 0.5, threads: int = 1):
    """Brain mask of an ANTs image with deepbet, returned as an ANTs uint8 image on the same grid."""
    import nibabel as nib
    import torch
    from deepbet import BrainExtraction

    torch.set_num_threads(max(1, threads))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.nii")  # uncompressed: gzip of float noise costs ~1 s
        img.to_file(path)
        loaded = cast("nib.Nifti1Image", nib.load(path))  # nib.load is typed as the base class
        nii = nib.Nifti1Image(np.asarray(loaded.dataobj, dtype=np.float32), loaded.affine, loaded.header)
        bet = BrainExtraction(no_gpu=not torch.cuda.is_available())
        _, mask_nii, _ = bet.run(nii, threshold=threshold)
        out = os.path.join(tmp, "mask.nii")
        mask_nii.to_filename(out)
        import ants
        mask = ants.image_read(out)
    # nibabel and ITK may disagree by rounding on the header; put the mask exactly on img's grid.
    return img.new_image_like((mask.numpy() > 0.5).astype(np.float32))


def template_mask(img, head_template: str, brain_mask: str, transform: str = "Affine"):
    """Register a whole-head template to the subject and carry its brain mask over."""
    import ants

    from voxflow.preprocess.coreg import seeded_registration

    tpl = ants.image_read(head_template)
    tpl_mask = ants.image_read(brain_mask)
    reg = seeded_registration(1, fixed=img, moving=tpl, type_of_transform=transform,
                            aff_iterations=(200, 100, 50), aff_shrink_factors=(4, 2, 1),
                            aff_smoothing_sigmas=(2, 1, 0), aff_random_sampling_rate=0.25,
                            verbose=False)
    warped = ants.apply_transforms(fixed=img, moving=tpl_mask, transformlist=reg["fwdtransforms"],
                                   interpolator="genericLabel")
    return img.new_image_like((warped.numpy() > 0.5).astype(np.float32))


def nonzero_mask(images):
    """For skull-stripped inputs: voxels non-zero in any modality, largest component, holes filled."""
    arr = np.zeros(images[0].shape, dtype=bool)
    for im in images:
        arr |= np.abs(im.numpy()) > 1e-6
    return images[0].new_image_like(_largest_component_filled(arr).astype(np.float32))


def strip_subject(images: dict, reference: str, out_images: dict, out_mask: str, method: str,
                  modality: str | None = None, threshold: float = 0.5, head_template: str | None = None,
                  template_brain_mask: str | None = None, threads: int = 1, qc: dict | None = None) -> dict:
    """Compute the brain mask on one modality and apply it to all of them.

    `qc`, if given, receives the reference image and the mask (Z,Y,X) already in memory.
    """
    import ants

    from voxflow.inputs.images import write_ants

    loaded = {mod: ants.image_read(p) for mod, p in images.items()}
    source = loaded[modality or reference]
    if method == "deepbet":
        mask = deepbet_mask(source, threshold=threshold, threads=threads)
    elif method == "template":
        if not head_template or not template_brain_mask:
            raise ValueError("skullstrip.method 'template' needs skullstrip.template.head and .brain_mask paths")
        mask = template_mask(source, head_template, template_brain_mask)
    elif method == "none":
        mask = nonzero_mask(list(loaded.values()))
    else:
        raise ValueError(f"skullstrip.method must be one of deepbet, template, none; got {method!r}")
    m = mask.numpy() > 0.5
    if m.sum() == 0:
        raise RuntimeError("skull stripping produced an empty brain mask")
    for mod, img in loaded.items():
        write_ants(img.new_image_like(np.where(m, img.numpy(), 0).astype(np.float32)), out_images[mod])
    write_ants(mask.astype("uint8"), out_mask)
    if qc is not None:
        ref = loaded[reference]
        qc.update(image=ref.numpy().T, mask=m.T, spacing_zyx=tuple(float(x) for x in ref.spacing[::-1]))
    spacing = np.prod(mask.spacing)
    return {"method": method, "brain_volume_ml": float(m.sum() * spacing / 1000.0)}
