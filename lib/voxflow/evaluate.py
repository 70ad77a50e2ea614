"""Evaluation steps: per-subject metrics in native and MNI space, cohort aggregation with dask.

Native space compares the native-space prediction with the raw label file (what a user would
measure in a viewer); MNI space compares with the label in the zarr store (what the network saw).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from voxflow.io import InputError, atomic_path
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


def score_subject(subject: str, native: str, mni: str, store: str, label: str, cfg: dict) -> list[dict]:
    """Metric rows of one subject in native space (the prediction against the raw label, both on
    the raw reference grid) and in MNI space (against the store's label)."""
    import SimpleITK as sitk
    import zarr

    pred = sitk.ReadImage(native)
    ref = sitk.ReadImage(label)
    rows = _rows(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(ref), ref.GetSpacing()[::-1], cfg,
                 subject, "native")
    root = zarr.open_group(store, mode="r")
    meta = root.attrs["voxflow"]
    mni_pred = sitk.GetArrayFromImage(sitk.ReadImage(mni))
    return rows + _rows(mni_pred, root["labels/lesion/0"][:], meta["spacing_zyx"], cfg, subject, "mni")


@step
def evaluate(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Score a chunk of subjects (cfg["labels_by_subject"]: subject -> raw label) into one table."""
    import sys

    rows = []
    labels = cfg["labels_by_subject"]
    for i, s in enumerate(labels, 1):
        try:
            rows += score_subject(s, inp[f"native_{s}"], inp[f"mni_{s}"], inp[f"store_{s}"], labels[s], cfg)
        except Exception as exc:  # name the subject: the job scores many
            raise InputError(s, labels[s], f"cannot score the prediction: {exc}") from exc
        print(f"evaluate: {i}/{len(labels)} {s}", file=sys.stderr, flush=True)  # progress in the job's log
    df = pd.DataFrame(rows)
    write_tsv(df, out["metrics"])
    native = df[df.space == "native"].groupby("label")["dice"].mean().round(4)
    return {"subjects": len(labels), "rows": len(df), "mean_native_dice": native.to_dict()}


@step
def aggregate(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import dask

    from voxflow.learn.plan import compute
    from voxflow.metrics import summarize

    # per-chunk tables (the rule's `tables` list), or one table per named `metrics_*` input
    paths = list(inp.get("tables", [])) + [p for k, p in sorted(inp.items()) if k.startswith("metrics_")]
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
