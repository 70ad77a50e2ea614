"""plans.json read back (nnU-Net's PlansManager): a frozen `Plans` with typed accessors and its label scheme.

Every automatic decision lands in a readable JSON file that later rules read back: the fingerprint
(voxflow.planning.fingerprint) holds what was measured, the plans (voxflow.planning.planner) what was decided from
it and which choices the config overrode, the split (voxflow.core.split) which subject is in which fold. Every
reader of plans.json goes through `Plans`.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxflow.core.layout import PLANS_FILE


if TYPE_CHECKING:
    from voxflow.core.labels import LabelScheme

# numpy is imported inside the functions: reading plans (Plans) costs no heavy import, so that opening a model
# archive (voxflow.model_sharing.archive) stays with the standard library


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
    source: str = PLANS_FILE  # where the plans came from (a plans.json path, a checkpoint), for the errors

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = PLANS_FILE) -> Plans:
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
        where = "" if self.source == PLANS_FILE else f" ({self.source})"
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
