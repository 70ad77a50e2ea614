"""Registration to MNI152 (nilearn's shipped 2009 template) with kept forward/inverse transforms.

The transform is estimated between skull-stripped brains (subject reference modality vs the
template brain), on 3 mm copies whatever the output resolution, with 10% random sampling: the
transform is physical, so it applies unchanged to the 1 mm grid, and Mattes MI costs in
proportion to the sampled points (bench/preprocess.py checks the template-mask Dice).
Images are resampled with a smooth interpolator, labels and masks with `genericLabel`.
The transforms are copied next to the outputs and described in a JSON file that the
back-to-native step reads, because ANTs returns them as temporary files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from voxflow.inputs.images import write_ants
from voxflow.core.atomic import atomic_path
from voxflow.core.atomic import write_json_atomic

TRANSFORMS = {"rigid": "Rigid", "affine": "Affine", "syn": "SyN"}


def write_template(resolution_mm: int, out_image: str, out_mask: str, out_gm: str | None = None,
                   out_wm: str | None = None) -> None:
    """Write nilearn's MNI152 brain template and its mask, and its grey/white-matter probability maps (the QC's
    CNR and CJV), all from the wheel: no download."""
    from nilearn import datasets

    files = [(datasets.load_mni152_template(resolution=resolution_mm), out_image),
             (datasets.load_mni152_brain_mask(resolution=resolution_mm), out_mask)]
    if out_gm:
        files.append((datasets.load_mni152_gm_template(resolution=resolution_mm), out_gm))
    if out_wm:
        files.append((datasets.load_mni152_wm_template(resolution=resolution_mm), out_wm))
    for img, path in files:
        with atomic_path(path) as tmp:
            img.to_filename(str(tmp))


def register_to_template(moving, fixed, transform: str = "affine", seed: int = 1, *,
                         aff_iterations=(100, 50, 25), syn_iterations=(40, 20, 0),
                         work_spacing_mm: float = 3.0, sampling_rate: float = 0.1) -> dict:
    """Estimate native -> MNI. Returns ANTs' registration dict (fwdtransforms, invtransforms)."""

    if transform not in TRANSFORMS:
        raise ValueError(f"mni.transform must be one of {sorted(TRANSFORMS)}; got {transform!r}")
    from voxflow.preprocess.coreg import coarse_copy, seeded_registration

    kwargs = dict(aff_metric="mattes", aff_sampling=32, aff_random_sampling_rate=sampling_rate,
                  aff_iterations=tuple(aff_iterations), aff_shrink_factors=(4, 2, 1),
                  aff_smoothing_sigmas=(2, 1, 0), verbose=False)
    fixed, moving = coarse_copy(fixed, work_spacing_mm), coarse_copy(moving, work_spacing_mm)
    if transform == "syn":
        kwargs.update(reg_iterations=tuple(syn_iterations), syn_metric="CC", syn_sampling=2,
                      flow_sigma=3, total_sigma=0)
    return seeded_registration(seed, fixed=fixed, moving=moving, type_of_transform=TRANSFORMS[transform], **kwargs)


def keep_transforms(reg: dict, xfm_dir: str | Path) -> dict:
    """Copy ANTs' temporary transform files into `xfm_dir` and describe how to apply them."""
    xfm_dir = Path(xfm_dir)
    xfm_dir.mkdir(parents=True, exist_ok=True)

    def _copy(files, prefix):
        kept = []
        for i, f in enumerate(files):
            suffix = ".mat" if f.endswith(".mat") else ".nii.gz"
            dst = xfm_dir / f"{prefix}_{i}{suffix}"
            with atomic_path(dst) as tmp:
                shutil.copyfile(f, tmp)
            kept.append(dst.name)
        return kept

    fwd = _copy(reg["fwdtransforms"], "native_to_mni")
    inv = _copy(reg["invtransforms"], "mni_to_native")
    # ANTs convention: affine (.mat) entries of the inverse list must be inverted when applied.
    spec = {"native_to_mni": fwd, "mni_to_native": inv,
            "mni_to_native_invert": [name.endswith(".mat") for name in inv]}
    write_json_atomic(spec, xfm_dir / "transforms.json", sort_keys=False)
    return spec


def load_transforms(xfm_dir: str | Path, direction: str = "native_to_mni") -> tuple[list[str], list[bool]]:
    """Return (transform files, whichtoinvert) for ants.apply_transforms."""
    xfm_dir = Path(xfm_dir)
    spec = json.loads((xfm_dir / "transforms.json").read_text())
    files = [str(xfm_dir / n) for n in spec[direction]]
    invert = spec["mni_to_native_invert"] if direction == "mni_to_native" else [False] * len(files)
    return files, invert


def register_subject(images: dict, reference: str, mask: str, label: str | None, template: str,
                     out_images: dict, out_mask: str, out_label: str | None, xfm_dir: str,
                     transform: str = "affine", interpolator: str = "linear", qc: dict | None = None) -> dict:
    """Register the reference brain to MNI and bring every modality, the mask and the label there.

    `qc`, if given, receives the registered reference and the template (Z,Y,X) already in memory, and every
    registered modality (`images`) and the registered brain mask (`mask`) for the quality scores.
    """
    import ants

    fixed = ants.image_read(template)
    moving = ants.image_read(images[reference])
    reg = register_to_template(moving, fixed, transform)
    keep_transforms(reg, xfm_dir)
    fwd = reg["fwdtransforms"]
    for mod, path in images.items():
        img = moving if mod == reference else ants.image_read(path)
        warped = ants.apply_transforms(fixed=fixed, moving=img, transformlist=fwd, interpolator=interpolator)
        write_ants(warped, out_images[mod])
        if qc is not None:
            qc.setdefault("images", {})[mod] = warped.numpy().T
        if qc is not None and mod == reference:
            qc.update(image=warped.numpy().T, template=fixed.numpy().T,
                      spacing_zyx=tuple(float(x) for x in fixed.spacing[::-1]))
    for src, dst in ((mask, out_mask), (label, out_label)):
        if src and dst:
            lab = ants.image_read(src)
            warped = ants.apply_transforms(fixed=fixed, moving=lab, transformlist=fwd,
                                           interpolator="genericLabel")
            write_ants(warped.astype("uint8"), dst)
            if qc is not None and src == mask:
                qc["mask"] = warped.numpy().T > 0
    return {"transform": transform, "fwd": [Path(f).suffix for f in fwd]}
