"""Region-based training (nnU-Net's `regions_class_order`): overlapping label groups as sigmoid outputs.

BraTS scores whole tumour, tumour core and enhancing tumour, which overlap: a softmax over the exclusive labels
learns edema against necrosis, a distinction no metric asks for, while one sigmoid per region learns exactly the
nested masks that are scored. `train.regions` lists the groups (label values, largest first); inference paints
them back into a label map in that order, each region's voxels taking the label it adds to the regions after it
(whole tumour [1, 2, 4] then core [1, 4] then enhancing [4] paint 2, then 1, then 4).

Array functions only: the loss lives in `voxflow.training.losses`, the wiring in plan, train and infer.
"""

from __future__ import annotations

from collections.abc import Sequence

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


