"""The report's data: the files it reads (each one a declared input of the `report` rule, except the
benchmarks: see runtime_table) and the tables made from them, as plain values for the template.

A table is {"id", "columns", "rows", "sortable"}; a row is a list of cells {"text", "v", "sub", "warn"}:
the text shown, the sort key of a numeric cell (data-v; None for text), a second line (or None) and
whether the cell is a warning. Numbers are formatted here, so the template only prints.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import subprocess
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

PACKAGES = ("voxflow", "torch", "monai", "antspyx", "SimpleITK", "zarr", "snakemake", "numpy")
TABLE_METRICS = ("dice", "precision", "recall", "hd95", "assd", "nsd", "vol_diff_ml")
# How a `space` value of the metrics (native, or the stores' grid: voxflow.evaluation.evaluate) is named on the page
SPACE_NAMES = {"native": "native space", "mni": "MNI space", "resampled": "resampled space"}


# ---------------------------------------------------------------- files
def read_tsv(path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, sep="\t", dtype={"label": str}) if path and Path(path).is_file() else None
    except (OSError, ValueError):
        return None


def read_json(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text()) if path else None
    except (OSError, ValueError):
        return None


def git_commit(workdir: str | Path | None = None) -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir or None, capture_output=True, text=True,
                           timeout=10, check=False)
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


class _Skim(pickle.Unpickler):
    """Unpickles a torch checkpoint's data.pkl without torch: tensors and storages become None (their bytes are
    never read); nothing but plain containers may be built."""

    SAFE: ClassVar = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                      ("builtins", "slice")}

    def find_class(self, module, name):
        if module == "torch" or module.startswith("torch."):
            return lambda *args, **kwargs: None
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not read from a checkpoint")

    def persistent_load(self, pid):
        return None


def checkpoint_entry(path: str | Path, key: str):
    """One plain value of a torch checkpoint (torch.save's zip format), read from its pickle without importing
    torch (seconds and a few hundred MB for a job that only wants the training curve); torch.load otherwise."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl"))
            with z.open(name) as fh:
                state = _Skim(fh).load()
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError):
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get(key) if isinstance(state, dict) else None


def read_curve(model_final: str | Path) -> pd.DataFrame | None:
    """A fold's training curve (one row per epoch) from its model_final.pt, the train rule's declared output
    (curve.csv beside it is written undeclared); None when the checkpoint has no curve."""
    curve = pd.DataFrame(json.loads(checkpoint_entry(model_final, "curve") or "[]"))
    return curve.apply(pd.to_numeric, errors="coerce") if len(curve) and "epoch" in curve else None


def overlay_arrays(store: str | Path, pred_path: str | Path, channel: str | None, show_ref: bool = True) -> dict:
    """From a subject's zarr store and its prediction on the store's grid: the reference channel's image,
    the reference lesion (None without labels or when not wanted), the prediction (None if the file is
    missing), the voxel spacing (z, y, x) and the modality shown."""
    import SimpleITK as sitk

    from voxflow.core.stores import image_array, open_store, read_store_label, store_meta

    root = open_store(store)
    meta = store_meta(root, default={})
    mods = list(meta.get("modalities", []))
    ch = mods.index(channel) if channel in mods else 0
    image = np.asarray(image_array(root)[ch], dtype=np.float32)
    try:
        ref = np.asarray(read_store_label(root)) if show_ref and meta.get("has_label", True) else None
    except KeyError:
        ref = None
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_path))) if Path(pred_path).is_file() else None
    if pred is not None and pred.shape != image.shape:
        raise ValueError(f"prediction {pred.shape} and store image {image.shape} differ in shape")
    return {"image": image, "ref": ref, "pred": pred, "spacing": meta.get("spacing_zyx", (1.0, 1.0, 1.0)),
            "modality": mods[ch] if ch < len(mods) else None}


def predicted_volumes(predictions: Sequence[tuple[str, str | Path]], config: dict) -> pd.DataFrame:
    """Predicted volume (ml) per label and region, one row per (subject, native-space prediction) given."""
    import SimpleITK as sitk

    from voxflow.core.labels import LabelScheme

    values = LabelScheme.of((config.get("input") or {}).get("label_values") or []).foreground_labels
    regions = (config.get("evaluate") or {}).get("regions") or {}
    rows = []
    for s, p in predictions:
        if not Path(p).is_file():
            continue
        img = sitk.ReadImage(str(p))
        arr, ml = sitk.GetArrayViewFromImage(img), float(np.prod(img.GetSpacing())) / 1000.0
        row = {"subject": s, "space": "native", "foreground": float((arr != 0).sum() * ml)}
        row.update({str(v): float((arr == v).sum() * ml) for v in values or [v for v in np.unique(arr) if v]})
        row.update({k: float(np.isin(arr, list(ids)).sum() * ml) for k, ids in regions.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def benchmark_files(pattern: str) -> list[tuple[str, str]]:
    """(rule, file) for every file matching a path pattern with the placeholders {rule} and {job}."""
    parts = re.split(r"(\{rule\}|\{job\})", pattern)
    wild = "".join("*" if p in ("{rule}", "{job}") else glob.escape(p) for p in parts)
    rx = re.compile("".join("(?P<rule>[^/]+)" if p == "{rule}" else "[^/]+" if p == "{job}" else re.escape(p)
                            for p in parts) + "$")
    return [(m.group("rule"), f) for f in sorted(glob.glob(wild)) for m in [rx.match(f)] if m and os.path.isfile(f)]


def runtime_table(pattern: str) -> pd.DataFrame:
    """Per rule: jobs, total/mean/max seconds and max RSS from Snakemake's benchmark files (repeats averaged).

    Read from a path pattern, not from declared inputs: Snakemake writes a job's benchmark file itself
    after the job, so no rule has it as an output (and the report's own appears after it ran)."""
    rows = []
    for rule, f in benchmark_files(pattern):
        b = read_tsv(f)
        if b is not None and "s" in b and len(b):
            rss = pd.to_numeric(b["max_rss"], errors="coerce").max() if "max_rss" in b else np.nan
            rows.append({"rule": rule, "s": float(pd.to_numeric(b["s"], errors="coerce").mean()), "rss": float(rss)})
    if not rows:
        return pd.DataFrame(columns=["rule", "jobs", "total s", "mean s", "max s", "max RSS (MB)"])
    g = pd.DataFrame(rows).groupby("rule")
    t = pd.DataFrame({"jobs": g["s"].size(), "total s": g["s"].sum(), "mean s": g["s"].mean(),
                      "max s": g["s"].max(), "max RSS (MB)": g["rss"].max()})
    return t.sort_values("total s", ascending=False).reset_index()


# ---------------------------------------------------------------- values
def space_name(space: str) -> str:
    """'native space', 'MNI space', 'resampled space', ... for a metrics `space` value."""
    return SPACE_NAMES.get(str(space), f"{space} space")


def main_space(metrics: pd.DataFrame) -> str:
    """The space the per-subject views use: native when scored there, else the first one."""
    return "native" if (metrics["space"] == "native").any() else str(metrics["space"].iloc[0])


def lesion_dice(metrics: pd.DataFrame) -> pd.Series:
    """Whole-lesion Dice per subject, worst first: region "whole_tumor" if present, else the mean over labels."""
    df = metrics[metrics["space"] == main_space(metrics)]
    if (df["label"] == "whole_tumor").any():
        df = df[df["label"] == "whole_tumor"]
    return df.groupby("subject")["dice"].mean().sort_values(kind="stable")


def fmt(v, digits: int | None = None) -> str:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f}" if digits is not None else f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"


def cell(v, digits: int | None = None, sub: str | None = None, warn: bool = False) -> dict:
    """A table cell; a number carries its sort key (data-v: '' when not finite)."""
    numeric = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
    key = (f"{float(v):.6g}" if np.isfinite(v) else "") if numeric else None
    return {"text": fmt(v, digits) if numeric else str(v), "v": key, "sub": sub, "warn": warn}


def table(df: pd.DataFrame, tid: str, sortable: bool = False, digits: int | None = None) -> dict:
    rows = [[c if isinstance(c, dict) else cell(c, digits) for c in rec] for rec in df.itertuples(index=False)]
    return {"id": tid, "columns": [str(c) for c in df.columns], "rows": rows, "sortable": sortable}


def summary_tables(summary: pd.DataFrame) -> dict:
    """Per space (native first): per label, n, mean ± std with median [q25–q75] below, and the empty-case counts."""
    summary = summary if "space" in summary else summary.assign(space="all")
    groups = sorted(summary.groupby("space", sort=False), key=lambda kv: kv[0] != "native")
    spaces = []
    for space, sub in groups:
        rows = []
        for label, g in sub.groupby("label", sort=False):
            g = g.set_index("metric")
            row = {"label": cell(str(label)), "n": cell(int(g["n"].iloc[0]))}
            for m in (m for m in TABLE_METRICS if m in g.index):
                r = g.loc[m]
                row[m] = {"text": f"{fmt(r['mean'])} ± {fmt(r['std'])}", "v": None, "warn": False,
                          "sub": f"{fmt(r['median'])} [{fmt(r['q25'])}–{fmt(r['q75'])}]"}
            empty = [int(g[f"n_empty_{k}"].iloc[0]) if f"n_empty_{k}" in g else 0 for k in ("pred", "ref", "both")]
            row["empty pred / ref / both"] = cell(" / ".join(map(str, empty)), warn=bool(empty[0] or empty[1]))
            rows.append(row)
        spaces.append({"space": str(space), "name": space_name(space),
                       "table": table(pd.DataFrame(rows), f"summary-{space}")})
    return {"spaces": spaces, "n_nan": int(summary["n_nan"].sum()) if "n_nan" in summary else 0}


def subject_table(metrics: pd.DataFrame, worst: pd.Series, qc_flags: dict[str, str] | None = None) -> dict:
    """Per subject (worst lesion Dice first): lesion Dice, Dice per label, distances/volumes of the whole lesion;
    with `qc_flags` (qc_flag_labels), the subject's flagged QC scores: do the flagged ones have the low Dice?"""
    space = main_space(metrics)
    df = metrics[metrics["space"] == space]
    labels = list(dict.fromkeys(df["label"]))
    whole = "whole_tumor" if "whole_tumor" in labels else labels[-1]
    dice = df.pivot_table(index="subject", columns="label", values="dice", aggfunc="mean")
    w = df[df["label"] == whole].groupby("subject").first()
    t = pd.DataFrame({"subject": worst.index, "lesion Dice": worst.to_numpy()})
    for lab in (lab for lab in labels if lab != "whole_tumor"):
        t[f"Dice {lab}"] = dice[lab].reindex(worst.index).to_numpy()
    for col in (c for c in ("hd95", "assd", "nsd", "vol_ref_ml", "vol_pred_ml", "empty") if c in w):
        t[col] = w[col].reindex(worst.index).to_numpy()
    if qc_flags is not None:
        t["QC flags"] = [cell(qc_flags.get(str(s), ""), warn=str(s) in qc_flags) for s in worst.index]
    return {"table": table(t, "subject-table", sortable=True), "space": space_name(space), "whole": whole,
            "lesion": "region whole_tumor" if whole == "whole_tumor" else "mean over labels"}


# ---------------------------------------------------------------- cohort QC (qc/scores.tsv, qc/flags.tsv)
QC_TEXT = {"subject": str, "modality": str, "score": str, "reason": str}


def read_qc_tsv(path) -> pd.DataFrame | None:
    """qc/scores.tsv or qc/flags.tsv with names kept as text (a subject "007" stays "007"); None when absent
    or unreadable. "nan" and "inf" values are read as floats."""
    try:
        return pd.read_csv(path, sep="\t", dtype=QC_TEXT, keep_default_na=False,
                           na_values={"value": ["", "nan", "NaN"], "median": ["", "nan", "NaN"],
                                      "z": ["", "nan", "NaN"]}) if path and Path(path).is_file() else None
    except (OSError, ValueError):
        return None


def qc_flag_labels(flags: pd.DataFrame | None) -> dict[str, str] | None:
    """subject -> its flagged scores, worst first ("t1 efc, mask brain_volume_ml"); None without flags.tsv."""
    if flags is None or not {"subject", "modality", "score"} <= set(flags.columns):
        return None
    out: dict[str, list[str]] = {}
    for s, m, sc in flags[["subject", "modality", "score"]].itertuples(index=False):
        label = f"{m} {sc}"
        if label not in out.setdefault(str(s), []):
            out[str(s)].append(label)
    return {s: ", ".join(v) for s, v in out.items()}


def _g(v, warn: bool = False) -> dict:
    """A numeric cell with 4 significant digits (QC scores span 1e-4 to 1e5; no exponent from 1000 up: volumes in
    ml); ±inf shown and sorted as such."""
    x = float(v) if v is not None and not isinstance(v, str) else float("nan")
    if np.isinf(x):
        return {"text": "+∞" if x > 0 else "-∞", "v": "Infinity" if x > 0 else "-Infinity", "sub": None,
                "warn": warn}
    finite = bool(np.isfinite(x))
    text = "–" if not finite else f"{x:.0f}" if 1000 <= abs(x) < 1e9 else f"{x:.4g}"
    return {"text": text, "v": f"{x:.6g}" if finite else "", "sub": None, "warn": warn}


def qc_flag_table(flags: pd.DataFrame) -> dict:
    """The flags in the file's order (worst first): subject, modality, score, value, cohort median, z, reason."""
    rows = [[cell(str(r.subject)), cell(str(r.modality)), cell(str(r.score)), _g(r.value, warn=True), _g(r.median),
             _g(r.z), cell(str(r.reason))] for r in flags.itertuples(index=False)]
    return {"id": "qc-flag-table", "columns": ["subject", "modality", "score", "value", "cohort median", "z",
                                               "reason"], "rows": rows, "sortable": True}


def qc_score_table(names: Sequence[str]) -> dict:
    """What each score present means: bad direction, hard sanity bounds, description (voxflow.qc.scores.SCORES)."""
    from voxflow.qc.scores import SCORES

    bad = {"high": "high", "low": "low", "both": "high or low"}
    rows = []
    for n in names:
        direction, (lo, hi), _, text = SCORES.get(n, ("both", (None, None), 0.0, "(not described)"))
        bounds = "–" if lo is None and hi is None else f"[{'' if lo is None else f'{lo:g}'}, " \
                                                       f"{'' if hi is None else f'{hi:g}'}]"
        rows.append([cell(n), cell(bad.get(direction, direction)), cell(bounds), cell(text)])
    return {"id": "qc-score-table", "columns": ["score", "bad when", "sanity bounds", "meaning"], "rows": rows,
            "sortable": False}


def qc_held_out_table(entries: Sequence[dict]) -> dict:
    """split.json's qc_excluded: the flagged subjects kept out of training, with their flags."""
    rows = [[cell(str(e.get("subject", ""))), cell("; ".join(str(f) for f in e.get("flags") or []))]
            for e in entries]
    return {"id": "qc-held-out-table", "columns": ["subject", "flags"], "rows": rows, "sortable": True}
