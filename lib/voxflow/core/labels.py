"""Region-based training (nnU-Net's `regions_class_order`): overlapping label groups as sigmoid outputs.

BraTS scores whole tumour, tumour core and enhancing tumour, which overlap: a softmax over the exclusive labels
learns edema against necrosis, a distinction no metric asks for, while one sigmoid per region learns exactly the
nested masks that are scored. `train.regions` lists the groups (label values, largest first); inference paints
them back into a label map in that order, each region's voxels taking the label it adds to the regions after it
(whole tumour [1, 2, 4] then core [1, 4] then enhancing [4] paint 2, then 1, then 4).

Array functions, and LabelScheme (a model's labels and what its outputs mean, softmax classes or regions) that
calls them; the loss lives in `voxflow.training.losses`, the wiring in plan, train and infer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def region_labels(regions: Sequence[Sequence[int]], label_values: Sequence[int],
                  explicit: Sequence[int] | None = None) -> list[int]:
    """The label each region paints (nnU-Net's regions_class_order): `explicit` if given, else the one label of
    the region that no later region holds. ValueError (the config check's text) when a region names a label that
    does not exist or is background, or when the painted label is ambiguous and not given."""
    known = set(int(v) for v in label_values) - {0}
    if not regions:
        raise ValueError("train.regions is empty: list the label groups, e.g. [[1, 2, 4], [1, 4], [4]]")
    for i, group in enumerate(regions):
        bad = sorted(set(int(v) for v in group) - known)
        if not group or bad:
            raise ValueError(f"train.regions[{i}] {list(group)}: {'empty' if not group else f'labels {bad}'} "
                             f"not among the foreground label values {sorted(known)}")
    if explicit is not None:
        if len(explicit) != len(regions):
            raise ValueError(f"train.region_labels has {len(explicit)} labels for {len(regions)} regions")
        for i, (lab, group) in enumerate(zip(explicit, regions)):
            if int(lab) not in set(int(v) for v in group):
                raise ValueError(f"train.region_labels[{i}] = {lab} is not in its region {list(group)}")
        return [int(v) for v in explicit]
    owns = [sorted(set(int(v) for v in group) - set(int(v) for g in regions[i + 1:] for v in g))
            for i, group in enumerate(regions)]
    for i, (group, own) in enumerate(zip(regions, owns)):
        if len(own) != 1:
            hint = [o[0] if o else sorted(int(v) for v in g)[0] for o, g in zip(owns, regions)]
            raise ValueError(f"train.regions[{i}] {list(group)} adds labels {own} to the regions after it, so the "
                             f"label it paints at inference is ambiguous: set train.region_labels (one label per "
                             f"region, e.g. {hint})")
    return [own[0] for own in owns]


def region_index_groups(regions: Sequence[Sequence[int]], label_values: Sequence[int]) -> list[list[int]]:
    """Regions as class indices (the sampler maps label values to 0..K-1)."""
    index = {int(v): i for i, v in enumerate(label_values)}
    return [[index[int(v)] for v in group] for group in regions]


def labels_from_region_probabilities(probs: np.ndarray, labels: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """Region probabilities (R, *spatial) -> label map, painting region i's voxels above `threshold` with labels[i]
    in order (a later, inner region overwrites the outer one)."""
    seg = np.zeros(probs.shape[1:], np.uint8)
    for p, lab in zip(probs, labels):
        seg[p > threshold] = lab
    return seg




def foreground_groups(label_values: Sequence[int], regions: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """The label groups that metrics and post-processing score: the regions, else each non-zero label alone."""
    if regions:
        return [[int(v) for v in g] for g in regions]
    return [[int(v)] for v in label_values if int(v) != 0]


def labels_from_probabilities(probs: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Softmax probabilities (K, *spatial) -> label map: the argmax class mapped to its label value."""
    lut = np.asarray(label_values, dtype=np.uint8)
    return lut[np.argmax(probs, axis=0)]


def class_indices(labels: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """A label map in label values -> class indices (0..K-1, the order of `label_values`)."""
    lut = np.zeros(256, np.uint8)
    lut[np.asarray(label_values, int)] = np.arange(len(label_values), dtype=np.uint8)
    return lut[labels]


@dataclass(frozen=True)
class LabelScheme:
    """What a model's outputs mean (nnU-Net's LabelManager): the label values, and either one softmax class per
    label or, with regions (train.regions), one sigmoid output per label group painted back in order.

    Build it with `LabelScheme.of` (it checks the regions and decides the labels they paint, region_labels) or
    from a model's plans (voxflow.planning.plans.Plans.labels)."""

    label_values: tuple[int, ...]
    regions: tuple[tuple[int, ...], ...] | None = None  # label groups, outermost first; None: softmax classes
    region_labels: tuple[int, ...] | None = None  # the label each region paints (set with regions)

    @classmethod
    def of(cls, label_values: Sequence[int], regions: Sequence[Sequence[int]] | None = None,
           explicit: Sequence[int] | None = None) -> LabelScheme:
        """The scheme of `label_values`, with `regions` (empty or None: softmax classes) painting `explicit` labels,
        else the ones region_labels decides (ValueError, the config check's text, when it cannot)."""
        values = tuple(int(v) for v in label_values)
        if not regions:
            return cls(values)
        groups = tuple(tuple(int(v) for v in g) for g in regions)
        return cls(values, groups, tuple(region_labels(groups, values, explicit)))

    @property
    def uses_regions(self) -> bool:
        return self.regions is not None

    @property
    def activation(self) -> str:
        """The network outputs' activation: "sigmoid" (one per region) or "softmax" (over the classes)."""
        return "sigmoid" if self.uses_regions else "softmax"

    @property
    def n_outputs(self) -> int:
        """Network output channels: one per region, else one per class (background included)."""
        return len(self.regions) if self.regions is not None else len(self.label_values)

    @property
    def foreground_labels(self) -> list[int]:
        """The non-zero label values."""
        return [v for v in self.label_values if v != 0]

    @property
    def foreground_groups(self) -> list[list[int]]:
        """The label groups that metrics and post-processing score: the regions, else each non-zero label alone."""
        return foreground_groups(self.label_values, self.regions)

    @property
    def region_index_groups(self) -> list[list[int]] | None:
        """The regions as class indices (the sampler's 0..K-1, what the region loss reads), None without regions."""
        return region_index_groups(self.regions, self.label_values) if self.regions is not None else None

    def labels_from_probabilities(self, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Network probabilities (n_outputs, *spatial) -> label map: the softmax argmax mapped to label values, or
        the regions above `threshold` painted in order (labels_from_region_probabilities)."""
        if self.region_labels is not None:
            return labels_from_region_probabilities(probs, self.region_labels, threshold)
        return labels_from_probabilities(probs, self.label_values)

    def foreground_probability(self, probs: np.ndarray) -> np.ndarray:
        """P(any foreground): 1 - P(background), or the outermost (first) region's probability."""
        return probs[0] if self.uses_regions else 1.0 - probs[0]

    def class_indices(self, labels: np.ndarray) -> np.ndarray:
        """A label map in label values -> class indices (the order of label_values)."""
        return class_indices(labels, self.label_values)
