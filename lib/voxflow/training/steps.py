"""Cohort-level learning steps called by the rules (`voxflow step NAME`): split, plan, train,
postprocessing decision, predict. Heavy imports stay inside the functions so that per-subject
preprocessing jobs do not pay for torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxflow.preprocess.store import write_json_atomic
from voxflow.pipeline.status import store_path, subject_lists


def _stores(inp: dict, subjects: list[str] | None = None) -> dict[str, str]:
    """Subject -> store path: from the manifest `inp["stores"]` (the training_stores rule) and any
    inputs named store_<subject>; restricted to `subjects` if given."""
    found = json.loads(Path(inp["stores"]).read_text()) if inp.get("stores") else {}
    found.update({k[6:]: store_path(v) for k, v in inp.items() if k.startswith("store_")})
    return found if subjects is None else {s: found[s] for s in subjects}


def split(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.planning.plans import make_split

    lists = subject_lists(inp, cfg)
    excluded = lists.get("excluded") or []
    flagged = {}
    if inp.get("flags"):  # qc.exclude_flagged: the subjects the cohort QC flagged are not trained on
        from voxflow.qc.cohort import flag_summary, read_flags

        flagged = flag_summary(read_flags(inp["flags"]))
    try:
        sp = make_split(lists["subjects"], cfg["n_folds"], cfg["test_fraction"], cfg["seed"],
                        lists.get("test_subjects"), qc_excluded=flagged, holdout_fraction=cfg["holdout_fraction"],
                        incomplete=lists.get("incomplete"))
    except ValueError as exc:
        raise ValueError(f"{exc}" + (f" after excluding {len(excluded)} subjects "
                                     f"({', '.join(e['subject'] for e in excluded[:5])}"
                                     f"{', ...' if len(excluded) > 5 else ''}; see {inp.get('subjects')})"
                                     if excluded else "")) from None
    sp["excluded"] = excluded  # who was left out, at which step and why (input.on_error: exclude)
    write_json_atomic(sp, out["split"])
    return {"test": sp["test"], "folds": [len(f["val"]) for f in sp["folds"]]}


def fingerprint(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """model/fingerprint.json: the training stores measured once (one dask task per subject)."""
    from voxflow.planning.plans import fingerprint as measure, training_subjects

    fp = measure(_stores(inp, training_subjects(json.loads(Path(inp["split"]).read_text()))), cfg["scheduler"])
    write_json_atomic(fp, out["fingerprint"])
    return {"subjects": len(fp["subjects"]), "median_shape": fp["median_shape"]}


def plan(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """A configuration's plans.json from the fingerprint (every automatic decision, readable)."""
    import torch

    from voxflow.planning.plans import make_plans

    fp = json.loads(Path(inp["fingerprint"]).read_text())
    device = "cuda" if (cfg["train"]["device"] in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    plans = make_plans(fp, cfg, cfg["modalities"], cfg["label_values"], device)
    write_json_atomic(plans, out["plans"])
    return {k: plans[k] for k in ("dim", "patch_size", "batch_size", "n_stages", "stem", "overridden_by_config")}


def train(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import torch

    from voxflow.nn.ddp import env_rank
    from voxflow.inference.predict import predict_probabilities, segmentation
    from voxflow.training.train import pick_device, train_fold

    torch.set_num_threads(max(1, threads // env_rank()[1]))  # under torchrun: the job's threads shared
    fold = int(cfg["fold"])
    sp = json.loads(Path(inp["split"]).read_text())
    plans = json.loads(Path(inp["plans"]).read_text())
    f = sp["folds"][fold]
    out_dir = Path(out["model"]).parent
    device = pick_device(cfg["train"]["device"])
    stores = _stores(inp, f["train"] + f["val"])
    oof = _previous_stage(inp, f["train"] + f["val"], plans, out_dir) if plans.get("cascade", {}).get(
        "stage") == "fullres" else {}
    train_cfg = cfg["train"] | ({"synthesis_model": inp["synthesis"]} if inp.get("synthesis") else {})
    info = train_fold([stores[s] for s in f["train"]], [stores[s] for s in f["val"]], plans,
                      train_cfg, out_dir, device=device,
                      previous={stores[s]: path for s, path in oof.items()} or None)
    info.pop("step_losses", None)  # for tests; the curve has the epoch means
    if info["rank"] != 0:  # DDP: rank 0 alone writes the outputs
        return info
    torch.set_num_threads(max(1, threads))  # the other processes have finished
    # Full-volume validation predictions: the input of the postprocessing decision.
    preds: dict[str, np.ndarray] = {}
    kept: dict[str, np.ndarray] = {}  # several configurations: the probabilities, to score ensembles on
    for s in f["val"]:
        prev = None
        if oof:  # a cascade's full-resolution stage: its subject's out-of-fold low-resolution prediction
            import zarr

            prev = np.asarray(zarr.open_array(oof[s], mode="r")[:])
        probs, _ = predict_probabilities(stores[s], [out["model"]], cfg["infer"] | {"tta": False}, device,
                                         previous=prev)
        preds[s] = segmentation(probs, plans)
        if out.get("val_probabilities"):
            kept[s] = probs.astype(np.float16)

    _write_npz(out["val_predictions"], preds)
    if out.get("val_probabilities"):
        _write_npz(out["val_probabilities"], kept)
    return info


def _previous_stage(inp: dict, subjects: list[str], plans: dict, out_dir: Path) -> dict[str, str]:
    """A cascade's full-resolution fold: each subject's out-of-fold low-resolution prediction (from the
    low-resolution folds' val_predictions.npz, inputs lowres_<k>), as class indices in a zarr array per subject
    under fold_<k>/previous/ that the sampler reads patch-wise."""
    import zarr

    from voxflow.inputs.images import atomic_path
    from voxflow.inference.predict import class_indices

    where = {}
    for key, path in inp.items():
        if key.startswith("lowres_"):
            with np.load(path) as data:
                where.update({s: path for s in data.files})
    missing = [s for s in subjects if s not in where]
    if missing:
        raise ValueError(f"no out-of-fold low-resolution prediction for {len(missing)} subjects ({missing[:3]}): "
                         "a cascade needs every fold of its low-resolution stage trained (split.folds_to_train: null)")
    out: dict[str, str] = {}
    for s in subjects:
        target = out_dir / "previous" / f"{s}.zarr"
        with np.load(where[s]) as data:
            idx = class_indices(data[s], plans["label_values"])
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            arr = zarr.create_array(str(tmp), shape=idx.shape, chunks=tuple(min(64, n) for n in idx.shape),
                                    dtype="uint8")
            arr[:] = idx
        out[s] = str(target)
    return out


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    from voxflow.inputs.images import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool


def postprocess_plan(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import zarr

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
    decision = postprocessing_decision(preds, refs, spacings, cfg)
    write_json_atomic(decision, out["postprocessing"])
    return decision


def postprocessing_decision(preds: list, refs: list, spacings: list, cfg: dict) -> dict:
    """The post-processing of the `postprocess` section, the largest-component rule decided on these validation
    predictions (auto) or set (on/off)."""
    from voxflow.postprocessing.postprocess import decide_largest_component

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
    return decision


def choose_configuration(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Score every configuration and ensemble on the out-of-fold subjects, keep the best (voxflow.inference.choose),
    decide its post-processing on its out-of-fold predictions, write model/inference.json."""
    import shutil

    import zarr

    from voxflow.inference.choose import choose, score_ensembles, write_inference
    from voxflow.inference.predict import segmentation

    confs, folds = list(cfg["configurations"]), [int(k) for k in cfg["folds"]]
    stores = _stores(inp)
    files: dict[str, dict[str, str]] = {c: {} for c in confs}  # configuration -> subject -> its fold's probability file
    for c in confs:
        for k in folds:
            with np.load(inp[f"probs_{c}_{k}"]) as data:
                files[c].update({s: inp[f"probs_{c}_{k}"] for s in data.files})
    subjects = sorted(set.intersection(*(set(v) for v in files.values())))
    plans = json.loads(Path(inp[f"plans_{confs[0]}"]).read_text())
    groups = plans["regions"] or [[v] for v in plans["label_values"] if v != 0]
    cache: dict[str, tuple] = {}

    def reference(s: str):
        if s not in cache:
            cache.clear()
            root = zarr.open_group(stores[s], mode="r")
            cache[s] = (root["labels/lesion/0"][:], root["labels/brain/0"][:] > 0,
                        root.attrs["voxflow"]["spacing_zyx"])
        return cache[s]

    def probabilities(c: str, s: str) -> np.ndarray:
        with np.load(files[c][s]) as data:
            return data[s]

    def labels(probs: np.ndarray) -> np.ndarray:
        return segmentation(probs, plans)

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
    models = {c: [f"{c}/fold_{k}/model_final.pt" for k in folds] for c in confs}
    doc = write_inference(out["inference"], chosen, rows, models, post, len(subjects), float(cfg["tolerance"]))
    shutil.copyfile(inp[f"plans_{chosen['members'][0]}"], model_dir / ".plans.json.tmp")
    (model_dir / ".plans.json.tmp").replace(out["plans"])
    return {"chosen": doc["configurations"], "dice": doc["dice"], "subjects": len(subjects)}


def predict(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import torch

    from voxflow.inference.predict import predict_subject

    torch.set_num_threads(max(1, threads))
    from voxflow.inputs.images import InputError

    # the fold models come in the config: the rule lists only postprocessing.json, written after them; or, with
    # several configurations, inference.json names the chosen ones
    inference = json.loads(Path(inp["inference"]).read_text()) if inp.get("inference") else None
    if inference is not None:
        from voxflow.inference.choose import inference_models

        models = inference_models(inp["inference"])
    else:
        models = list(cfg.get("models") or [])
    if not models:
        raise InputError(subject, inp.get("postprocessing"), "no fold model to predict with")
    plans = json.loads((Path(models[0]).parent.parent / "plans.json").read_text())
    if plans and cfg.get("modalities") and plans["modalities"] != cfg["modalities"]:
        raise InputError(subject, models[0], f"model was trained on modalities {plans['modalities']}, "
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
