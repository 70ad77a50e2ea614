"""Inference: sliding window over a subject's zarr store, fold ensemble, postprocessing, and the
prediction mapped back to the subject's native grid through the kept inverse transforms.

The store's grid is MNI152 (preprocess.space: mni) or the native image cropped and resampled
(preprocess.space: native); the prediction is written on it too, under the workflow's name for that
space (`_seg_mni` or `_seg_resampled`). Nothing here depends on which: the store's geometry and its
transforms.json (registration inverses, or one identity transform) say how to go back.

The native-space file takes the raw reference scan's header (NIfTI: its affine and header; other
formats: its SimpleITK geometry), so it overlays the input in any viewer.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import torch

from voxflow.inputs.images import read_raw
from voxflow.core.atomic import atomic_path
from voxflow.core.layout import FOLD_MODELS, LOWRES_DIR
from voxflow.core.stores import image_array, read_store_mask, store_meta
from voxflow.nn.sliding_window import sliding_window_predict
from voxflow.planning.plans import Plans
from voxflow.inference.model import load_trained, volume_predictor
# the label-map functions live with the label scheme (voxflow.core.labels); named here too, where callers find them
from voxflow.core.labels import class_indices as class_indices
from voxflow.core.labels import labels_from_probabilities as labels_from_probabilities


def predict_probabilities(store_path: str, model_paths: Sequence[str], cfg: dict, device: torch.device,
                          progress: bool = False, previous: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Average softmax (region models: sigmoid per region) over folds (running mean: one fold's probabilities in
    memory at a time), and the plans as plans.json holds them (the last fold's; `Plans.from_dict` reads them).

    A cascade's models chain (voxflow.planning.cascade): a low-resolution stage predicts the store downsampled by
    its factor and its probabilities come back on the store's grid; a full-resolution stage takes the store plus
    the low-resolution prediction one-hot, `previous` (class indices, e.g. out of fold) or else that of the
    ensemble of every low-resolution fold beside it (model/3d_cascade/lowres/fold_*)."""
    probs, plans = _ensemble(store_path, model_paths, cfg, device, progress, previous)
    return probs, plans.to_dict()


def _ensemble(store_path: str, model_paths: Sequence[str], cfg: dict, device: torch.device, progress: bool = False,
              previous: np.ndarray | None = None) -> tuple[np.ndarray, Plans]:
    """predict_probabilities with the plans as Plans."""
    image = image_array(store_path)
    mean = None
    plans: Plans | None = None
    first: Plans | None = None
    volumes: dict = {}  # the input of each cascade stage, built once for every fold of it
    for i, mp in enumerate(model_paths):
        net, raw = load_trained(mp, device)
        plans = Plans.from_dict(raw, source=str(mp))
        predictor = volume_predictor(net, plans)
        mirror = tuple(cfg["mirror_axes"]) if cfg["tta"] else ()
        if not plans.is_3d:
            mirror = tuple(a for a in mirror if a != 0)
        if first is not None and plans.regions != first.regions:
            raise ValueError(f"{mp} predicts regions {plans.regions}, {model_paths[0]} "
                             f"{first.regions}: fold models of one ensemble must agree")
        volume = _stage_input(store_path, image, plans, mp, cfg, device, previous, volumes)
        probs = sliding_window_predict(volume, predictor, plans.window_patch, plans.n_outputs, overlap=cfg["overlap"],
                                       batch_size=cfg["batch_size"], mirror_axes=mirror, device=device,
                                       amp=device.type == "cuda", progress=progress,
                                       activation=plans.labels.activation)
        cascade = plans.cascade
        if cascade is not None and cascade.stage == "lowres":
            from voxflow.planning.cascade import upsample_probabilities

            probs = upsample_probabilities(probs, image.shape[1:], cascade.factor)
        first = first or plans
        mean = probs if mean is None else mean + (probs - mean) / (i + 1)
    if mean is None or plans is None:
        raise ValueError("no fold model to predict with")
    return mean, plans


def lowres_models(fullres_model: str | Path) -> list[str]:
    """The low-resolution folds of a cascade's full-resolution model (<configuration>/lowres/fold_*)."""
    lowres = Path(fullres_model).parent.parent / LOWRES_DIR
    found = sorted(str(p) for p in lowres.glob(FOLD_MODELS))
    if not found:
        raise FileNotFoundError(f"{fullres_model} is a cascade's full-resolution stage, but no low-resolution "
                                f"model is beside it ({lowres}/fold_*/)")
    return found


def _stage_input(store_path, image, plans: Plans, model_path, cfg, device, previous, volumes):
    """The volume a model predicts on: the store's image; pooled for a low-resolution stage; with the previous
    stage's prediction one-hot for a full-resolution one."""
    cascade = plans.cascade
    if cascade is None:
        return image
    stage = cascade.stage
    if stage not in volumes:
        from voxflow.planning.cascade import downsample_volume

        if stage == "lowres":
            volumes[stage] = downsample_volume(np.asarray(image[:]), cascade.factor)
        else:
            if previous is None:
                low, low_plans = _ensemble(store_path, lowres_models(model_path), cfg, device)
                previous = low_plans.labels.class_indices(low_plans.labels.labels_from_probabilities(low))
            n = cascade.prev_channels
            hot = (np.arange(1, n + 1)[:, None, None, None] == previous[None]).astype(np.float32)
            volumes[stage] = np.concatenate([np.asarray(image[:], np.float32), hot])
    return volumes[stage]


def segmentation(probs: np.ndarray, plans: Plans | Mapping) -> np.ndarray:
    """The label map of a model's probabilities: argmax of the classes, or the regions painted in order
    (voxflow.core.labels.LabelScheme.labels_from_probabilities)."""
    return Plans.of(plans).labels.labels_from_probabilities(probs)


def store_geometry(store_path: str) -> dict:
    """The store's voxflow attributes: its grid (shape, origin, spacing, direction) and transforms."""
    return store_meta(store_path)


def store_grid_image(arr_zyx: np.ndarray, meta: dict):
    """An ANTs image on the store's grid (MNI152, or the cropped and resampled native grid)."""
    import ants

    return ants.from_numpy(np.ascontiguousarray(arr_zyx.T).astype(np.float32), origin=tuple(meta["origin_xyz"]),
                           spacing=tuple(meta["spacing_zyx"][::-1]),
                           direction=np.asarray(meta["direction"]).reshape(3, 3))


def write_like(arr_native_xyz: np.ndarray, reference_path: str, out_path: str | Path, dtype=np.uint8) -> None:
    """Write an array on the raw reference grid with the reference's own header."""
    import nibabel as nib

    ref, raw = str(reference_path), None
    if ref.endswith((".nii", ".nii.gz")):
        try:
            raw = cast(nib.Nifti1Image, nib.load(ref))
        except Exception:  # noqa: BLE001 - gzip data named .nii and the like: ITK's way below reads them
            raw = None
    with atomic_path(out_path) as tmp:
        if raw is not None and type(raw.header) is nib.Nifti1Header:  # NIfTI-1: keep the raw file's header
            hdr = raw.header.copy()
            hdr.set_data_dtype(dtype)
            hdr["scl_slope"], hdr["scl_inter"] = 1, 0
            nib.Nifti1Image(arr_native_xyz.astype(dtype), raw.affine, hdr).to_filename(str(tmp))
        else:
            import SimpleITK as sitk

            ref_img = read_raw(ref)  # NRRD, MHA, NIfTI-2, a DICOM series folder (voxflow.inputs.images reads them all)
            img = sitk.GetImageFromArray(arr_native_xyz.T.astype(dtype))
            img.CopyInformation(ref_img)
            sitk.WriteImage(img, str(tmp), True)


def to_native(arr_zyx: np.ndarray, meta: dict, is_label: bool = True) -> np.ndarray:
    """Array on the store's grid -> array in the raw reference file's voxel order (x, y, z), via the kept
    transforms back to native space (the inverse registration, or the identity of the native path)."""
    import ants

    from voxflow.preprocess.mni import load_transforms

    tr = meta["transforms"]
    # "mni_to_native" is the key of the way back in every transforms.json, the native path's identity
    # included (voxflow.preprocess.native.write_identity_transforms writes the MNI step's keys)
    files, invert = load_transforms(tr["dir"], "mni_to_native")
    ref = tr["native_reference"]
    # voxflow's reader, not ants.image_read: it reads every format validation accepts (a DICOM series folder,
    # gzip data named .nii, NIfTI-2, 64-bit integers, which ANTs cannot take)
    native = ants.from_sitk(read_raw(ref))
    if native.dimension == 4:
        native = ants.slice_image(native, axis=3, idx=0)
    warped = ants.apply_transforms(fixed=native, moving=store_grid_image(arr_zyx, meta), transformlist=files,
                                   whichtoinvert=invert, interpolator="genericLabel" if is_label else "linear")
    return warped.numpy()


def write_store_grid(label_zyx: np.ndarray, meta: dict, out_path: str | Path) -> None:
    """Write a label map on the store's grid (uint8)."""
    img = store_grid_image(label_zyx, meta).astype("uint8")
    with atomic_path(out_path) as tmp:
        img.to_file(str(tmp))


def predict_subject(store_path: str, model_paths: Sequence[str], postprocess: dict | None, cfg: dict,
                    out_store_grid: str, out_native: str, out_prob_native: str | None = None,
                    device: torch.device | None = None) -> dict:
    """Predict one subject: the label map on the store's grid (`out_store_grid`) and on the raw reference
    grid (`out_native`), optionally the foreground probability on the raw grid (`out_prob_native`)."""
    from voxflow.postprocessing.postprocess import apply_postprocessing
    from voxflow.nn.checkpoints import pick_device

    device = device or pick_device(cfg.get("device", "auto"))
    probs, plans = _ensemble(store_path, model_paths, cfg, device, progress=True)
    seg = plans.labels.labels_from_probabilities(probs)
    meta = store_geometry(store_path)
    # the store's foreground mask (the brain; in native space the body or skull-stripping mask)
    brain = read_store_mask(store_path) > 0
    seg = np.where(brain, seg, 0).astype(np.uint8)
    if postprocess:
        seg = apply_postprocessing(seg, postprocess, fill_holes_labels=postprocess.get("fill_holes") or (),
                                   open_close=postprocess.get("open_close"))
    write_store_grid(seg, meta, out_store_grid)
    native = to_native(seg, meta, is_label=True).astype(np.uint8)
    write_like(native, meta["transforms"]["native_reference"], out_native)
    if out_prob_native:
        fg = plans.labels.foreground_probability(probs)
        write_like(to_native(fg, meta, is_label=False).astype(np.float32),
                   meta["transforms"]["native_reference"], out_prob_native, dtype=np.float32)
    vals, counts = np.unique(native, return_counts=True)
    return {"native_voxels": {int(v): int(c) for v, c in zip(vals, counts)}}
