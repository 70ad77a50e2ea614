"""The postprocess_plan rule's step: the post-processing decided on the folds' out-of-fold predictions
(model/postprocessing.json)."""

from __future__ import annotations

import numpy as np

from voxflow.core.atomic import write_json_atomic
from voxflow.core.stores import read_store_reference, subject_stores


def postprocess_plan(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    preds, refs, spacings, stores = [], [], [], subject_stores(inp)
    for key, path in inp.items():
        if not key.startswith("val_"):
            continue
        with np.load(path) as data:
            for s in data.files:
                preds.append(data[s])
                ref, spacing = read_store_reference(stores[s])
                refs.append(ref)
                spacings.append(spacing)
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
