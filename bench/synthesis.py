"""Benchmark: missing-modality synthesis, measured on held-out subjects only.

Reads a finished preprocessing run (its zarr stores, split.json, fingerprint.json, as `snakemake` left them for
--configfile; `snakemake ... <output_dir>/model/stores.json` is enough). Training subjects: fold 0's training
subjects; held out: fold 0's validation subjects and the complete test subjects. Then:

1. trains the synthesis model (voxflow.synth, the config's `synthesis` section, --synth-iters) on the training
   subjects, and scores each modality synthesized from the others on every held-out subject: PSNR, SSIM and MAE
   inside the brain mask against the real image (voxflow.synth.metrics);
2. trains one segmentation model on all real modalities (--seg-iters) and scores the held-out subjects' lesion
   Dice (label > 0, on the store's grid, inside the brain) with (a) every modality real, (b) --modality
   synthesized, (c) --modality zero-filled (what a user would do by hand);
3. trains a second segmentation model on the same subjects without --modality (its channel dropped from
   temporary stores) and scores it: (d).

Prints a table and one final line:
  synthesis psnr=<dB> ssim=<x> mae=<x> dice_real=<x> dice_synth=<x> dice_zero=<x> dice_dropped=<x> modality=<m> ...
(psnr/ssim/mae: of --modality, mean over held-out subjects; every modality's in the table).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, dice


def _train_seg(cfg: dict, modalities: list[str], train: list[str], val: list[str], out: Path, iters: int) -> Path:
    """A segmentation model planned from its own training stores' fingerprint, as the workflow's plan rule would."""
    import torch

    from voxflow.planning.planner import make_plans
    from voxflow.planning.fingerprint import fingerprint
    from voxflow.training.train import train_fold

    cfg = copy.deepcopy(cfg)
    fp = fingerprint({Path(p).name: p for p in train})
    plans = make_plans(fp, cfg, modalities, cfg["input"]["label_values"], "cpu")
    tcfg = dict(cfg["train"], device="cpu", epochs=max(1, iters // 10), iters_per_epoch=10, workers=0)
    tcfg["augment"] = {k: v for k, v in (tcfg.get("augment") or {}).items() if k != "synthetic_modality_p"}
    train_fold(train, val, plans, tcfg, out, device=torch.device("cpu"), progress=False)
    return out / "model_final.pt"


def _seg_dice(model: Path, store: str, cfg: dict, image: np.ndarray | None = None) -> float:
    """Lesion Dice of the model on the store (its image replaced by `image` when given, via a temporary store)."""
    import torch
    import zarr

    from voxflow.inference.predict import predict_probabilities, segmentation

    path = store
    tmp = None
    if image is not None:
        tmp = tempfile.TemporaryDirectory()
        path = _store_with(store, image, Path(tmp.name) / Path(store).name)
    probs, plans = predict_probabilities(path, [str(model)], dict(cfg["infer"], tta=False), torch.device("cpu"))
    root = zarr.open_group(store, mode="r")
    seg = np.where(root["labels/brain/0"][:] > 0, segmentation(probs, plans), 0)
    d = dice(seg > 0, root["labels/lesion/0"][:] > 0)
    if tmp is not None:
        tmp.cleanup()
    return d


def _store_with(store: str, image: np.ndarray, out: Path, modalities: list[str] | None = None) -> str:
    """A copy of the store with another image (a channel synthesized, zero-filled or dropped), float32."""
    from voxflow.preprocess.store import write_store_like
    from voxflow.core.stores import read_subject_store

    write_store_like(read_subject_store(store), image, out, modalities, dtype="float32")
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--modality", default=None, help="the modality synthesized for the Dice comparison "
                                                     "(default: flair if present, else the last one)")
    ap.add_argument("--synth-iters", type=int, default=None, help="synthesis iterations (default: the config's)")
    ap.add_argument("--seg-iters", type=int, default=300, help="iterations of each segmentation model")
    ap.add_argument("--keep", default=None, help="keep the trained models in this folder")
    ap.add_argument("--figures", default=None, help="write each held-out subject's figure here: its modalities "
                                                    "with --modality synthesized, beside the real one")
    args = ap.parse_args()

    import torch
    import yaml
    import zarr

    from voxflow.settings import validate_config
    from voxflow.synth.infer import synthesize
    from voxflow.synth.metrics import mae, psnr, ssim3d, synthesis_figure
    from voxflow.synth.model import load_generator
    from voxflow.synth.train import train_synthesis

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = validate_config(yaml.safe_load(Path(args.configfile).read_text()))
    mods = list(cfg["input"]["modalities"])
    target = args.modality or ("flair" if "flair" in mods else mods[-1])
    t_idx = mods.index(target)
    model_dir = Path(cfg["output_dir"]) / "model"
    split = json.loads((model_dir / "split.json").read_text())
    stores = {s: str(Path(cfg["output_dir"]) / "zarr" / f"{s}.zarr") for f in split["folds"]
              for s in f["train"] + f["val"]}
    incomplete = {e["subject"] for e in split.get("incomplete") or []}
    stores.update({s: str(Path(cfg["output_dir"]) / "zarr" / f"{s}.zarr") for s in split["test"]
                   if s not in incomplete})
    fold = split["folds"][0]
    train = fold["train"]
    held = [s for s in fold["val"] + split["test"] if s in stores]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_synthesis_"))
    work.mkdir(parents=True, exist_ok=True)

    scfg = dict(cfg["synthesis"])
    if args.synth_iters:
        scfg["iterations"] = args.synth_iters
    scfg = {k: v for k, v in scfg.items() if k != "threads"}
    t0 = time.time()
    train_synthesis([stores[s] for s in train], scfg, work / "synthesis", progress=True)
    synth_s = time.time() - t0
    gen, gmeta = load_generator(work / "synthesis" / "generator.pt", torch.device("cpu"))

    quality: dict[str, dict[str, list[float]]] = {m: {"psnr": [], "ssim": [], "mae": []} for m in mods}
    synthesized: dict[str, np.ndarray] = {}
    images: dict[str, np.ndarray] = {}  # each held-out store's image, read once
    for s in held:
        root = zarr.open_group(stores[s], mode="r")
        image, brain = root["0"][:].astype(np.float32), root["labels/brain/0"][:] > 0
        images[s] = image
        for i, m in enumerate(mods):
            out = synthesize(image, [j != i for j in range(len(mods))], gen, gmeta, mask=brain)
            quality[m]["psnr"].append(psnr(image[i], out[i], brain))
            quality[m]["ssim"].append(ssim3d(image[i], out[i], brain))
            quality[m]["mae"].append(mae(image[i], out[i], brain))
            if i == t_idx:
                synthesized[s] = out
                if args.figures:
                    synthesis_figure({n: out[j] * brain for j, n in enumerate(mods)}, [target],
                                     Path(args.figures) / f"{s}_{target}.png", real={target: image[i] * brain},
                                     title=f"{s}: {target} synthesized (held out), beside the real one", mask=brain)

    # segmentation: one model on every real modality, one without the target modality
    t0 = time.time()
    real_model = _train_seg(cfg, mods, [stores[s] for s in train], [stores[s] for s in fold["val"]],
                            work / "seg_all", args.seg_iters)
    dropped_dir = work / "stores_without"
    rest = [m for m in mods if m != target]

    def image_of(s: str) -> np.ndarray:
        return images[s] if s in images else zarr.open_group(stores[s], mode="r")["0"][:].astype(np.float32)

    without = {s: _store_with(stores[s], np.delete(image_of(s), t_idx, axis=0), dropped_dir / f"{s}.zarr", rest)
               for s in train + held}
    drop_cfg = copy.deepcopy(cfg)
    drop_cfg["input"]["modalities"] = rest
    drop_model = _train_seg(drop_cfg, rest, [without[s] for s in train],
                            [without[s] for s in fold["val"] if s in without], work / "seg_without", args.seg_iters)
    seg_s = time.time() - t0
    dice: dict[str, list[float]] = {"real": [], "synth": [], "zero": [], "dropped": []}
    for s in held:
        zero = images[s].copy()
        zero[t_idx] = 0.0
        dice["real"].append(_seg_dice(real_model, stores[s], cfg))
        dice["synth"].append(_seg_dice(real_model, stores[s], cfg, synthesized[s]))
        dice["zero"].append(_seg_dice(real_model, stores[s], cfg, zero))
        dice["dropped"].append(_seg_dice(drop_model, without[s], drop_cfg))

    print(f"held-out subjects: {held}; synthesis trained on {len(train)} subjects in {synth_s:.0f} s, "
          f"segmentation models in {seg_s:.0f} s")
    print(f"{'modality':<10}{'PSNR dB':>9}{'SSIM':>8}{'MAE':>8}   (synthesized from the others, inside the brain)")
    for m in mods:
        q = {k: float(np.nanmean(v)) for k, v in quality[m].items()}
        print(f"{m:<10}{q['psnr']:>9.2f}{q['ssim']:>8.3f}{q['mae']:>8.3f}")
    print(f"lesion Dice with {target}: " + ", ".join(f"{k} {np.nanmean(v):.3f}" for k, v in dice.items()))
    print("per subject: " + json.dumps({k: [round(x, 3) for x in v] for k, v in dice.items()}))
    q = {k: float(np.nanmean(v)) for k, v in quality[target].items()}
    print(f"synthesis psnr={q['psnr']:.2f} ssim={q['ssim']:.3f} mae={q['mae']:.3f} "
          f"dice_real={np.nanmean(dice['real']):.3f} dice_synth={np.nanmean(dice['synth']):.3f} "
          f"dice_zero={np.nanmean(dice['zero']):.3f} dice_dropped={np.nanmean(dice['dropped']):.3f} "
          f"modality={target} subjects={len(held)} synth_iters={scfg['iterations']} seg_iters={args.seg_iters}")


if __name__ == "__main__":
    main()
