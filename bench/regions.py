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
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, finished_run, train_and_score


def with_regions(cfg: dict, regions) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["train"]["regions"] = regions
    if not regions:
        cfg["train"]["region_labels"] = None
    return cfg


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
