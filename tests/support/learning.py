"""Tiny synthetic zarr stores for the learning stages (as the to_zarr step writes them), their plans, and the
training curve a fold writes."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import torch

from voxflow.planning.planner import make_plans
from voxflow.planning.fingerprint import fingerprint
from voxflow.preprocess.store import write_subject_store

SHAPE = (24, 32, 28)
MODS = ["t1", "t2"]
LABEL_VALUES = [0, 1, 2, 4]
CPU = torch.device("cpu")


def _ball(shape, centre, radius) -> np.ndarray:
    zz, yy, xx = np.ogrid[tuple(slice(0, s) for s in shape)]
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def synthetic_label(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Blobs of BraTS values 1, 2, 4 (4 inside 1 inside 2, as a tumour), placed by `seed`."""
    rng = np.random.default_rng(seed)
    c = [int(rng.integers(s // 3, s - s // 3)) for s in shape]
    lab = np.zeros(shape, np.uint8)
    lab[_ball(shape, c, 5)] = 2
    lab[_ball(shape, c, 3)] = 1
    lab[_ball(shape, c, 1.5)] = 4
    return lab


def write_store(path: Path, label: np.ndarray | None, coded: bool = False, mask: np.ndarray | None = None,
                seed: int = 0, dtype: str = "float16", chunk: int = 16) -> Path:
    """A store as the to_zarr step writes it (2 channels, 2 mm, identity direction).

    coded=True: channel 0 holds the stored label value and channel 1 the voxel's linear index + 1
    (float32, exact), so a sampled patch tells where it came from."""
    shape = label.shape if label is not None else SHAPE
    if coded:
        idx = np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)
        image = np.stack([label.astype(np.float32), idx])
        dtype = "float32"
    else:
        rng = np.random.default_rng(seed)
        fg = (label > 0).astype(np.float32) if label is not None else 0
        image = np.stack([rng.normal(0, 0.3, shape) + 2.0 * fg,
                          rng.normal(0, 0.3, shape) + (label == 4 if label is not None else 0)]).astype(np.float32)
    mask = np.ones(shape, np.uint8) if mask is None else mask
    write_subject_store(path, image, mask, label, MODS, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3),
                        {"dir": "", "native_reference": ""}, dtype=dtype, chunk=chunk)
    return Path(path)


def plans_for(cfg: dict, stores: dict[str, str], **model) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["model"].update(model)
    return make_plans(fingerprint(stores, "threads"), cfg, MODS, LABEL_VALUES, "cpu")


def read_curve(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
