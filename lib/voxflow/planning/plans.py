"""Dataset fingerprint -> plans.json, and the cross-validation split (nnU-Net's idea).

Every automatic decision lands in a readable JSON file that later rules read back: the
fingerprint holds what was measured, the plans hold what was decided from it and which
choices the config overrode, the split holds which subject is in which fold.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxflow.core.parallel import compute

if TYPE_CHECKING:
    from voxflow.core.labels import LabelScheme

# numpy is imported inside the functions: reading plans (Plans) costs no heavy import, so that opening a model
# archive (voxflow.model_sharing.archive) stays with the standard library

# Activation bytes per voxel and per base feature, forward + backward, fp32, summed over a U-Net's
# stages: ~ 2 convs x (feat x 4 bytes) x 2 (grad) x ~2.5 (norm/act/skip copies). A 128^3 patch,
# batch 2, 32 base features gives ~18 GB in fp32; mixed precision on CUDA roughly halves it, which
# is nnU-Net's default configuration on a ~10 GB card. Conservative on purpose: an OOM costs a run.
_BYTES_PER_VOXEL_FEATURE = 135.0


def _subject_stats(path: str, n_classes_max: int = 256, n_samples: int = 20000, seed: int = 0) -> dict:
    import numpy as np

    from voxflow.core.stores import open_store, read_store_image, read_store_label, read_store_mask, store_meta

    root = open_store(path)
    meta = store_meta(root)
    mask = read_store_mask(root) > 0
    rng = np.random.default_rng(seed)
    idx = np.argwhere(mask)
    if len(idx) > n_samples:
        idx = idx[rng.choice(len(idx), n_samples, replace=False)]
    data = read_store_image(root)
    samples = data[:, idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.float32)
    counts = {}
    if meta.get("has_label"):
        lab = read_store_label(root)
        vals, cnt = np.unique(lab, return_counts=True)
        counts = {str(int(v)): int(c) for v, c in zip(vals, cnt)}
    return {"path": path, "shape": meta["shape_zyx"], "spacing": meta["spacing_zyx"],
            "samples": samples, "class_counts": counts, "brain_voxels": int(mask.sum())}


def fingerprint(stores: dict[str, str], scheduler: str = "threads") -> dict:
    """Measure the training set, one dask task per subject (scheduler: threads, processes, or an address)."""
    import dask
    import numpy as np

    tasks = [dask.delayed(_subject_stats)(p) for p in stores.values()]
    results = compute(tasks, scheduler)
    per_channel = np.concatenate([r["samples"] for r in results], axis=1)
    pct = {str(q): np.percentile(per_channel, q, axis=1).round(4).tolist() for q in (0.5, 50, 99.5)}
    counts: dict[str, int] = {}
    for r in results:
        for k, v in r["class_counts"].items():
            counts[k] = counts.get(k, 0) + v
    shapes = np.array([r["shape"] for r in results])
    spacings = np.array([r["spacing"] for r in results])
    return {
        "subjects": list(stores),
        "shapes": shapes.tolist(), "spacings": spacings.tolist(),
        "median_shape": np.median(shapes, axis=0).astype(int).tolist(),
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "intensity": {"percentiles": pct, "mean": per_channel.mean(1).round(4).tolist(),
                      "std": per_channel.std(1).round(4).tolist()},
        "class_voxels": dict(sorted(counts.items(), key=lambda kv: int(kv[0]))),
        "brain_voxels_median": int(np.median([r["brain_voxels"] for r in results])),
    }


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


class PlansError(KeyError, ValueError):
    """Plans that lack a key a reader needs, or a plans.json that is no JSON object: one line naming plans.json's
    key and where the plans came from. A KeyError (what a missing key raised before Plans) and a ValueError."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Cascade:
    """A cascade stage's part of the plans (plans.json's "cascade", voxflow.planning.cascade): which stage, the
    low-resolution stage's downsampling factor, and the one-hot channels of the low-resolution prediction that
    the full-resolution stage takes as input (0 for the low-resolution stage)."""

    stage: str  # "lowres" or "fullres"
    factor: int
    prev_channels: int


_MISSING = object()


@dataclass(frozen=True)
class Plans:
    """A model's plans (plans.json, written by make_plans) read through typed properties (nnU-Net's PlansManager
    and ConfigurationManager): `Plans.load(path)`, `Plans.from_dict(d)`, or `Plans.of(plans)` where a function
    takes either. A missing key raises PlansError naming it. `raw` is the dict as written (not to be changed:
    `to_dict()` gives a copy), for writing and for hashing (the resumable run key of a training run)."""

    raw: dict = field(repr=False, hash=False)
    source: str = "plans.json"  # where the plans came from (a plans.json path, a checkpoint), for the errors

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "plans.json") -> Plans:
        if not isinstance(d, Mapping):
            raise PlansError(f"{source}: the plans are not a JSON object (plans.json holds one)")
        return cls(copy.deepcopy(dict(d)), str(source))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plans:
        """plans.json at `path` (OSError when unreadable, ValueError when no JSON object)."""
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))

    @classmethod
    def of(cls, plans: Plans | Mapping[str, Any]) -> Plans:
        """`plans` itself if a Plans, else the dict (plans.json's content) read as one."""
        return plans if isinstance(plans, Plans) else cls.from_dict(plans)

    def to_dict(self) -> dict:
        """The plans as plans.json holds them (a copy)."""
        return copy.deepcopy(self.raw)

    def _get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is not _MISSING:
            return default
        raise self._missing(key)

    def _missing(self, key: str) -> PlansError:
        where = "" if self.source == "plans.json" else f" ({self.source})"
        return PlansError(f"plans.json has no key {key!r}{where}: plans of another voxflow version? rerun the plan "
                          "rule")

    def optional(self, name: str, default: Any = None) -> Any:
        """Property `name`, or `default` where the plans lack its key: for readers of partial plans (the report)."""
        try:
            return getattr(self, name)
        except PlansError:
            return default

    # --- the keys, as make_plans writes them ------------------------------------------------------------------
    @property
    def dim(self) -> str:
        """"3d", "2d" or "2.5d"."""
        return str(self._get("dim"))

    @property
    def modalities(self) -> list[str]:
        return [str(m) for m in self._get("modalities")]

    @property
    def label_values(self) -> list[int]:
        return [int(v) for v in self._get("label_values")]

    @property
    def n_classes(self) -> int:
        """Classes of the label map, background included (len(label_values))."""
        return int(self._get("n_classes"))

    @property
    def regions(self) -> list[list[int]] | None:
        """train.regions (label groups, one sigmoid output each), None for softmax classes."""
        regions = self._get("regions", None)
        return [[int(v) for v in g] for g in regions] if regions else None

    @property
    def region_labels(self) -> list[int] | None:
        """The label each region paints at inference, None without regions."""
        painted = self._get("region_labels", None)
        return [int(v) for v in painted] if painted and self.regions else None

    @property
    def n_outputs(self) -> int:
        """Network output channels: one per region, else one per class (plans of older models lack the key)."""
        return int(self._get("n_outputs", None) or self.n_classes)

    @property
    def context_slices(self) -> int:
        """Slices a 2.5D network sees (1 for 2D and 3D)."""
        return int(self._get("context_slices"))

    @property
    def patch_size(self) -> list[int]:
        """The network's patch: (Z, Y, X) in 3D, (Y, X) in 2D/2.5D."""
        return [int(p) for p in self._get("patch_size")]

    @property
    def batch_size(self) -> int:
        """The global batch (over every DDP process)."""
        return int(self._get("batch_size"))

    @property
    def n_stages(self) -> int:
        return int(self._get("n_stages"))

    @property
    def kernels(self) -> list[list[int]]:
        return [list(k) for k in self._get("kernels")]

    @property
    def strides(self) -> list[list[int]]:
        return [list(s) for s in self._get("strides")]

    @property
    def base_features(self) -> int:
        return int(self._get("base_features"))

    @property
    def spacing(self) -> list[float]:
        """The median spacing (Z, Y, X) in mm."""
        return [float(v) for v in self._get("spacing")]

    @property
    def stem(self) -> str:
        """The network's first stage, "full_resolution" or "strided" (plans of older models: full resolution)."""
        return str(self._get("stem", "full_resolution"))

    @property
    def configuration(self) -> str | None:
        """model.configurations' name of these plans (2d, 3d, 3d_cascade, ...), None where not recorded."""
        conf = self._get("configuration", None)
        return None if conf is None else str(conf)

    @property
    def class_voxels(self) -> dict[str, int]:
        """Training voxels per label value (keys: the values as strings, as in JSON)."""
        return {str(k): int(v) for k, v in self._get("class_voxels").items()}

    @property
    def automatic(self) -> dict:
        """What the planner decided by itself (before the config's overrides)."""
        return dict(self._get("automatic"))

    @property
    def overridden_by_config(self) -> dict:
        return dict(self._get("overridden_by_config"))

    @property
    def cascade(self) -> Cascade | None:
        """The cascade stage these plans are (plans.json's "cascade"), None for a model of no cascade."""
        c = self._get("cascade", None)
        if not c or not c.get("stage"):
            return None
        stage = str(c["stage"])
        for key in ("factor", "prev_channels") if stage == "fullres" else ("factor",):
            if key not in c:
                raise self._missing(f"cascade.{key}")
        return Cascade(stage, int(c["factor"]), int(c["prev_channels"]) if stage == "fullres" else 0)

    # --- derived ---------------------------------------------------------------------------------------------
    @property
    def cascade_stage(self) -> str | None:
        """"lowres", "fullres" (the two stages of a cascade, voxflow.planning.cascade) or None."""
        c = self.cascade
        return c.stage if c is not None else None

    @property
    def is_3d(self) -> bool:
        return self.dim == "3d"

    @property
    def n_inputs(self) -> int:
        """Input channels: the modalities, and a cascade's full-resolution stage adds the low-resolution prediction
        one-hot (one channel per foreground class)."""
        c = self.cascade
        return len(self.modalities) + (c.prev_channels if c is not None else 0)

    @property
    def network_spacing(self) -> list[float]:
        """The spacing of the network's axes: (Z, Y, X) in 3D, (Y, X) in 2D/2.5D."""
        return self.spacing if self.is_3d else self.spacing[1:]

    @property
    def augment_slices(self) -> int:
        """Slices of one modality that share one MRI artefact in augmentation: the 2.5D context, 1 in 3D."""
        return 1 if self.is_3d else self.context_slices

    @property
    def sampler_patch(self) -> list[int]:
        """The patch the sampler reads: 3D as is (a cascade's low-resolution stage: `factor` times larger, pooled
        after the read); 2D/2.5D = k slices of (Y, X)."""
        c = self.cascade
        if c is not None and c.stage == "lowres":
            return [p * c.factor for p in self.patch_size]
        return self.patch_size if self.is_3d else [self.context_slices, *self.patch_size]

    @property
    def window_patch(self) -> list[int]:
        """The sliding window's patch over the (Z, Y, X) volume: the 3D patch, or one slice of the 2D one."""
        return self.patch_size if self.is_3d else [1, *self.patch_size]

    @property
    def class_voxel_counts(self) -> list[int]:
        """Training voxels per class, in the order of label_values (the inverse-frequency loss weights')."""
        voxels = self.class_voxels
        return [voxels[str(v)] for v in self.label_values]

    @cached_property
    def labels(self) -> LabelScheme:
        """The label scheme: label values, regions and what the outputs mean (voxflow.core.labels.LabelScheme)."""
        from voxflow.core.labels import LabelScheme

        return LabelScheme.of(self.label_values, self.regions, self.region_labels)

    @property
    def region_index_groups(self) -> list[list[int]] | None:
        """The regions as class indices (the region loss and validation), None without regions."""
        return self.labels.region_index_groups
