"""What a resumable training run needs, shared by segmentation training and synthesis: the device, the poly
learning rate, per-sample seeded generators, the run key that says whether a checkpoint belongs to this run, and
weights-only checkpoints."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from voxflow.core.atomic import atomic_path

log = logging.getLogger("voxflow.train")


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    return torch.device(requested)


def poly_lr(base_lr: float, step: int, total: int, exponent: float = 0.9) -> float:
    return base_lr * (1 - min(step, total - 1) / total) ** exponent


def sample_generator(seed: int, step: int, index: int, device: torch.device) -> torch.Generator:
    """The augmentation generator of sample `index` of the global batch at `step`: the same in
    whichever process holds the sample, and on resume."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def store_stamps(paths) -> list[list]:
    """Each store's path and modification time: a store rewritten from changed data is another store."""
    return [[str(p), os.stat(p).st_mtime_ns if os.path.exists(p) else None] for p in paths]


def run_key(payload: dict, cfg: dict, ignored: frozenset[str]) -> str:
    """What a checkpoint may be resumed for: `payload` (the stores' stamps, the split, the plans) and the settings
    of `cfg` except the `ignored` ones (how the run runs, not what it computes). A checkpoint of another run (a
    subject excluded or added, a setting changed) would otherwise be resumed, silently."""
    text = json.dumps({**payload, "cfg": {k: v for k, v in cfg.items() if k not in ignored}}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def resumable_checkpoint(path: Path, key: str, device: torch.device, differs: str,
                         logger: logging.Logger = log) -> dict | None:
    """The checkpoint at `path` if it belongs to this run (its run_key is `key`), else None: a checkpoint of
    another run is named in a warning (`differs`: what may differ; on the caller's `logger`) and not resumed."""
    state = load_checkpoint(path, device) if path.exists() else None
    if state is not None and state.get("run_key") != key:
        logger.warning("%s is from another run (%s): training from scratch", path, differs)
        return None
    return state


def save_checkpoint(path: Path, **state) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    return torch.load(path, map_location=device, weights_only=True)
