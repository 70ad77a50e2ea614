"""The report's "Synthesized modalities" section: plain data for report.html.j2 on the subjects that lacked a modality
and got it synthesized by the cohort's synthesis model (model/synthesis/: voxflow.synth.train), in a completed copy of
their store (voxflow.synth.complete).

From the report rule's inputs: status/cohort.json's `incomplete` ({subject: {modality: why}}) of the predicted
subjects, with each one's QC figure (qc_synthesis/<subject>.png: every modality, the synthetic ones framed);
model/synthesis/synthesis.json (per-modality PSNR, SSIM and MAE on the held-out validation subjects, who they are,
the settings) and model/synthesis/curve.csv (the losses per logged step, validation MAE/PSNR on the validation
steps). A missing or unreadable file leaves its part out with a note; no completed subject and no synthesis.json:
no section (`has_synthesis`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from voxflow.report.data import cell, fmt
from voxflow.report.plots import _mathtext_safe, _plt, fig_uri, png_uri

TITLE = "Synthesized modalities"
MAX_FIGURES = 12  # QC figures embedded; the others are named by where they are
LOSS_NAMES = {"loss_g_l1": "generator L1 (brain mask)", "loss_g_adv": "generator adversarial",
              "loss_d": "discriminator"}
# synthesis.json's validation metrics: key, column, digits
METRICS = (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3), ("mae", "MAE", 4), ("mae_zero_filled", "MAE zero image", 4))

Completed = Sequence[tuple[str, Mapping[str, str], str | None]]


def has_synthesis(summary_json: str | None, completed: Completed) -> bool:
    """Whether the report shows the section: some predicted subject was completed, or the synthesis model's
    synthesis.json is there."""
    return bool(completed) or bool(summary_json and Path(summary_json).is_file())


def _doc(path: str | None) -> tuple[dict | None, str | None]:
    """synthesis.json's content, or why there is none (a note)."""
    if not path or not Path(path).is_file():
        return None, f"{Path(path).name if path else 'synthesis.json'} not found: no validation metrics."
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return None, f"{Path(path).name} could not be read ({type(exc).__name__}: {exc})."
    if not isinstance(doc, dict):
        return None, f"{Path(path).name} is not a JSON object."
    return doc, None


def _num(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if not isinstance(v, bool) else math.nan


def _names(doc: Mapping, *keys: str) -> list[str]:
    for k in keys:
        v = doc.get(k)
        if isinstance(v, (list, tuple)):
            return [str(s) for s in v]
    return []


def completed_table(completed: Completed) -> dict:
    """One row per completed subject: subject, the synthesized modalities, why each was missing."""
    rows = []
    for subject, mods, _ in completed:
        mods = dict(mods or {})
        why = "; ".join(f"{m}: {w}" for m, w in mods.items()) if len(mods) > 1 else \
            next((str(w) for w in mods.values()), "")
        rows.append([cell(str(subject)), cell(", ".join(map(str, mods)) or "–"), cell(why)])
    return {"id": "synthesis-table", "columns": ["subject", "synthesized", "why missing"], "rows": rows,
            "sortable": True}


def qc_figures(completed: Completed, cap: int = MAX_FIGURES) -> dict:
    """The completed subjects' QC figures (the first `cap`, as thumbnails), how many there are and where they are."""
    figures = []
    for subject, mods, png in list(completed)[:cap]:
        caption = f"{subject}: " + ", ".join(f"{m} (synthetic)" for m in mods)
        fig = {"subject": str(subject), "caption": caption, "uri": None, "note": None}
        if png and Path(png).is_file():
            try:
                fig["uri"] = png_uri(png, 720)
            except Exception as exc:  # noqa: BLE001 - one unreadable figure must not sink the section
                fig["note"] = f"{subject}: cannot show {Path(png).name} ({type(exc).__name__}: {exc})"
        else:
            fig["note"] = f"{subject}: no QC figure" + (f" ({png} not found)" if png else "")
        figures.append(fig)
    dirs = list(dict.fromkeys(str(Path(p).parent) for _, _, p in completed if p))
    return {"figures": figures, "shown": len(figures), "total": len(completed),
            "where": dirs[0] if len(dirs) == 1 else ", ".join(dirs) if dirs else None}


def validation_table(doc: Mapping, synthesized: Mapping[str, int] | None = None) -> dict | None:
    """synthesis.json's per-modality validation metrics ("validation", else "metrics"): PSNR (dB), SSIM, MAE (and
    a zero image's MAE, the baseline, when given); a modality synthesized for some subjects says for how many.
    None without metrics."""
    val = doc.get("validation")
    if not isinstance(val, Mapping) or not val:
        val = doc.get("metrics")
    if not isinstance(val, Mapping) or not val:
        return None
    per = {str(m): v for m, v in val.items() if isinstance(v, Mapping)}
    if not per:
        return None
    keys = [(k, name, d) for k, name, d in METRICS if k in ("psnr", "ssim", "mae") or any(k in v for v in per.values())]
    rows = []
    for mod, v in per.items():
        n = (synthesized or {}).get(mod, 0)
        rows.append([cell(mod, sub=f"synthesized for {n} subject(s)" if n else None)]
                    + [cell(_num(v.get(k)), d) for k, _, d in keys])
    return {"id": "synthesis-metrics-table", "columns": ["modality"] + [name for _, name, _ in keys],
            "rows": rows, "sortable": False}


def read_synthesis_curve(path: str | None) -> pd.DataFrame | None:
    """curve.csv as numbers (blank validation cells: NaN); None when absent, unreadable or without a step column."""
    if not path or not Path(path).is_file():
        return None
    try:
        curve = pd.read_csv(path)
    except (OSError, ValueError):
        return None
    if "step" not in curve or not len(curve):
        return None
    curve = curve.apply(pd.to_numeric, errors="coerce")
    return curve[curve["step"].notna()].sort_values("step", kind="stable")


def _val_columns(curve: pd.DataFrame, kind: str) -> dict[str, str]:
    """{modality: column} of curve.csv's val_<kind>_<modality> columns with a value."""
    rx = re.compile(rf"^val_{kind}_(.+)$")
    return {m.group(1): c for c in curve.columns for m in [rx.match(str(c))] if m and curve[c].notna().any()}


def curve_figure(curve: pd.DataFrame) -> dict:
    """The losses per step (log scale when all positive) and the validation MAE per modality (PSNR too, when
    logged) on their own panels: {uri, caption}."""
    plt = _plt()
    losses = [c for c in curve.columns if str(c).startswith("loss") and curve[c].notna().any()]
    mae, psnr = _val_columns(curve, "mae"), _val_columns(curve, "psnr")
    n = 2 + bool(psnr)
    fig, axes = plt.subplots(1, n, figsize=(4.0 * n, 2.8))
    a1, a2 = axes[0], axes[1]
    for c in losses:
        a1.plot(curve["step"], curve[c], lw=1.2, label=_mathtext_safe(LOSS_NAMES.get(str(c), str(c))))
    values = curve[losses].to_numpy(dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size and (values > 0).all():  # the losses differ by orders of magnitude
        a1.set_yscale("log")
    a1.set_title("training losses"), a1.set_xlabel("step")
    if losses:
        a1.legend(fontsize=7)
    for mod, c in mae.items():
        ok = curve[c].notna()
        a2.plot(curve.loc[ok, "step"], curve.loc[ok, c], marker="o", ms=3, lw=1.2, label=_mathtext_safe(mod))
    a2.set_title("validation MAE (patches)"), a2.set_xlabel("step")
    if mae:
        a2.legend(fontsize=7)
    if psnr:
        for mod, c in psnr.items():
            ok = curve[c].notna()
            axes[2].plot(curve.loc[ok, "step"], curve.loc[ok, c], marker="o", ms=3, lw=1.2,
                         label=_mathtext_safe(mod))
        axes[2].set_title("validation PSNR (dB, patches)"), axes[2].set_xlabel("step")
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    last = int(curve["step"].max())
    caption = f"synthesis model: {len(curve)} logged steps up to step {last}"
    if mae:
        caption += "; validation MAE at the last validation: " + ", ".join(
            f"{mod} {fmt(curve[c].dropna().iloc[-1], 4)}" for mod, c in mae.items())
    return {"uri": fig_uri(fig), "caption": caption}


def synthesis_section(summary_json: str | None, curve_csv: str | None,
                      completed: list[tuple[str, dict, str | None]]) -> dict:
    """The section's data: the completed subjects (table, QC figures), the synthesis model's validation metrics
    (synthesis.json) and training curves (curve.csv); each part that has no file carries a note instead."""
    completed = [(str(s), dict(m or {}), p) for s, m, p in completed]
    synthesized: dict[str, int] = {}
    for _, mods, _ in completed:
        for m in mods:
            synthesized[str(m)] = synthesized.get(str(m), 0) + 1
    doc, doc_note = _doc(summary_json)
    metrics = validation_table(doc, synthesized) if doc is not None else None
    val_subjects = _names(doc, "val_subjects", "validation_subjects") if doc else []
    train_subjects = _names(doc, "train_subjects", "training_subjects") if doc else []
    if doc is not None and metrics is None:
        doc_note = f"{Path(summary_json or 'synthesis.json').name} holds no validation metrics."
    steps = None
    if doc is not None:
        steps = next((int(v) for k in ("iterations_done", "step") for v in [doc.get(k)]
                      if isinstance(v, (int, float)) and not isinstance(v, bool)), None)
    config = doc.get("config") if doc is not None else None
    curve = read_synthesis_curve(curve_csv)
    curve_note = None
    if curve is None:
        name = Path(curve_csv).name if curve_csv else "curve.csv"
        curve_note = f"{name} " + ("not found" if not curve_csv or not Path(curve_csv).is_file()
                                   else "has no training curve") + ": no training curves."
    return {"n_completed": len(completed), "table": completed_table(completed) if completed else None,
            "modalities": ", ".join(f"{m} ({n} subject{'s' if n != 1 else ''})" for m, n in synthesized.items()),
            "qc": qc_figures(completed),
            "metrics": metrics, "metrics_note": doc_note,
            "val_subjects": ", ".join(val_subjects), "n_val": len(val_subjects),
            "n_train": len(train_subjects) if doc and any(k in doc for k in ("train_subjects", "training_subjects"))
            else None,
            "steps": steps, "model_dir": str(Path(summary_json).parent) if summary_json else None,
            "config": json.dumps(config, indent=2, sort_keys=True, default=str) if isinstance(config, dict) else None,
            "curve": curve_figure(curve) if curve is not None else None, "curve_note": curve_note}
