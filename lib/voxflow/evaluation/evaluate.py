"""Evaluation steps: per-subject metrics in native space and on the stores' grid, cohort aggregation
with dask.

Native space compares the native-space prediction with the raw label file (what a user would
measure in a viewer); the store's grid compares the prediction written there with the label in the
zarr store (what the network saw). The metric rows' `space` is "native" or the store space the rule
passes (cfg["store_space"]): "mni" (MNI152, preprocess.space: mni) or "resampled" (the native image
cropped and resampled, preprocess.space: native).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from voxflow.inputs.images import InputError
from voxflow.core.atomic import atomic_path
from voxflow.core.stores import store_path


def _rows(pred: np.ndarray, ref: np.ndarray, spacing, cfg: dict, subject: str, space: str) -> list[dict]:
    from voxflow.core.labels import LabelScheme
    from voxflow.core.metrics import evaluate_case

    labels = cfg.get("labels") or LabelScheme.of(cfg["label_values"]).foreground_labels
    rows = evaluate_case(pred, ref, spacing, labels=labels, regions=cfg.get("regions") or None,
                         tolerance_mm=cfg["tolerance_mm"])
    return [{"subject": subject, "space": space, **r} for r in rows]


def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def chunk_id(index: int) -> str:
    """Name of the index-th evaluation chunk (the rule's {chunk} wildcard)."""
    return f"{index:04d}"


def _read(subject: str, path: str, what: str, read):
    """read(path), or an InputError naming the subject and this file: an evaluate job scores many."""
    try:
        return read(path)
    except Exception as exc:
        raise InputError(subject, path, f"cannot read the {what}: {exc}") from exc


def score_subject(subject: str, native: str, grid: str, store: str, label: str, cfg: dict) -> list[dict]:
    """Metric rows of one subject in native space (the prediction `native` against the raw label, both
    on the raw reference grid) and on the store's grid (the prediction `grid` against the store's
    label), the latter's `space` being cfg["store_space"]."""
    import SimpleITK as sitk

    from voxflow.core.stores import read_store_reference

    def image(path):
        img = sitk.ReadImage(path)
        return sitk.GetArrayFromImage(img), img.GetSpacing()[::-1]

    pred, _ = _read(subject, native, "native-space prediction", image)
    ref, spacing = _read(subject, label, "label", image)
    rows = _rows(pred, ref, spacing, cfg, subject, "native")
    space = cfg["store_space"]
    grid_pred, _ = _read(subject, grid, f"{space}-space prediction", image)
    grid_ref, grid_spacing = _read(subject, store, "store's label", read_store_reference)
    return rows + _rows(grid_pred, grid_ref, grid_spacing, cfg, subject, space)


def evaluate(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Score a chunk of subjects (cfg["labels_by_subject"]: subject -> raw label) into one table; a
    subject's inputs are native_<s>, <store_space>_<s> (its predictions) and store_<s>."""
    import sys

    rows = []
    labels = cfg["labels_by_subject"]
    space = cfg["store_space"]
    for i, s in enumerate(labels, 1):
        rows += score_subject(s, inp[f"native_{s}"], inp[f"{space}_{s}"], store_path(inp[f"store_{s}"]), labels[s],
                              cfg)
        print(f"evaluate: {i}/{len(labels)} {s}", file=sys.stderr, flush=True)  # progress in the job's log
    df = pd.DataFrame(rows)
    write_tsv(df, out["metrics"])
    native = df[df.space == "native"].groupby("label")["dice"].mean().round(4)
    return {"subjects": len(labels), "rows": len(df), "mean_native_dice": native.to_dict()}


def aggregate(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    import dask

    from voxflow.core.parallel import compute
    from voxflow.core.metrics import summarize

    # the chunk tables, rebuilt from the rule's pattern and count (their 10 000 paths would overflow --io)
    paths = [cfg["table_pattern"].format(chunk=chunk_id(i)) for i in range(cfg["n_chunks"])]
    tasks = [dask.delayed(pd.read_csv)(p, sep="\t", dtype={"label": str}) for p in paths]
    frames = compute(tasks, cfg["scheduler"])
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_tsv(df, out["metrics"])
    parts = []
    for space, sub in (df.groupby("space", sort=False) if len(df) else []):  # none predicted: empty tables
        s = summarize(sub.drop(columns=["subject", "space"]))
        s.insert(0, "space", space)
        parts.append(s)
    summary = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    write_tsv(summary, out["summary"])
    dice = summary[(summary.metric == "dice")] if len(summary) else summary
    return {"subjects": int(df.subject.nunique()) if len(df) else 0,
            "mean_dice": {f"{r.space}/{r.label}": round(float(r["mean"]), 4) for _, r in dice.iterrows()}}
