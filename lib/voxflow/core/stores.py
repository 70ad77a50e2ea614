"""The one reader of a subject's zarr store (what preprocess.store writes): the arrays, the geometry and the
attributes, for every stage after preprocessing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxflow.errors import InputError

if TYPE_CHECKING:
    import numpy as np

# Where preprocess.store.write_subject_store puts things (an OME-Zarr image with two label images); read only here.
IMAGE = "0"  # the image, (C, Z, Y, X) float, full resolution
MASK = "labels/brain/0"  # the foreground mask (the brain; in native space the body or skull-stripping mask)
LABEL = "labels/lesion/0"  # the reference label, where the subject has one (attribute has_label)
ATTRS = "voxflow"  # root attribute: modalities, grid (shape, spacing, origin, direction), transforms, has_label, ...
SAMPLES = "voxflow"  # group of the foreground samples: fg_<class> voxel coordinates, (N, 3)

StoreRef = Any  # a store's path, or the group open_store returned (several reads, one opening)


def open_store(path: str | os.PathLike) -> Any:
    """A subject's store, read-only (the zarr group): to take several of the reads below from one opening."""
    import zarr

    return zarr.open_group(str(path), mode="r")


def _root(store: StoreRef) -> Any:
    return open_store(store) if isinstance(store, (str, os.PathLike)) else store


def store_meta(store: StoreRef, default: dict | None = None) -> dict:
    """The store's voxflow attributes (a copy); `default` for a store without them, else KeyError."""
    root = _root(store)
    if default is not None and ATTRS not in root.attrs:
        return dict(default)
    return dict(root.attrs[ATTRS])


def image_array(store: StoreRef) -> Any:
    """The image, (C, Z, Y, X), as the lazy zarr array (patch-wise readers)."""
    return _root(store)[IMAGE]


def label_array(store: StoreRef) -> Any:
    """The reference label as the lazy zarr array; KeyError for a store without one."""
    return _root(store)[LABEL]


def read_store_image(store: StoreRef) -> np.ndarray:
    return image_array(store)[:]


def read_store_label(store: StoreRef) -> np.ndarray:
    """The reference label (Z, Y, X); KeyError for a store without one."""
    return label_array(store)[:]


def read_store_reference(store: StoreRef) -> tuple[np.ndarray, list[float]]:
    """The reference label and its spacing (z, y, x; mm): what a prediction on the store's grid is scored against.
    KeyError for a store without a label."""
    root = _root(store)
    return read_store_label(root), store_meta(root)["spacing_zyx"]


def read_store_mask(store: StoreRef) -> np.ndarray:
    """The foreground mask (Z, Y, X), uint8."""
    return _root(store)[MASK][:]


def foreground_samples(store: StoreRef) -> dict[str, np.ndarray]:
    """Class (as a string) -> sampled voxel coordinates of that class, (N, 3); {} for a store without samples."""
    root = _root(store)
    if SAMPLES not in root:
        return {}
    return {k[3:]: root[f"{SAMPLES}/{k}"][:] for k in root[SAMPLES].array_keys()}


def read_subject_store(path: str | Path) -> dict:
    """Read a whole store back (arrays as numpy): for tests, evaluation and small cohorts."""
    root = open_store(path)
    meta = store_meta(root)
    out = {"image": read_store_image(root), "meta": meta, "mask": read_store_mask(root)}
    out["label"] = read_store_label(root) if meta["has_label"] else None
    return out


def store_path(path: str) -> str:
    """A subject's zarr store from what a rule names as its input: the store itself, or the subject's status
    file (status/subjects/<subject>.json), which stands for the store where no rule can declare it (input.on_error:
    exclude, one job per subject: an excluded subject has none)."""
    if str(path).endswith(".json"):
        status = json.loads(Path(path).read_text())
        if status.get("status") != "ok" or not status.get("store"):
            raise InputError(status.get("subject", "?"), path, f"subject was excluded at its {status.get('step')} "
                                                                f"step: {status.get('problem')}")
        return status["store"]
    return str(path)


def subject_stores(inp: dict, subjects: list[str] | None = None) -> dict[str, str]:
    """Subject -> store path: from the manifest `inp["stores"]` (the training_stores rule) and any
    inputs named store_<subject>; restricted to `subjects` if given."""
    found = json.loads(Path(inp["stores"]).read_text()) if inp.get("stores") else {}
    found.update({k[6:]: store_path(v) for k, v in inp.items() if k.startswith("store_")})
    return found if subjects is None else {s: found[s] for s in subjects}
