"""Cohort-level learning steps called by the rules (`voxflow step NAME`): split, plan, train,
postprocessing decision, predict. Heavy imports stay inside the functions so that per-subject
preprocessing jobs do not pay for torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxflow.preprocess.store import write_json_atomic
from voxflow.status import store_path, subject_lists


def _stores(inp: dict, subjects: list[str] | None = None) -> dict[str, str]:
    """Subject -> store path: from the manifest `inp["stores"]` (the training_stores rule) and any
    inputs named store_<subject>; restricted to `subjects` if given."""
    found = json.loads(Path(inp["stores"]).read_text()) if inp.get("stores") else {}
    found.update({k[6:]: store_path(v) for k, v in inp.items() if k.startswith("store_")})
    return found if subjects is None else {s: found[s] for s in subjects}


def split(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.learn.plan import make_split

    lists = subject_lists(inp, cfg)
    excluded = lists.get("excluded") or []
    flagged = {}
    if inp.get("flags"):  # qc.exclude_flagged: the subjects the cohort QC flagged are not trained on
        from voxflow.qc_cohort import flag_summary, read_flags

        flagged = flag_summary(read_flags(inp["flags"]))
    try:
        sp = make_split(lists["subjects"], cfg["n_folds"], cfg["test_fraction"], cfg["seed"],
                        lists.get("test_subjects"), qc_excluded=flagged, holdout_fraction=cfg["holdout_fraction"])
    except ValueError as exc:
        raise ValueError(f"{exc}" + (f" after excluding {len(excluded)} subjects "
                                     f"({', '.join(e['subject'] for e in excluded[:5])}"
                                     f"{', ...' if len(excluded) > 5 else ''}; see {inp.get('subjects')})"
                                     if excluded else "")) from None
    sp["excluded"] = excluded  # who was left out, at which step and why (input.on_error: exclude)
    write_json_atomic(sp, out["split"])
    return {"test": sp["test"], "folds": [len(f["val"]) for f in sp["folds"]]}


def plan(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import torch

    from voxflow.learn.plan import fingerprint, make_plans, training_subjects

    fp = fingerprint(_stores(inp, training_subjects(json.loads(Path(inp["split"]).read_text()))), cfg["scheduler"])
    write_json_atomic(fp, out["fingerprint"])
    device = "cuda" if (cfg["train"]["device"] in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    plans = make_plans(fp, cfg, cfg["modalities"], cfg["label_values"], device)
    write_json_atomic(plans, out["plans"])
    return {k: plans[k] for k in ("dim", "patch_size", "batch_size", "n_stages", "overridden_by_config")}


def train(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import torch

    from voxflow.learn.ddp import env_rank
    from voxflow.learn.infer import predict_probabilities, segmentation
    from voxflow.learn.train import pick_device, train_fold

    torch.set_num_threads(max(1, threads // env_rank()[1]))  # under torchrun: the job's threads shared
    fold = int(cfg["fold"])
    sp = json.loads(Path(inp["split"]).read_text())
    plans = json.loads(Path(inp["plans"]).read_text())
    f = sp["folds"][fold]
    out_dir = Path(out["model"]).parent
    device = pick_device(cfg["train"]["device"])
    stores = _stores(inp, f["train"] + f["val"])
    info = train_fold([stores[s] for s in f["train"]], [stores[s] for s in f["val"]], plans,
                      cfg["train"], out_dir, device=device)
    info.pop("step_losses", None)  # for tests; the curve has the epoch means
    if info["rank"] != 0:  # DDP: rank 0 alone writes the outputs
        return info
    torch.set_num_threads(max(1, threads))  # the other processes have finished
    # Full-volume validation predictions: the input of the postprocessing decision.
    preds: dict[str, np.ndarray] = {}
    for s in f["val"]:
        probs, _ = predict_probabilities(stores[s], [out["model"]], cfg["infer"] | {"tta": False}, device)
        preds[s] = segmentation(probs, plans)
    from voxflow.io import atomic_path

    with atomic_path(out["val_predictions"]) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **preds)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return info


def postprocess_plan(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import zarr

    from voxflow.learn.postprocess import decide_largest_component

    preds, refs, spacings, stores = [], [], [], _stores(inp)
    for key, path in inp.items():
        if not key.startswith("val_"):
            continue
        with np.load(path) as data:
            for s in data.files:
                preds.append(data[s])
                root = zarr.open_group(stores[s], mode="r")
                refs.append(root["labels/lesion/0"][:])
                spacings.append(root.attrs["voxflow"]["spacing_zyx"])
    groups = cfg["groups"]
    mode = cfg["largest_component"]
    if mode == "auto":
        decision = decide_largest_component(preds, refs, groups, spacings, cfg["dice_tolerance"])
    else:
        decision = {"groups": groups, "enabled": [mode == "on"] * len(groups), "dice_before": None,
                    "dice_after": None, "hd95_before": None, "hd95_after": None}
    decision["mode"] = mode
    decision["fill_holes"] = cfg.get("fill_holes") or []
    decision["open_close"] = cfg.get("open_close")
    decision["n_validation_cases"] = len(preds)
    write_json_atomic(decision, out["postprocessing"])
    return decision


def predict(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import torch

    from voxflow.learn.infer import predict_subject

    torch.set_num_threads(max(1, threads))
    from voxflow.io import InputError

    # the fold models come in the config: the rule lists only postprocessing.json, written after them
    models = list(cfg.get("models") or [])
    if not models:
        raise InputError(subject, inp.get("postprocessing"), "no fold model to predict with")
    plans = json.loads((Path(models[0]).parent.parent / "plans.json").read_text())
    if plans and cfg.get("modalities") and plans["modalities"] != cfg["modalities"]:
        raise InputError(subject, models[0], f"model was trained on modalities {plans['modalities']}, "
                                             f"the config gives {cfg['modalities']}")
    post = json.loads(Path(inp["postprocessing"]).read_text()) if inp.get("postprocessing") else None
    return predict_subject(store_path(inp["store"]), models, post, cfg, out["store_grid"], out["native"],
                           out.get("prob_native"))
