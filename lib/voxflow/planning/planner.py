"""The planner (nnU-Net's experiment planning): from the fingerprint and the config to plans.json (patch and batch
within the memory budget, the network's topology and stem, the cascade's verdict), each choice recorded with what
the config overrode. numpy is imported inside the functions, as in voxflow.planning.plans."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path


# Activation bytes per voxel and per base feature, forward + backward, fp32, summed over a U-Net's
# stages: ~ 2 convs x (feat x 4 bytes) x 2 (grad) x ~2.5 (norm/act/skip copies). A 128^3 patch,
# batch 2, 32 base features gives ~18 GB in fp32; mixed precision on CUDA roughly halves it, which
# is nnU-Net's default configuration on a ~10 GB card. Conservative on purpose: an OOM costs a run.
_BYTES_PER_VOXEL_FEATURE = 135.0


def estimate_memory_gb(patch: Sequence[int], batch: int, base_features: int, n_channels: int) -> float:
    import numpy as np

    vox = float(np.prod(patch))
    return (vox * batch * (base_features * _BYTES_PER_VOXEL_FEATURE + 8 * n_channels)) / 1e9


def auto_patch(median_shape: Sequence[int], spacing: Sequence[float], budget_gb: float, base_features: int,
               n_channels: int, batch: int = 2, max_patch: int = 128, divisor: int = 16) -> list[int]:
    """Largest patch (multiple of `divisor`, <= median shape rounded up) that fits the budget.

    Starts from the median shape capped at `max_patch` and shrinks the axis that is largest in
    millimetres, as nnU-Net does, so the patch stays roughly isotropic in physical space.
    """
    import numpy as np

    patch = [1 if s == 1 else min(max_patch, int(math.ceil(s / divisor) * divisor)) for s in median_shape]  # 1: 2D
    while estimate_memory_gb(patch, batch, base_features, n_channels) > budget_gb:
        mm = [p * s for p, s in zip(patch, spacing)]
        ax = int(np.argmax([m if p > divisor else -1 for m, p in zip(mm, patch)]))
        if patch[ax] <= divisor:
            break
        patch[ax] -= divisor
    return patch


def make_plans(fp: dict, cfg: dict, modalities: list[str], label_values: list[int], device: str) -> dict:
    """Decide model settings from the fingerprint; config values override and are recorded.

    `model.cascade_stage` (set per configuration by the workflow: 3d_cascade is "fullres", its first stage
    3d_cascade/lowres "lowres"): the 3D plans of a cascade stage, with the cascade decision and why
    (voxflow.planning.cascade) under the key "cascade" (Plans.cascade); the low-resolution stage plans on the image
    downsampled by the decided factor. Read the result back through Plans."""
    stage = cfg["model"].get("cascade_stage")
    if stage:
        from voxflow.planning.cascade import cascade_decision

        plain = {**cfg, "model": {**cfg["model"], "cascade_stage": None, "dim": "3d"}}
        full = make_plans(fp, plain, modalities, label_values, device)
        decision = cascade_decision(fp["median_shape"], full["patch_size"])
        if stage == "lowres":
            f = decision["factor"]
            low = {**fp, "median_shape": [int(math.ceil(v / f)) for v in fp["median_shape"]],
                   "median_spacing": [v * f for v in fp["median_spacing"]]}
            plans = make_plans(low, plain, modalities, label_values, device)
            plans["cascade"] = {"stage": "lowres", **decision}
        else:
            plans = full
            plans["cascade"] = {"stage": "fullres", "prev_channels": len(label_values) - 1, **decision}
        return plans
    from voxflow.settings.launch import global_batch, train_processes
    from voxflow.nn.networks import network_topology

    mcfg, tcfg = cfg["model"], cfg["train"]
    dim = mcfg["dim"]
    budget = tcfg["memory_gb_gpu"] if device == "cuda" else tcfg["memory_gb_cpu"]
    base = mcfg["base_features"]
    n_ch = len(modalities) * (mcfg["context_slices"] if dim == "2.5d" else 1)
    spacing = fp["median_spacing"]
    auto: dict = {}
    if dim == "3d":
        auto["patch_size"] = auto_patch(fp["median_shape"], spacing, budget, base, n_ch,
                                        max_patch=mcfg["max_patch"])
    else:
        auto["patch_size"] = auto_patch([1] + list(fp["median_shape"][1:]), spacing, budget, base, n_ch,
                                        max_patch=max(mcfg["max_patch"], 256))[1:]
    auto["batch_size"] = 2
    patch_full = auto["patch_size"] if dim == "3d" else [1] + auto["patch_size"]
    while (estimate_memory_gb(patch_full, auto["batch_size"] + 1, base, n_ch) <= budget
           and auto["batch_size"] < (2 if dim == "3d" else 32)):
        auto["batch_size"] += 1
    overrides = {k: mcfg[k] for k in ("patch_size", "batch_size") if mcfg.get(k) is not None}
    world = train_processes(tcfg)  # DDP: the batch is global, split over the processes
    auto["batch_size"] = global_batch(auto["batch_size"], world, configured=False)
    if "batch_size" in overrides:
        global_batch(overrides["batch_size"], world, configured=True)
    chosen = {**auto, **overrides}
    sp = spacing if dim == "3d" else spacing[1:]
    stem, stem_why = choose_stem(mcfg.get("stem", "auto"), dim, device, chosen["patch_size"], sp,
                                 mcfg.get("n_stages"))
    kernels, strides = network_topology(chosen["patch_size"], sp, mcfg.get("n_stages"), stem)
    auto["n_stages"] = len(strides)
    if mcfg.get("n_stages") is not None:
        overrides["n_stages"] = mcfg["n_stages"]
    chosen["n_stages"] = len(strides)
    counts = fp["class_voxels"]
    regions = tcfg.get("regions") or None
    if regions:  # region-based training: one sigmoid output per label group (voxflow.core.labels)
        from voxflow.core.labels import region_labels

        regions = [[int(v) for v in g] for g in regions]
        painted = region_labels(regions, label_values, tcfg.get("region_labels"))
    return {
        "dim": dim, "modalities": modalities, "label_values": label_values, "n_classes": len(label_values),
        "regions": regions, "region_labels": painted if regions else None,
        "n_outputs": len(regions) if regions else len(label_values),
        "context_slices": mcfg["context_slices"] if dim == "2.5d" else 1,
        "patch_size": chosen["patch_size"], "batch_size": chosen["batch_size"], "n_stages": chosen["n_stages"],
        "kernels": kernels, "strides": strides, "base_features": base, "spacing": spacing,
        "stem": stem, "stem_why": stem_why, "configuration": mcfg.get("configuration"),
        "memory_budget_gb": budget, "device": device, "processes": world,
        "estimated_memory_gb": round(estimate_memory_gb(  # per process (per GPU)
            chosen["patch_size"] if dim == "3d" else [1] + list(chosen["patch_size"]),
            chosen["batch_size"] // world, base, n_ch), 3),
        "class_voxels": {str(v): counts.get(str(v), 0) for v in label_values},
        "intensity": fp["intensity"],
        "automatic": auto, "overridden_by_config": overrides,
    }


def choose_stem(requested: str, dim: str, device: str, patch: Sequence[int], spacing: Sequence[float],
                n_stages: int | None) -> tuple[str, str]:
    """The network's first stage and why: "full_resolution" (nnU-Net) or "strided" (no full-resolution stage; a
    light full-resolution head corrects the repeated logits, voxflow.nn.networks.StridedStemUNet).

    "auto": strided for a 3D network trained on CPU whose patch leaves at least 3 stages without the
    full-resolution one, since there the full-resolution stage is most of a step's time (64^3, batch 2, 16
    features: about 4x slower to train with it) and at equal training time the strided network segments about
    as well (bench/stem.py: demo 0.861 vs 0.838, BraTS 2018 sample 0.518 vs 0.526); full resolution on a GPU
    (nnU-Net's choice, where it is cheap), for 2D/2.5D networks, and when model.n_stages is set."""
    from voxflow.nn.networks import unet_topology

    full_stages = len(unet_topology(patch, spacing)[1])
    if requested == "full_resolution":
        return requested, "model.stem: full_resolution (configured)"
    if requested == "strided":
        need = 4 if n_stages is None else n_stages + 1
        if full_stages < need:
            raise ValueError(f"model.stem: strided needs a patch with {need} U-Net stages (the full-resolution one "
                             f"dropped); patch {tuple(patch)} has {full_stages}: raise model.patch_size")
        return requested, "model.stem: strided (configured)"
    if device == "cuda":
        return "full_resolution", "auto: training on a GPU, where the full-resolution stage is cheap (nnU-Net)"
    if dim != "3d":
        return "full_resolution", f"auto: a {dim} network (the strided stem is chosen for 3D only)"
    if n_stages is not None:
        return "full_resolution", "auto: model.n_stages is set"
    if full_stages < 4:
        return "full_resolution", (f"auto: patch {tuple(patch)} has {full_stages} stages; without the "
                                   "full-resolution one fewer than the 3 a U-Net needs")
    return "strided", ("auto: 3D training on CPU, where the full-resolution stage is most of a step's time; "
                       "the first convolution is strided, a light full-resolution head restores the detail")


def write_training_stores(split_path: str, store_pattern: str, out: str) -> dict[str, str]:
    """model/stores.json: each training subject's store (`store_pattern` with {subject}), the one list that plan,
    train and postprocess_plan read instead of thousands of inputs each."""
    from voxflow.core.atomic import write_json_atomic
    from voxflow.core.split import training_subjects

    stores = {s: store_pattern.replace("{subject}", s)
              for s in training_subjects(json.loads(Path(split_path).read_text()))}
    write_json_atomic(stores, out)
    return stores
