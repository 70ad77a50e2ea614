"""The inference rules' steps (`voxflow step NAME`, table: voxflow.pipeline.registry): choose_configuration (which
trained configurations inference uses, from the out-of-fold predictions) and predict (one subject). Heavy imports
stay inside the functions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxflow.core.atomic import write_json_atomic
from voxflow.core.layout import PLANS_FILE, fold_model_name
from voxflow.core.stores import open_store, read_store_mask, read_store_reference, store_path, subject_stores
from voxflow.postprocessing.steps import postprocessing_decision


def choose_configuration(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Score every configuration and ensemble on the out-of-fold subjects, keep the best (voxflow.inference.choose),
    decide its post-processing on its out-of-fold predictions, write model/inference.json."""
    import shutil

    from voxflow.inference.choose import choose, score_ensembles, write_inference
    from voxflow.planning.plans import Plans

    confs, folds = list(cfg["configurations"]), [int(k) for k in cfg["folds"]]
    stores = subject_stores(inp)
    files: dict[str, dict[str, str]] = {c: {} for c in confs}  # configuration -> subject -> its fold's probability file
    for c in confs:
        for k in folds:
            with np.load(inp[f"probs_{c}_{k}"]) as data:
                files[c].update({s: inp[f"probs_{c}_{k}"] for s in data.files})
    subjects = sorted(set.intersection(*(set(v) for v in files.values())))
    scheme = Plans.load(inp[f"plans_{confs[0]}"]).labels
    groups = scheme.foreground_groups
    cache: dict[str, tuple] = {}

    def reference(s: str):
        if s not in cache:
            cache.clear()
            root = open_store(stores[s])
            ref, spacing = read_store_reference(root)
            cache[s] = (ref, read_store_mask(root) > 0, spacing)
        return cache[s]

    def probabilities(c: str, s: str) -> np.ndarray:
        with np.load(files[c][s]) as data:
            return data[s]

    def labels(probs: np.ndarray) -> np.ndarray:
        return scheme.labels_from_probabilities(probs)

    rows = score_ensembles(confs, subjects, probabilities, lambda s: reference(s)[0],
                           labels, groups) if subjects else []
    chosen = choose(rows, float(cfg["tolerance"]))
    preds, refs, spacings = [], [], []
    for s in subjects:  # the winner's out-of-fold label maps, masked as predict masks them
        ref, brain, spacing = reference(s)
        mean = np.mean([probabilities(c, s).astype(np.float32) for c in chosen["members"]], axis=0)
        preds.append(np.where(brain, labels(mean), 0).astype(np.uint8))
        refs.append(ref)
        spacings.append(spacing)
    post = postprocessing_decision(preds, refs, spacings, cfg)
    model_dir = Path(out["inference"]).parent
    models = {c: [fold_model_name(k, c) for k in folds] for c in confs}
    doc = write_inference(out["inference"], chosen, rows, models, post, len(subjects), float(cfg["tolerance"]))
    shutil.copyfile(inp[f"plans_{chosen['members'][0]}"], model_dir / ".plans.json.tmp")
    (model_dir / ".plans.json.tmp").replace(out["plans"])
    return {"chosen": doc["configurations"], "dice": doc["dice"], "subjects": len(subjects)}


def predict(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import torch

    from voxflow.inference.predict import predict_subject
    from voxflow.planning.plans import Plans

    torch.set_num_threads(max(1, threads))
    from voxflow.inputs.images import InputError

    # the fold models come in the config: the rule lists only postprocessing.json, written after them; or, with
    # several configurations, inference.json names the chosen ones
    inference = json.loads(Path(inp["inference"]).read_text()) if inp.get("inference") else None
    if inference is not None:
        from voxflow.core.layout import inference_models

        models = inference_models(inp["inference"])
    else:
        models = list(cfg.get("models") or [])
    if not models:
        raise InputError(subject, inp.get("postprocessing"), "no fold model to predict with")
    plans = Plans.load(Path(models[0]).parent.parent / PLANS_FILE)
    if plans.raw and cfg.get("modalities") and plans.modalities != cfg["modalities"]:
        raise InputError(subject, models[0], f"model was trained on modalities {plans.modalities}, "
                                             f"the config gives {cfg['modalities']}")
    post = json.loads(Path(inp["postprocessing"]).read_text()) if inp.get("postprocessing") else None
    if inference is not None:
        post = inference["postprocessing"]
    store = store_path(inp["store"])
    info = predict_subject(store, models, post, cfg, out["store_grid"], out["native"], out.get("prob_native"))
    if out.get("sidecar"):
        from voxflow.synth.complete import synthetic_modalities

        synthetic = synthetic_modalities(store)
        write_json_atomic({"subject": subject, "store": store, "models": models,
                           "configuration": inference.get("choice") if inference else None,
                           "synthetic_modalities": synthetic, "label_voxels": info["native_voxels"]}, out["sidecar"])
        info["synthetic_modalities"] = sorted(synthetic)
    return info
