"""Evaluation steps: per-subject metrics in native and MNI space, cohort aggregation with dask.

Native space compares the native-space prediction with the raw label file (what a user would
measure in a viewer); MNI space compares with the label in the zarr store (what the network saw).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from voxflow.io import atomic_path
from voxflow.steps import step


def _rows(pred: np.ndarray, ref: np.ndarray, spacing, cfg: dict, subject: str, space: str) -> list[dict]:
    from voxflow.metrics import evaluate_case

    labels = cfg.get("labels") or [v for v in cfg["label_values"] if v != 0]
    rows = evaluate_case(pred, ref, spacing, labels=labels, regions=cfg.get("regions") or None,
                         tolerance_mm=cfg["tolerance_mm"])
    return [{"subject": subject, "space": space, **r} for r in rows]


def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def evaluate(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import SimpleITK as sitk
    import zarr

    rows = []
    # native: prediction vs the raw label, both on the raw reference grid
    pred = sitk.ReadImage(inp["native"])
    ref = sitk.ReadImage(cfg["label"])
    rows += _rows(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(ref), ref.GetSpacing()[::-1], cfg,
                  subject, "native")
    # MNI: prediction vs the store's label
    root = zarr.open_group(inp["store"], mode="r")
    meta = root.attrs["voxflow"]
    mni_pred = sitk.GetArrayFromImage(sitk.ReadImage(inp["mni"]))
    rows += _rows(mni_pred, root["labels/lesion/0"][:], meta["spacing_zyx"], cfg, subject, "mni")
    df = pd.DataFrame(rows)
    write_tsv(df, out["metrics"])
    native = df[df.space == "native"].set_index("label")["dice"].round(4)
    return {"rows": len(df), "native_dice": native.to_dict()}


@step
def aggregate(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import dask

    from voxflow.learn.plan import compute
    from voxflow.metrics import summarize

    paths = [p for k, p in sorted(inp.items()) if k.startswith("metrics_")]
    paths += [cfg["metrics_pattern"].replace("{subject}", s) for s in cfg.get("subjects", [])]
    tasks = [dask.delayed(pd.read_csv)(p, sep="\t", dtype={"label": str}) for p in paths]
    frames = compute(tasks, cfg["scheduler"])
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_tsv(df, out["metrics"])
    parts = []
    for space, sub in df.groupby("space", sort=False):
        s = summarize(sub.drop(columns=["subject", "space"]))
        s.insert(0, "space", space)
        parts.append(s)
    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    write_tsv(summary, out["summary"])
    dice = summary[(summary.metric == "dice")] if len(summary) else summary
    return {"subjects": int(df.subject.nunique()) if len(df) else 0,
            "mean_dice": {f"{r.space}/{r.label}": round(float(r["mean"]), 4) for _, r in dice.iterrows()}}
