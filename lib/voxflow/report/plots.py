"""The report's figures: arrays and tables in, PNG data URIs out (no file is read here, except the QC
thumbnails' PNG bytes that `png_uri` is given). voxflow.report.data reads the files; voxflow.report.build
puts the URIs into the page."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

PLOT_METRICS = ("dice", "hd95", "assd", "nsd")
REF_COLOR, PRED_COLOR = "#22c55e", "#ef4444"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fig_uri(fig, dpi: int = 90) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    _plt().close(fig)
    return data_uri(buf.getvalue())


def png_uri(path: str | Path, max_width: int | None = None) -> str:
    """A PNG file as a data URI; with `max_width`, a thumbnail (downscaled, 256-colour palette: ~5x smaller)."""
    from PIL import Image

    with Image.open(path) as src:
        src.load()
        im: Image.Image = src
        if max_width and im.width > max_width:
            size = (max_width, max(1, round(im.height * max_width / im.width)))
            im = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            im = im.quantize(256, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue())


def metric_figures(metrics: pd.DataFrame, space: str, space_label: str) -> list[dict]:
    """Box/strip plot per metric of PLOT_METRICS (rows of `space`), one box per label: [{uri, caption}]."""
    plt = _plt()
    df = metrics[metrics["space"] == space]
    labels = list(dict.fromkeys(df["label"]))
    rng, figs = np.random.default_rng(0), []
    for m in (m for m in PLOT_METRICS if m in df):
        data = {lab: pd.to_numeric(df.loc[df["label"] == lab, m], errors="coerce").dropna().to_numpy()
                for lab in labels}
        data = {k: v for k, v in data.items() if len(v)}
        fig, ax = plt.subplots(figsize=(max(3.6, 0.7 * len(data) + 1.4), 3.0))
        ax.boxplot(list(data.values()), widths=0.55, showfliers=False, medianprops={"color": "#1e3a8a", "lw": 1.5},
                   boxprops={"color": "#64748b"})
        for j, d in enumerate(data.values(), 1):
            ax.scatter(j + rng.uniform(-0.16, 0.16, len(d)), d, s=12, alpha=0.75, color="#2563eb",
                       edgecolor="white", linewidth=0.4, zorder=3)
        ax.set_xticks(range(1, len(data) + 1), list(data), rotation=25, ha="right")
        ax.set_title(f"{m}{' (mm)' if m in ('hd95', 'assd') else ''}, {space_label}")
        if m in ("dice", "nsd"):
            ax.set_ylim(-0.03, 1.03)
        figs.append({"uri": fig_uri(fig), "caption": f"{m} per label ({space_label}); one point per subject"})
    return figs


def overlay_uri(image: np.ndarray, ref: np.ndarray | None, pred: np.ndarray | None, spacing_zyx, title: str) -> str:
    """Three orthogonal slices of `image` (Z, Y, X) through the reference lesion's centre (else the
    prediction's, else the middle), with the reference (green) and prediction (red) contours."""
    from voxflow.qc.figures import _aspects, mid_slices

    plt = _plt()
    basis = next((m for m in (ref, pred) if m is not None and m.any()), None)
    center = None
    if basis is not None:
        z, y, x = (int(c) for c in np.round(np.argwhere(basis > 0).mean(0)))
        center = (z, y, x)
    lo, hi = np.percentile(image[image != 0] if np.any(image != 0) else image, [1, 99.5])
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    aspects = _aspects(spacing_zyx)
    for c, (ax, sl) in enumerate(zip(axes, mid_slices(image, center))):
        ax.imshow(sl, cmap="gray", origin="lower", aspect=aspects[c], vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
        for mask, color, lw in ((ref, REF_COLOR, 1.8), (pred, PRED_COLOR, 0.9)):
            m = mid_slices(mask > 0, center)[c] if mask is not None else None
            if m is not None and m.any() and not m.all():
                ax.contour(m.astype(float), levels=[0.5], colors=color, linewidths=lw)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig_uri(fig, dpi=80)


def curve_figure(curve: pd.DataFrame, fold: str) -> dict:
    """A fold's training loss and validation pseudo-Dice per epoch: {uri, caption} (caption: epochs, best Dice)."""
    fig, (a1, a2) = _plt().subplots(1, 2, figsize=(8, 2.6))
    if "train_loss" in curve:
        a1.plot(curve["epoch"], curve["train_loss"], color="#2563eb")
    a1.set_title(f"{fold}: training loss"), a1.set_xlabel("epoch")
    for col, ls, lab in (("val_dice_fg", "-", "foreground"), ("val_dice_mean", "--", "mean class")):
        if col in curve:
            a2.plot(curve["epoch"], curve[col], ls=ls, label=lab, color="#16a34a" if ls == "-" else "#65a30d")
    a2.set_ylim(0, 1), a2.set_title(f"{fold}: validation pseudo-Dice"), a2.set_xlabel("epoch")
    a2.legend(fontsize=8)
    best = ""
    if "val_dice_fg" in curve and curve["val_dice_fg"].notna().any():
        k = curve["val_dice_fg"].idxmax()
        best = f", best val Dice {curve.loc[k, 'val_dice_fg']:.3f} at epoch {int(curve.loc[k, 'epoch'])}"
    return {"uri": fig_uri(fig), "caption": f"{fold}: {len(curve)} epochs{best}"}


def runtime_figure(table: pd.DataFrame) -> dict:
    """Total and mean seconds per rule (runtime_table's columns), as horizontal bars: {uri, caption}."""
    fig, axes = _plt().subplots(1, 2, figsize=(9, 0.3 * len(table) + 1.2), sharey=True)
    for ax, col, color in zip(axes, ("total s", "mean s"), ("#2563eb", "#0d9488")):
        ax.barh(table["rule"], table[col], color=color)
        ax.set_title(f"{col.split()[0]} seconds per rule")
    axes[0].invert_yaxis()
    return {"uri": fig_uri(fig), "caption": "run time per rule (benchmarks/)"}


def choice_figure(labels: list[str], dice: list[float | None], chosen: int | None, tolerance: float) -> dict:
    """The mean out-of-fold Dice of each configuration/ensemble as horizontal bars (best first, as given), the
    chosen one in green, the best's tolerance band shaded: {uri, caption}."""
    plt = _plt()
    vals = [np.nan if d is None else float(d) for d in dice]
    ok = [v for v in vals if np.isfinite(v)]
    best, worst = max(ok), min(ok)
    lo = max(0.0, worst - max(0.02, 0.5 * (best - worst)))
    fig, ax = plt.subplots(figsize=(5.6, 0.32 * len(vals) + 1.0))
    y = np.arange(len(vals))
    colors = [REF_COLOR if i == chosen else "#94a3b8" for i in range(len(vals))]
    ax.barh(y, [v - lo if np.isfinite(v) else 0.0 for v in vals], left=lo, color=colors, height=0.6)
    if tolerance > 0:
        ax.axvspan(best - tolerance, best, color="#fde68a", alpha=0.6, zorder=0, lw=0)
    for yi, v in zip(y, vals):
        ax.annotate("–" if not np.isfinite(v) else f"{v:.3f}", (v if np.isfinite(v) else lo, yi), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(y, [_mathtext_safe(s) for s in labels])
    ax.invert_yaxis()
    ax.set_xlim(lo, min(1.0, best + 0.25 * (best - lo) + 0.01))
    ax.set_xlabel("mean out-of-fold Dice")
    ax.grid(axis="y", visible=False)
    caption = "mean out-of-fold Dice per configuration / ensemble; green: chosen"
    return {"uri": fig_uri(fig), "caption": caption + (f"; shaded: within {tolerance:g} of the best" if tolerance > 0
                                                       else "")}


MAX_QC_LABELS = 6  # flagged subjects named per QC panel (the most extreme): more would cover the points


def _mathtext_safe(s: str) -> str:
    return s.replace("$", r"\$")  # a subject name with two "$" would be typeset as maths (or fail to parse)


def qc_score_figures(scores: pd.DataFrame, flagged: set[tuple[str, str, str]]) -> list[dict]:
    """One small strip plot per (modality, score) of qc/scores.tsv with a finite value, in the file's order: one
    point per subject, the median dashed, a sanity bound within the values dotted, flagged (subject, modality,
    score) in red with the subject's name; [{uri, caption}]."""
    from voxflow.qc.scores import SCORES

    plt = _plt()
    rng, figs = np.random.default_rng(0), []
    for (mod, name), g in scores.groupby(["modality", "score"], sort=False):
        v = pd.to_numeric(g["value"], errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            continue
        subs, y = g["subject"].astype(str).to_numpy()[ok], v[ok]
        med = float(np.median(y))
        red = np.array([(s, str(mod), str(name)) in flagged for s in subs], dtype=bool)
        x = rng.uniform(-0.22, 0.22, len(y))
        fig, ax = plt.subplots(figsize=(2.5, 2.2))
        ax.scatter(x[~red], y[~red], s=10, alpha=0.7, color="#2563eb", edgecolor="white", linewidth=0.3, zorder=3)
        ax.scatter(x[red], y[red], s=26, color=PRED_COLOR, edgecolor="white", linewidth=0.3, zorder=4)
        ax.axhline(med, ls="--", lw=1, color="#475569", zorder=2)
        shown = [b for b in SCORES.get(str(name), ("", (None, None), 0.0, ""))[1]
                 if b is not None and y.min() <= b <= y.max()]
        for b in shown:
            ax.axhline(b, ls=":", lw=1.2, color="#d97706", zorder=2)
        for i in np.flatnonzero(red)[np.argsort(-np.abs(y[red] - med), kind="stable")][:MAX_QC_LABELS]:
            ax.annotate(_mathtext_safe(subs[i]), (x[i], y[i]), xytext=(5, 0), textcoords="offset points",
                        fontsize=7, color=PRED_COLOR, va="center", annotation_clip=False)
        ax.set_xlim(-0.5, 1.3)  # room on the right for the names
        ax.set_xticks([])
        ax.set_title(_mathtext_safe(f"{mod} {name}"), fontsize=9)
        ax.tick_params(labelsize=7)
        n_bad, n_inf = int(red.sum()), int((~ok).sum() - np.isnan(v).sum())
        caption = f"{mod} {name}: {len(y)} subjects, {n_bad} flagged" + (f", {n_inf} infinite" if n_inf else "")
        caption += "; dashed: median" + (", dotted: sanity bound" if shown else "")
        figs.append({"uri": fig_uri(fig, dpi=90), "caption": caption})
    return figs
