"""Benchmark: the strided stem against nnU-Net's full-resolution first stage, same data, same patch, CPU.

Reads a finished run (its zarr stores, split.json and fingerprint.json, as `snakemake` left them for
--configfile, read over config/config.yaml as the Snakefile does) and trains fold 0 three times from the same
seed on the same patch (--patch, default 64^3, where the planner's automatic choice is the strided stem on CPU):

- full: model.stem full_resolution, --iters iterations (nnU-Net's topology);
- strided_iters: model.stem strided, the same iterations;
- strided_time: model.stem strided, as many iterations as fit the full model's training time
  (train.budget_minutes = its measured minutes): the comparison a CPU user lives with.

Every model predicts the fold's validation subjects and the held-out test subjects (no test-time mirroring);
each region of evaluate.regions is scored by Dice on the store's grid inside its brain mask (bench/common.py
train_and_score, as bench/regions.py scores it).

Prints a table and one final line:
  stem subjects=<n> iters=<n> patch=<z>x<y>x<x> dice_full=<x> dice_strided_iters=<x> dice_strided_time=<x>
       train_s_full=<x> train_s_strided_iters=<x> speedup=<x>
(dice_*: the mean over regions and subjects).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, finished_run, train_and_score


def with_stem(cfg: dict, stem: str, patch: list[int]) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["model"].update(stem=stem, patch_size=list(patch))
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--iters", type=int, default=300, help="training iterations of the full and strided_iters models")
    ap.add_argument("--patch", type=int, nargs="+", default=[64], help="patch size: one value (cube) or three")
    args = ap.parse_args()
    patch = args.patch * 3 if len(args.patch) == 1 else args.patch

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg, fp, split, stores = finished_run(args.configfile)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        res["full"] = train_and_score(with_stem(cfg, "full_resolution", patch), fp, split, stores,
                                      Path(tmp) / "full", args.iters)
        res["strided_iters"] = train_and_score(with_stem(cfg, "strided", patch), fp, split, stores,
                                               Path(tmp) / "strided_iters", args.iters)
        res["strided_time"] = train_and_score(with_stem(cfg, "strided", patch), fp, split, stores,
                                              Path(tmp) / "strided_time", 100 * args.iters,
                                              budget_minutes=res["full"]["train_s"] / 60.0)
    names = list(cfg["evaluate"]["regions"])
    n = len(res["full"]["dice"][names[0]])
    print(f"{'region':<14}" + "".join(f"{m:>15}" for m in res) + f"   (mean Dice over {n} held-out subjects)")
    for name in names:
        print(f"{name:<14}" + "".join(f"{float(np.nanmean(r['dice'][name])):>15.3f}" for r in res.values()))
    print("train seconds: " + ", ".join(f"{m} {r['train_s']:.0f}" for m, r in res.items()))
    print("plans: " + ", ".join(f"{m} stem {r['plans']['stem']} stages {r['plans']['n_stages']} patch "
                                f"{r['plans']['patch_size']}" for m, r in res.items()))
    print("per subject: " + json.dumps({m: r["dice"] for m, r in res.items()}))
    mean = {m: float(np.nanmean([v for name in names for v in r["dice"][name]])) for m, r in res.items()}
    print(f"stem subjects={n} iters={args.iters} patch={'x'.join(map(str, patch))} "
          f"dice_full={mean['full']:.3f} dice_strided_iters={mean['strided_iters']:.3f} "
          f"dice_strided_time={mean['strided_time']:.3f} train_s_full={res['full']['train_s']:.0f} "
          f"train_s_strided_iters={res['strided_iters']['train_s']:.0f} "
          f"speedup={res['full']['train_s'] / res['strided_iters']['train_s']:.2f}")


if __name__ == "__main__":
    main()
