"""Benchmark: region-based training against per-label softmax training, same data, same budget.

Reads a finished run (its zarr stores, split.json and fingerprint.json, as `snakemake` left them for
--configfile, read over config/config.yaml as the Snakefile does), trains fold 0 twice from the same seed for
the same number of iterations: once with one softmax class per label (the config's train.regions removed), once
with one sigmoid output per region (train.regions, or --regions). Both models predict the fold's validation
subjects and the held-out test subjects (no test-time mirroring), and each region of evaluate.regions is scored
by Dice on the store's grid, inside its brain mask.

Prints a table and one final line:
  regions subjects=<n> iters=<n> dice_<region>_softmax=<x> dice_<region>_regions=<x> ... mean_gain=<x>
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    denom = int(pred.sum()) + int(ref.sum())
    return float("nan") if denom == 0 else 2.0 * int((pred & ref).sum()) / denom


def with_regions(cfg: dict, regions) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["train"]["regions"] = regions
    if not regions:
        cfg["train"]["region_labels"] = None
    return cfg


def train_and_score(cfg: dict, fp: dict, split: dict, stores: dict, out: Path, iters: int,
                    budget_minutes: float | None = None) -> dict:
    """Train fold 0 of `split` on CPU (`iters` iterations, or as many as fit `budget_minutes`), then score each
    region of evaluate.regions by Dice on the fold's validation and the test subjects (store grid, brain mask,
    no mirroring). {"train_s", "plans", "dice": {region: [per subject]}}."""
    import torch
    import zarr

    from voxflow.inference.predict import predict_probabilities, segmentation
    from voxflow.planning.plans import make_plans
    from voxflow.training.train import pick_device, train_fold

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
            scores[name].append(_dice(np.isin(seg, ids), np.isin(ref, ids)))
    return {"train_s": train_s, "plans": plans, "dice": {k: v for k, v in scores.items()}}


def finished_run(configfile: str) -> tuple[dict, dict, dict, dict]:
    """(config, fingerprint, split, stores) of a run `snakemake --configfile` finished: the config read over
    config/config.yaml as the Snakefile reads it, the stores of the training subjects and of the complete test
    subjects (an incomplete subject's store lacks a modality: not a fair test). A run stopped before its
    fingerprint rule: the fold's subjects measured as that rule does."""
    from voxflow.settings.load import validate_config
    from voxflow.planning.plans import fingerprint
    from voxflow.inputs.validate import load_config

    default = ROOT / "config" / "config.yaml"
    base = None if Path(configfile).resolve() == default.resolve() else str(default)
    cfg = validate_config(load_config(configfile, base=base), ROOT / "config" / "config.schema.yaml")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--regions", default=None, help="JSON label groups (default: train.regions of the config, "
                                                    "else BraTS 2018 [[1, 2, 4], [1, 4], [4]])")
    ap.add_argument("--iters", type=int, default=300, help="training iterations of each model (same for both)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg, fp, split, stores = finished_run(args.configfile)
    regions = json.loads(args.regions) if args.regions else (cfg["train"]["regions"] or [[1, 2, 4], [1, 4], [4]])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, reg in (("softmax", None), ("regions", regions)):
            results[mode] = train_and_score(with_regions(cfg, reg), fp, split, stores, Path(tmp) / mode, args.iters)
    names = list(cfg["evaluate"]["regions"])
    n = len(results["softmax"]["dice"][names[0]])
    print(f"{'region':<14}{'softmax':>10}{'regions':>10}   (mean Dice over {n} held-out subjects, "
          f"{args.iters} iterations each)")
    line, gains = [f"regions subjects={n} iters={args.iters}"], []
    for name in names:
        a, b = (float(np.nanmean(results[m]["dice"][name])) for m in ("softmax", "regions"))
        gains.append(b - a)
        print(f"{name:<14}{a:>10.3f}{b:>10.3f}")
        line += [f"dice_{name}_softmax={a:.3f}", f"dice_{name}_regions={b:.3f}"]
    print("train seconds: " + ", ".join(f"{m} {results[m]['train_s']:.0f}" for m in results))
    print("per subject: " + json.dumps({m: results[m]["dice"] for m in results}))
    print(" ".join(line + [f"mean_gain={float(np.mean(gains)):.3f}"]))


if __name__ == "__main__":
    main()
