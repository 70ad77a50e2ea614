"""What the benchmarks share. A bench runs as `.venv/bin/python bench/<name>.py` from the repository root, so its
folder (bench/) is on sys.path and `from common import ...` finds this module; voxflow is the installed package.

- ROOT, CONFIG, SHARED_DATA: the repository's folders and files;
- read_config: a config file read over config/config.yaml as the Snakefile reads it;
- finished_run, train_and_score: a finished run's stores, split and fingerprint, and fold 0 trained on them and
  scored by Dice per region (bench/regions.py, bench/stem.py);
- dice: Dice of two boolean masks;
- run_comparison: voxflow's sliding window against MONAI's (bench/sliding_window.py, bench/train_infer.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"
SHARED_DATA = ROOT / ".." / "shared" / "data"
SLIDING_WINDOW = Path(__file__).resolve().with_name("sliding_window.py")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """voxflow's Dice (voxflow.core.metrics.dice), both masks empty NaN: left out of the benches' nanmeans."""
    from voxflow.core.metrics import dice

    return dice(pred, ref, empty=float("nan"))


def read_config(configfile: str | Path) -> dict:
    """The config of `snakemake --configfile FILE`: FILE read over config/config.yaml (as the Snakefile reads it;
    config/config.yaml alone when FILE is it), validated with the schema's defaults filled."""
    from voxflow.settings import validate_config
    from voxflow.settings.loader import read_config

    base = None if Path(configfile).resolve() == CONFIG.resolve() else CONFIG
    return validate_config(read_config(configfile, base=base))


def finished_run(configfile: str) -> tuple[dict, dict, dict, dict]:
    """(config, fingerprint, split, stores) of a run `snakemake --configfile` finished: the config read over
    config/config.yaml as the Snakefile reads it, the stores of the training subjects and of the complete test
    subjects (an incomplete subject's store lacks a modality: not a fair test). A run stopped before its
    fingerprint rule: the fold's subjects measured as that rule does."""
    from voxflow.planning.fingerprint import fingerprint

    cfg = read_config(configfile)
    model_dir = Path(cfg["output_dir"]) / "model"
    split = json.loads((model_dir / "split.json").read_text())
    stores = json.loads((model_dir / "stores.json").read_text())
    if (model_dir / "fingerprint.json").is_file():
        fp = json.loads((model_dir / "fingerprint.json").read_text())
    else:
        fp = fingerprint({s: stores[s] for s in split["folds"][0]["train"] + split["folds"][0]["val"]}, "threads")
    incomplete = {row["subject"] for row in split.get("incomplete") or []}
    stores.update({s: str(Path(cfg["output_dir"]) / "zarr" / f"{s}.zarr") for s in split["test"]
                   if s not in incomplete})
    return cfg, fp, split, stores


def train_and_score(cfg: dict, fp: dict, split: dict, stores: dict, out: Path, iters: int,
                    budget_minutes: float | None = None) -> dict:
    """Train fold 0 of `split` on CPU (`iters` iterations, or as many as fit `budget_minutes`), then score each
    region of evaluate.regions by Dice on the fold's validation and the test subjects (store grid, brain mask,
    no mirroring). {"train_s", "plans", "dice": {region: [per subject]}}."""
    import torch
    import zarr

    from voxflow.inference.predict import predict_probabilities, segmentation
    from voxflow.planning.planner import make_plans
    from voxflow.training.train import train_fold
    from voxflow.nn.checkpoints import pick_device

    plans = make_plans(fp, cfg, cfg["input"]["modalities"], cfg["input"]["label_values"], "cpu")
    tcfg = dict(cfg["train"], device="cpu", epochs=max(1, iters // 10), iters_per_epoch=10, workers=0,
                budget_minutes=budget_minutes)
    fold = split["folds"][0]
    device = pick_device("cpu")
    t0 = time.time()
    train_fold([stores[s] for s in fold["train"]], [stores[s] for s in fold["val"]], plans, tcfg, out,
               device=device, progress=False)
    train_s = time.time() - t0
    scores: dict[str, list[float]] = {name: [] for name in cfg["evaluate"]["regions"]}
    for s in fold["val"] + split["test"]:
        if s not in stores:
            continue
        root = zarr.open_group(stores[s], mode="r")
        if "labels/lesion/0" not in root:
            continue
        probs, got = predict_probabilities(stores[s], [str(out / "model_final.pt")],
                                           dict(cfg["infer"], tta=False), torch.device("cpu"))
        seg = np.where(root["labels/brain/0"][:] > 0, segmentation(probs, got), 0)
        ref = root["labels/lesion/0"][:]
        for name, ids in cfg["evaluate"]["regions"].items():
            scores[name].append(dice(np.isin(seg, ids), np.isin(ref, ids)))
    return {"train_s": train_s, "plans": plans, "dice": {k: v for k, v in scores.items()}}


def run_comparison(
    shape: Sequence[int] = (160, 192, 160),
    patch: Sequence[int] = (64, 64, 64),
    overlap: float = 0.5,
    batch_size: int = 2,
    seed: int = 0,
) -> dict:
    """Time and peak memory of voxflow's and MONAI's sliding window, each in a fresh measure process
    (bench/sliding_window.py --measure).

    Returns ``sw_speed_vs_monai`` (= monai_s / voxflow_s, >1 means voxflow is faster) and
    ``sw_peakmem_vs_monai`` (= voxflow peak RSS / MONAI peak RSS, <1 means leaner).
    """
    argv = ["--shape", *map(str, shape), "--patch", *map(str, patch), "--overlap", str(overlap),
            "--batch-size", str(batch_size), "--seed", str(seed)]
    res = {}
    for impl in ("voxflow", "monai"):
        cmd = [sys.executable, str(SLIDING_WINDOW), "--measure", impl, *argv]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"measuring {impl} failed:\n{p.stderr[-4000:]}")
        res[impl] = json.loads(p.stdout.strip().splitlines()[-1])
    v, m = res["voxflow"], res["monai"]
    return {
        "sw_speed_vs_monai": m["seconds"] / v["seconds"],
        "sw_peakmem_vs_monai": v["peak_mb"] / m["peak_mb"],
        "voxflow_s": v["seconds"],
        "monai_s": m["seconds"],
        "sw_cpu_speed_vs_monai": (m["user_s"] + m["sys_s"]) / (v["user_s"] + v["sys_s"]),
        "voxflow_cpu_s": [v["user_s"], v["sys_s"]],
        "monai_cpu_s": [m["user_s"], m["sys_s"]],
        "voxflow_peak_mb": v["peak_mb"],
        "monai_peak_mb": m["peak_mb"],
        "max_class_mean_diff": max(abs(a - b) for a, b in zip(v["class_means"], m["class_means"])),
        "shape": list(shape),
        "patch": list(patch),
        "overlap": overlap,
        "batch_size": batch_size,
    }
