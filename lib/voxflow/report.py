"""Cohort report: ONE self-contained HTML file (figures as base64 PNG data URIs, inline CSS, a few
lines of inline JS to sort tables; no external request of any kind), to open offline or mail.

Sections: run summary, cohort metrics (summary.tsv), box/strip plots, a sortable per-subject table
(predict-only: predicted volumes instead), prediction QC (worst subjects first), preprocessing QC,
training curves, run time per rule (benchmarks), provenance. A missing part becomes a short note.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import logging
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from voxflow.io import atomic_path
from voxflow.steps import step, subject_lists

log = logging.getLogger("voxflow")

PACKAGES = ("voxflow", "torch", "monai", "antspyx", "SimpleITK", "zarr", "snakemake", "numpy")
PLOT_METRICS = ("dice", "hd95", "assd", "nsd")
TABLE_METRICS = ("dice", "precision", "recall", "hd95", "assd", "nsd", "vol_diff_ml")
QC_STEPS = ("n4", "skullstrip", "mni", "native")  # columns shown: those with at least one image
REF_COLOR, PRED_COLOR = "#22c55e", "#ef4444"

CSS = """*{box-sizing:border-box}body{margin:0;color:#1f2937;background:#f3f4f6;
font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#1e293b;color:#f8fafc;padding:22px 32px}header h1{margin:0;font-size:24px;font-weight:600}
header p{margin:4px 0 0;color:#cbd5e1}nav{background:#fff;border-bottom:1px solid #e5e7eb;padding:8px 32px;
position:sticky;top:0;z-index:2}nav a{color:#334155;text-decoration:none;margin-right:18px;font-size:13px}
nav a:hover{color:#2563eb}main{max-width:1320px;margin:0 auto;padding:8px 32px 40px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 22px;margin:18px 0}
h2{font-size:18px;margin:0 0 12px;color:#0f172a}h3{font-size:15px;margin:14px 0 8px;color:#334155}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px}
.card{border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px;background:#f9fafb}.card span{font-size:15px}
.card b{display:block;font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#64748b;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid #e5e7eb;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#f1f5f9;color:#334155;font-weight:600}th:first-child,td:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafa}tbody tr:hover{background:#eff6ff}
.scroll{overflow:auto;max-height:560px}.scroll thead th{position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#94a3b8}
table.sortable th[aria-sort=ascending]:after{content:" \\2191";color:#2563eb}
table.sortable th[aria-sort=descending]:after{content:" \\2193";color:#2563eb}
td .q{display:block;color:#64748b;font-size:11px}.warn{color:#b91c1c;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:14px}
.grid.wide{grid-template-columns:repeat(auto-fill,minmax(560px,1fr))}
figure{margin:0;border:1px solid #e5e7eb;border-radius:6px;padding:6px;background:#fff}
figure img{width:100%;height:auto;display:block}figcaption{font-size:12px;color:#475569;padding:4px 2px 0}
.row3{display:grid;grid-template-columns:110px repeat(3,1fr);gap:8px;align-items:start;margin-bottom:8px}
.row3 img{width:100%;border:1px solid #e5e7eb;border-radius:4px}.note{color:#6b7280;font-style:italic;margin:6px 0}
pre{background:#0f172a;color:#e2e8f0;padding:12px;border-radius:6px;overflow:auto;max-height:420px;font-size:12px}
details{margin:8px 0}summary{cursor:pointer;font-weight:600;color:#334155}
.legend i{display:inline-block;width:14px;height:3px;margin:0 4px 3px 10px;vertical-align:middle}"""

JS = """document.querySelectorAll("table.sortable th").forEach(function(th){th.addEventListener("click",function(){
var tb=th.closest("table").tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th),
asc=th.getAttribute("aria-sort")!=="ascending";th.parentNode.querySelectorAll("th").forEach(function(h){
h.removeAttribute("aria-sort")});th.setAttribute("aria-sort",asc?"ascending":"descending");
function key(r){var c=r.cells[i];return c.hasAttribute("data-v")?c.getAttribute("data-v"):c.textContent}
Array.prototype.slice.call(tb.rows).sort(function(a,b){var x=key(a),y=key(b),nx=parseFloat(x),ny=parseFloat(y),c;
if(!isNaN(nx)&&!isNaN(ny))c=nx-ny;else if(isNaN(nx)!==isNaN(ny))c=isNaN(nx)?1:-1;
else c=x.localeCompare(y,undefined,{numeric:true});return asc?c:-c}).forEach(function(r){tb.appendChild(r)})})});"""


# ---------------------------------------------------------------- helpers
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def fig_uri(fig, dpi: int = 90) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(path: str | Path, max_width: int | None = None) -> str:
    """A PNG file as a data URI; with `max_width`, a thumbnail (downscaled, 256-colour palette: ~5x smaller)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if max_width and im.width > max_width:
            im = im.convert("RGB").resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
            im = im.quantize(256, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _e(x) -> str:
    return html.escape(str(x))


def _fmt(v, digits: int | None = None) -> str:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    try:
        v = float(v)
    except (TypeError, ValueError):
        return _e(v)
    if not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f}" if digits is not None else f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"


def _fig(uri: str, caption: str = "") -> str:
    return f'<figure><img src="{uri}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(df: pd.DataFrame, tid: str, sortable: bool = False, raw: bool = False, digits: int | None = None) -> str:
    """HTML table; numeric cells carry their value in data-v (for sorting); raw: text cells are HTML."""
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                dv = f"{float(v):.6g}" if np.isfinite(v) else ""
                cells.append(f'<td data-v="{dv}">{_fmt(v, digits)}</td>')
            else:
                cells.append(f"<td>{v if raw else _e(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head, cls = "".join(f"<th>{_e(c)}</th>" for c in df.columns), ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{cls} id="{tid}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _read_tsv(path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, sep="\t", dtype={"label": str}) if path and Path(path).is_file() else None
    except (OSError, ValueError):
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
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


def _space(metrics: pd.DataFrame) -> str:
    return "native" if (metrics["space"] == "native").any() else str(metrics["space"].iloc[0])


def lesion_dice(metrics: pd.DataFrame) -> pd.Series:
    """Whole-lesion Dice per subject, worst first: region "whole_tumor" if present, else the mean over labels."""
    df = metrics[metrics["space"] == _space(metrics)]
    if (df["label"] == "whole_tumor").any():
        df = df[df["label"] == "whole_tumor"]
    return df.groupby("subject")["dice"].mean().sort_values(kind="stable")


# ---------------------------------------------------------------- sections
def _summary_section(summary: pd.DataFrame) -> str:
    parts = []
    summary = summary if "space" in summary else summary.assign(space="all")
    groups = sorted(summary.groupby("space", sort=False), key=lambda kv: kv[0] != "native")
    for i, (space, sub) in enumerate(groups):
        rows = []
        for label, g in sub.groupby("label", sort=False):
            g = g.set_index("metric")
            row = {"label": _e(label), "n": str(int(g["n"].iloc[0]))}
            for m in (m for m in TABLE_METRICS if m in g.index):
                r = g.loc[m]
                row[m] = (f'{_fmt(r["mean"])} ± {_fmt(r["std"])}'
                          f'<span class="q">{_fmt(r["median"])} [{_fmt(r["q25"])}–{_fmt(r["q75"])}]</span>')
            empty = [int(g[f"n_empty_{k}"].iloc[0]) if f"n_empty_{k}" in g else 0 for k in ("pred", "ref", "both")]
            txt = " / ".join(map(str, empty))
            row["empty pred / ref / both"] = f'<span class="warn">{txt}</span>' if empty[0] or empty[1] else txt
            rows.append(row)
        tab = _table(pd.DataFrame(rows), f"summary-{space}", raw=True)
        parts.append(f"<h3>{_e(space)} space</h3>{tab}" if i == 0
                     else f"<details><summary>{_e(space)} space</summary>{tab}</details>")
    nan = int(summary["n_nan"].sum()) if "n_nan" in summary else 0
    return "".join(parts) + _note(
        "Cells: mean ± std (sample); below: median [q25–q75]. Distances in mm, volumes in ml. Empty-mask cases "
        "are scored by the fixed policy (voxflow.metrics.EMPTY_POLICY) and included in the statistics."
        + (f" {nan} missing values were left out." if nan else ""))


def _metric_plots(metrics: pd.DataFrame) -> str:
    plt, space = _plt(), _space(metrics)
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
        ax.set_title(f"{m}{' (mm)' if m in ('hd95', 'assd') else ''}, {space} space")
        if m in ("dice", "nsd"):
            ax.set_ylim(-0.03, 1.03)
        figs.append(_fig(fig_uri(fig), f"{m} per label ({space}); one point per subject"))
    return f'<div class="grid">{"".join(figs)}</div>' if figs else _note("No metric columns to plot.")


def _subject_table(metrics: pd.DataFrame, worst: pd.Series) -> str:
    space = _space(metrics)
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
    lesion = "region whole_tumor" if whole == "whole_tumor" else "mean over labels"
    return _table(t, "subject-table", sortable=True) + _note(
        f"{space} space; click a column header to sort. Lesion Dice: {lesion}; distances, volumes, empty: {whole}.")


def predicted_volumes(out_dir: Path, subjects: list[str], config: dict) -> pd.DataFrame:
    """Predicted volume (ml) per label and region per subject, from the native (else MNI) prediction."""
    import SimpleITK as sitk

    values = [int(v) for v in ((config.get("input") or {}).get("label_values") or []) if int(v) != 0]
    regions = (config.get("evaluate") or {}).get("regions") or {}
    rows = []
    for s in subjects:
        p = next((p for p in (out_dir / "predictions" / s / f"{s}_seg{x}.nii.gz" for x in ("", "_mni"))
                  if p.is_file()), None)
        if p is None:
            continue
        img = sitk.ReadImage(str(p))
        arr, ml = sitk.GetArrayViewFromImage(img), float(np.prod(img.GetSpacing())) / 1000.0
        row = {"subject": s, "space": "mni" if p.name.endswith("_mni.nii.gz") else "native",
               "foreground": float((arr != 0).sum() * ml)}
        row.update({str(v): float((arr == v).sum() * ml) for v in values or [v for v in np.unique(arr) if v]})
        row.update({k: float(np.isin(arr, list(ids)).sum() * ml) for k, ids in regions.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _overlay_uri(store: Path, pred_path: Path, channel: str | None, title: str, show_ref: bool = True) -> str:
    """Three orthogonal MNI slices through the reference lesion's centre (else the prediction's), with contours."""
    import SimpleITK as sitk
    import zarr

    from voxflow.qc import _aspects, mid_slices

    plt = _plt()
    root = zarr.open_group(str(store), mode="r")
    meta = dict(root.attrs.get("voxflow", {}))
    mods = list(meta.get("modalities", []))
    ch = mods.index(channel) if channel in mods else 0
    image = np.asarray(root["0"][ch], dtype=np.float32)
    try:
        ref = np.asarray(root["labels/lesion/0"][:]) if show_ref and meta.get("has_label", True) else None
    except KeyError:
        ref = None
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_path))) if pred_path.is_file() else None
    if pred is not None and pred.shape != image.shape:
        raise ValueError(f"prediction {pred.shape} and store image {image.shape} differ in shape")
    basis = next((m for m in (ref, pred) if m is not None and m.any()), None)
    center = tuple(int(c) for c in np.round(np.argwhere(basis > 0).mean(0))) if basis is not None else None
    lo, hi = np.percentile(image[image != 0] if np.any(image != 0) else image, [1, 99.5])
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    aspects = _aspects(meta.get("spacing_zyx", (1.0, 1.0, 1.0)))
    for c, (ax, sl) in enumerate(zip(axes, mid_slices(image, center))):
        ax.imshow(sl, cmap="gray", origin="lower", aspect=aspects[c], vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
        for mask, color, lw in ((ref, REF_COLOR, 1.8), (pred, PRED_COLOR, 0.9)):
            m = mid_slices(mask > 0, center)[c] if mask is not None else None
            if m is not None and m.any() and not m.all():
                ax.contour(m.astype(float), levels=[0.5], colors=color, linewidths=lw)
    what = f" ({mods[ch]})" if ch < len(mods) else ""
    fig.suptitle(title + what + ("" if pred is not None else ", prediction missing"), fontsize=10)
    fig.tight_layout()
    return fig_uri(fig, dpi=80)


def _qc_predictions(out_dir: Path, order: list[str], dice: pd.Series | None, config: dict, cap: int) -> str:
    channel = (config.get("input") or {}).get("reference")
    figs = []
    for s in order[:cap]:
        store, pred = out_dir / "zarr" / f"{s}.zarr", out_dir / "predictions" / s / f"{s}_seg_mni.nii.gz"
        d = f", lesion Dice {_fmt(dice[s])}" if dice is not None and s in dice else ""
        try:
            if not store.exists():
                raise FileNotFoundError(f"{s}: zarr store missing")
            body = f'<img src="{_overlay_uri(store, pred, channel, s + d, dice is not None)}" alt="{_e(s + d)}">'
        except Exception as exc:  # noqa: BLE001 - one bad subject must not sink the report
            body = _note(str(exc) if isinstance(exc, FileNotFoundError) else f"{s}: cannot draw ({exc})")
        figs.append(f'<figure data-subject="{_e(s)}">{body}</figure>')
    if not figs:
        return _note("No predictions.")
    legend = ('<p class="legend">MNI space, slices through the lesion centre.'
              + (f'<i style="background:{REF_COLOR}"></i>reference' if dice is not None else "")
              + f'<i style="background:{PRED_COLOR}"></i>prediction'
              + (" — worst subjects (lesion Dice) first." if dice is not None else "") + "</p>")
    more = _note(f"Showing {cap} of {len(order)} subjects.") if len(order) > cap else ""
    return legend + f'<div class="grid wide">{"".join(figs)}</div>' + more


def _preprocessing_qc(out_dir: Path, cap: int) -> str:
    qc = out_dir / "qc"
    subjects = sorted(p.name for p in qc.iterdir() if p.is_dir()) if qc.is_dir() else []
    if not subjects:
        return _note(f"No QC images under {qc}.")
    steps = [st for st in QC_STEPS if any((qc / s / f"{st}.png").is_file() for s in subjects)]
    grid = f' style="grid-template-columns:110px repeat({len(steps)},1fr)"'
    rows = [f'<div class="row3"{grid}><b></b>' + "".join(f"<b>{s}</b>" for s in steps) + "</div>"]
    for s in subjects[:cap]:
        cells = [f'<img src="{png_uri(p, 420)}" alt="{_e(s)} {st}">' if (p := qc / s / f"{st}.png").is_file()
                 else _note("missing") for st in steps]
        rows.append(f'<div class="row3"{grid}><b>{_e(s)}</b>{"".join(cells)}</div>')
    return "".join(rows) + (_note(f"Showing the first {cap} of {len(subjects)} subjects; every image is under "
                                  f"{qc}/.") if len(subjects) > cap else "")


def _curves(model_dir: Path) -> str:
    plt, figs, notes = _plt(), [], []
    for d in sorted(model_dir.glob("fold_*"), key=lambda p: (len(p.name), p.name)):
        c = pd.read_csv(d / "curve.csv") if (d / "curve.csv").is_file() else None
        if c is None or c.empty or "epoch" not in c:
            notes.append(f"{d.name}: no curve.csv")
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 2.6))
        if "train_loss" in c:
            a1.plot(c["epoch"], c["train_loss"], color="#2563eb")
        a1.set_title(f"{d.name}: training loss"), a1.set_xlabel("epoch")
        for col, ls, lab in (("val_dice_fg", "-", "foreground"), ("val_dice_mean", "--", "mean class")):
            if col in c:
                a2.plot(c["epoch"], c[col], ls=ls, label=lab, color="#16a34a" if ls == "-" else "#65a30d")
        a2.set_ylim(0, 1), a2.set_title(f"{d.name}: validation pseudo-Dice"), a2.set_xlabel("epoch")
        a2.legend(fontsize=8)
        best = ""
        if "val_dice_fg" in c and c["val_dice_fg"].notna().any():
            k = c["val_dice_fg"].idxmax()
            best = f", best val Dice {c.loc[k, 'val_dice_fg']:.3f} at epoch {int(c.loc[k, 'epoch'])}"
        figs.append(_fig(fig_uri(fig), f"{d.name}: {len(c)} epochs{best}"))
    if not (figs or notes):
        return _note("No trained folds found.")
    grid = f'<div class="grid wide">{"".join(figs)}</div>' if figs else ""
    return grid + (_note("; ".join(notes)) if notes else "")


def runtime_table(out_dir: Path) -> pd.DataFrame:
    """Per rule: jobs, total/mean/max seconds and max RSS from benchmarks/<rule>/*.tsv (repeats averaged)."""
    rows = []
    for f in sorted((out_dir / "benchmarks").glob("*/*.tsv")):
        b = _read_tsv(f)
        if b is not None and "s" in b and len(b):
            rss = pd.to_numeric(b["max_rss"], errors="coerce").max() if "max_rss" in b else np.nan
            rows.append({"rule": f.parent.name, "s": float(pd.to_numeric(b["s"], errors="coerce").mean()),
                         "rss": float(rss)})
    if not rows:
        return pd.DataFrame(columns=["rule", "jobs", "total s", "mean s", "max s", "max RSS (MB)"])
    g = pd.DataFrame(rows).groupby("rule")
    t = pd.DataFrame({"jobs": g["s"].size(), "total s": g["s"].sum(), "mean s": g["s"].mean(),
                      "max s": g["s"].max(), "max RSS (MB)": g["rss"].max()})
    return t.sort_values("total s", ascending=False).reset_index()


def _runtime(out_dir: Path) -> str:
    t = runtime_table(out_dir)
    if t.empty:
        return _note("No benchmark files found.")
    fig, axes = _plt().subplots(1, 2, figsize=(9, 0.3 * len(t) + 1.2), sharey=True)
    for ax, col, color in zip(axes, ("total s", "mean s"), ("#2563eb", "#0d9488")):
        ax.barh(t["rule"], t[col], color=color)
        ax.set_title(f"{col.split()[0]} seconds per rule")
    axes[0].invert_yaxis()
    return (f'<div class="grid wide">{_fig(fig_uri(fig), "run time per rule (benchmarks/)")}</div>'
            + _table(t, "runtime-table", sortable=True, digits=1)
            + _note(f"Total {t['total s'].sum() / 60:.1f} min of job time over {int(t['jobs'].sum())} jobs."))


def _provenance(out_dir: Path, config: dict, commit: str) -> str:
    import yaml

    vers = pd.DataFrame(list(package_versions().items()), columns=["package", "version"])
    cfg = _e(yaml.safe_dump(config, sort_keys=False))
    parts = ["<h3>Package versions</h3>", _table(vers, "version-table"), f"<p>git commit: <code>{_e(commit)}</code>",
             f"</p><details><summary>config (merged)</summary><pre>{cfg}</pre></details>"]
    for name in ("plans.json", "postprocessing.json", "split.json"):
        obj = _read_json(out_dir / "model" / name)
        parts.append(_note(f"{name}: not found") if obj is None else
                     f"<details><summary>{name}</summary><pre>{_e(json.dumps(obj, indent=2))}</pre></details>")
    return "".join(parts)


def _guard(fn, *args) -> str:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - a broken optional part becomes a note, not a failed report
        log.warning("report section %s failed", fn.__name__, exc_info=True)
        return _note(f"This section could not be built: {type(exc).__name__}: {exc}")


def _excluded_section(excluded: list[dict]) -> str:
    """The subjects left out (input.on_error: exclude): the step that failed and its one-line reason."""
    df = pd.DataFrame(excluded, columns=["subject", "step", "file", "problem"])
    return (_note(f"{len(df)} subject(s) were left out of training, prediction and evaluation: fix their input "
                  "and rerun the same command to bring them back (status/cohort.json lists them too).")
            + _table(df, "excluded-table", sortable=True))


# ---------------------------------------------------------------- assembly
def build_report(out_dir: Path, config: dict, html_path: Path, metrics_tsv: Path | None, summary_tsv: Path | None,
                 subjects_predicted: list[str], max_qc_subjects: int = 12, workflow_dir: Path | None = None,
                 model_dir: Path | None = None, cohort: dict | None = None) -> None:
    """Write the cohort report of the run under `out_dir` as one self-contained HTML file (atomically).

    metrics_tsv None (or missing/empty): predict-only view (predicted volumes). workflow_dir: where to ask
    `git rev-parse HEAD` (default: the current directory). cohort: status/cohort.json (excluded subjects and
    validation warnings: the first sections when there are any)."""
    out_dir, config = Path(out_dir), dict(config or {})
    model_dir = Path(model_dir) if model_dir else out_dir / "model"
    metrics, summary = _read_tsv(metrics_tsv), _read_tsv(summary_tsv)
    evaluated = metrics is not None and len(metrics) > 0
    if evaluated and summary is None:
        from voxflow.metrics import summarize

        summary = pd.concat([summarize(g.drop(columns=["subject", "space"])).assign(space=sp)
                             for sp, g in metrics.groupby("space", sort=False)], ignore_index=True)
    dice = lesion_dice(metrics) if evaluated else None
    predicted = list(subjects_predicted)
    order = list(dice.index) + [s for s in predicted if s not in dice.index] if evaluated else sorted(predicted)
    plans = _read_json(model_dir / "plans.json") or {}
    folds = sorted((p.name.split("_", 1)[1] for p in model_dir.glob("fold_*")
                    if (p / "model_final.pt").is_file() or (p / "curve.csv").is_file()), key=lambda f: (len(f), f))
    n_subjects = max(len(list((out_dir / "zarr").glob("*.zarr"))), len(predicted),
                     sum(p.is_dir() for p in (out_dir / "qc").glob("*")))
    cohort = cohort or {}
    excluded, warnings = cohort.get("excluded") or [], cohort.get("warnings") or []
    if cohort.get("subjects") is not None:
        n_subjects = len(cohort["subjects"]) + len(excluded)
    commit, inp = git_commit(workflow_dir), config.get("input") or {}
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    cards = {"subjects": n_subjects, "excluded": len(excluded), "predicted": len(predicted),
             "evaluated": metrics["subject"].nunique() if evaluated else "—",
             "modalities": ", ".join(inp.get("modalities") or plans.get("modalities") or []) or "unknown",
             "model": plans.get("dim") or (config.get("model") or {}).get("dim", "unknown"),
             "folds trained": f"{len(folds)} ({', '.join(folds)})" if folds else "0",
             "mode": "evaluation" if evaluated else "predict-only", "date": now,
             "voxflow": package_versions()["voxflow"], "git commit": commit[:12]}
    secs = [("run", "Run summary", '<div class="cards">' + "".join(
        f'<div class="card"><b>{_e(k)}</b><span>{_e(v)}</span></div>' for k, v in cards.items()) + "</div>")]
    if excluded:  # first: what the user must look at before trusting anything below
        secs.insert(0, ("excluded", f"Excluded subjects ({len(excluded)})", _guard(_excluded_section, excluded)))
    if warnings:
        secs.append(("warnings", f"Input warnings ({len(warnings)})", _table(
            pd.DataFrame(warnings, columns=["subject", "file", "problem"]), "warning-table", sortable=True)))
    if evaluated:
        secs += [("summary", "Cohort summary", _guard(_summary_section, summary)),
                 ("plots", "Metric distributions", _guard(_metric_plots, metrics)),
                 ("subjects", "Per-subject metrics", _guard(_subject_table, metrics, dice))]
    else:
        vol = _guard(predicted_volumes, out_dir, predicted, config)
        body = vol if isinstance(vol, str) else _table(vol, "volume-table", sortable=True) if len(vol) else _note(
            "No prediction files found.")
        missing = _note(f"{metrics_tsv} missing or empty: predict-only view.") if metrics_tsv is not None else ""
        secs.append(("volumes", "Predicted volumes (ml)", missing + body))
    secs += [("qc-pred", "Prediction QC" + (" (worst first)" if evaluated else ""),
              _guard(_qc_predictions, out_dir, order, dice, config, max_qc_subjects)),
             ("qc-pre", "Preprocessing QC", _guard(_preprocessing_qc, out_dir, max_qc_subjects)),
             ("curves", "Training curves", _guard(_curves, model_dir)),
             ("runtime", "Run time per rule", _guard(_runtime, out_dir)),
             ("provenance", "Provenance", _guard(_provenance, out_dir, config, commit))]
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in secs)
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>' for sid, title, content in secs)
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width='
           f'device-width, initial-scale=1"><title>voxflow report</title><style>{CSS}</style></head><body><header>'
           f"<h1>voxflow cohort report</h1><p>{_e(out_dir.resolve())} · {_e(now)}</p></header><nav>{nav}</nav>"
           f"<main>{body}</main><script>{JS}</script></body></html>")
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(doc, encoding="utf-8")


@step
def report(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """The cohort report. inp: subjects (file of the predicted ones), metrics, summary; cfg: config
    (merged), output_dir, workflow_dir, max_qc_subjects."""
    config = cfg.get("config") or {}
    build_report(Path(cfg.get("output_dir") or config.get("output_dir", "results")), config, Path(out["html"]),
                 inp.get("metrics"), inp.get("summary"), list(subject_lists(inp, cfg).get("subjects") or []),
                 max_qc_subjects=int(cfg.get("max_qc_subjects", 12)), workflow_dir=cfg.get("workflow_dir"),
                 model_dir=cfg.get("model_dir"), cohort=_read_json(Path(inp["cohort"])) if inp.get("cohort") else None)
    return {"html": out["html"], "bytes": Path(out["html"]).stat().st_size}
