"""Cohort report: ONE self-contained HTML file (figures as base64 PNG data URIs, inline CSS and a few lines
of inline JS to sort tables; no external request of any kind), to open offline or mail.

The page is rendered with Jinja2 (autoescaped) from voxflow/report/templates/report.html.j2, which inlines
report.css and report.js. This module gathers the report's data into one plain context dict (`collect`)
and renders it (`render`); voxflow.report.data reads the files and makes the tables, voxflow.report.plots
draws the figures.

Sections: excluded subjects (first, when any), run summary, input warnings, cohort metrics (summary.tsv),
box/strip plots, a sortable per-subject table (predict-only: predicted volumes instead), cohort QC (quality
scores and outlier flags: voxflow.report.qc), prediction QC (worst subjects first), preprocessing QC, training
curves, synthesized modalities (voxflow.report.synthesis: only with a synthesis model or a subject completed by it),
model choice and post-processing (voxflow.report.choice: only with a postprocessing.json or inference.json),
run time per rule (benchmarks), provenance. A missing part becomes a short note.

Every file read is one the `report` rule declares (workflow/rules/report.smk), found from the rule's
named inputs or from the path patterns in its config with the subjects of two declared lists: the
predicted subjects (status/predicted.json) and the subjects shown in the QC sections, at most
`max_qc_subjects` each, the QC-flagged ones among them (`shown_subjects`, written by the checkpoint
report_subjects). The benchmark files,
which Snakemake writes itself, are the one exception (voxflow.report.data.runtime_table).
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from voxflow.core.atomic import atomic_path
from voxflow.core.layout import PLANS_FILE, POSTPROCESSING_FILE, SPLIT_FILE, OutputLayout
from voxflow.planning.plans import Plans
from voxflow.report.choice import TITLE as CHOICE_TITLE
from voxflow.report.choice import has_choice, model_choice
from voxflow.report.data import (cell, git_commit, lesion_dice, main_space, overlay_arrays, package_versions,
                                 predicted_volumes, qc_flag_labels, read_curve, read_json, read_qc_tsv, read_tsv,
                                 runtime_table, space_name, subject_table, summary_tables, table)
from voxflow.report.plots import (PRED_COLOR, REF_COLOR, curve_figure, metric_figures, overlay_uri, png_uri,
                                  runtime_figure)
from voxflow.report.qc import cohort_qc, flagged_order
from voxflow.report.synthesis import TITLE as SYNTHESIS_TITLE
from voxflow.report.synthesis import has_synthesis, synthesis_section
from voxflow.pipeline.status import subject_lists
from voxflow.core.stores import store_path

log = logging.getLogger("voxflow")

QC_STEPS = ("n4", "skullstrip", "mni", "native")  # a run's QC figures; columns shown: those with an image
MAX_QC_SUBJECTS = 12


def default_paths(out_dir: str | Path, store_space: str | None) -> dict:
    """Where a run under `out_dir` keeps what the report reads ({subject}, {step}, {rule}, {job}: placeholders;
    the predictions on the stores' grid are named after its space). The rule passes its own patterns."""
    at = OutputLayout(str(out_dir))
    return {"prediction": at.prediction("{subject}", store_space or "grid"), "native": at.prediction(),
            "store": at.store(), "qc": at.qc_figure("{step}"), "benchmarks": at.benchmark("{rule}", "{job}")}


@dataclass
class ReportFiles:
    """What the report reads: the rule's named inputs, and per subject shown the files found from the patterns."""

    metrics: str | None = None  # evaluation/metrics.tsv (None: predict-only)
    summary: str | None = None
    cohort: dict | None = None  # status/cohort.json, read
    predicted: list[str] = field(default_factory=list)
    prediction_qc: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, store, store-grid prediction)
    n_predicted: int = 0
    preprocessing_qc: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (subject, {step: png})
    n_subjects: int = 0
    qc_dir: str = ""  # where every QC image is, for the note
    volumes: list[tuple[str, str]] = field(default_factory=list)  # (subject, native prediction): predict-only
    models: list[str] = field(default_factory=list)  # fold_<k>/model_final.pt
    plans: str | None = None
    postprocessing: str | None = None
    split: str | None = None
    benchmarks: str | None = None  # a pattern: not inputs (runtime_table)
    qc_scores: str | None = None  # qc/scores.tsv and qc/flags.tsv (None: not inputs, e.g. an older run)
    qc_flags: str | None = None
    qc_flagged: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # flagged, worst first: {step: png}
    synthesis: str | None = None  # model/synthesis/synthesis.json and curve.csv (None: no synthesis model)
    synthesis_curve: str | None = None
    # the predicted subjects completed by the synthesis model: (subject, {modality: why missing}, QC png or None)
    completed: list[tuple[str, dict, str | None]] = field(default_factory=list)


def shown_subjects(metrics_tsv, predicted: list[str], cohort: dict | None, cap: int = MAX_QC_SUBJECTS,
                   flags_tsv=None) -> dict:
    """The subjects of the QC sections, in display order: the predicted ones, worst lesion Dice first
    (predict-only: by name); the QC-flagged ones of flags_tsv, worst first ("flagged"); and the cohort's,
    the flagged ones first, then every subject by name (excluded ones too: their QC shows what went wrong); at
    most `cap` each, with how many there are. The checkpoint report_subjects writes it, the report rule
    declares these subjects' files, and the report shows them."""
    metrics = read_tsv(metrics_tsv)
    if metrics is not None and len(metrics):
        dice = lesion_dice(metrics)
        order = list(dice.index) + [s for s in predicted if s not in dice.index]
    else:
        order = sorted(predicted)
    everyone = (sorted(set(cohort.get("subjects") or []) | {e["subject"] for e in cohort.get("excluded") or []})
                if cohort else sorted(predicted))
    flagged = flagged_order(flags_tsv, cap)
    pre = list(dict.fromkeys(flagged + everyone))[:cap]
    return {"prediction_qc": order[:cap], "n_predicted": len(order), "preprocessing_qc": pre,
            "n_subjects": len(everyone), "flagged": flagged}


def write_shown_subjects(metrics_tsv: str | None, predicted_json: str, cohort_json: str, cap: int, out: str,
                         flags_tsv: str | None = None) -> dict:
    """status/report_subjects.json (the checkpoint report_subjects): shown_subjects from the run's files."""
    import json

    from voxflow.core.atomic import write_json_atomic

    with open(predicted_json) as fh:
        predicted = json.load(fh)["subjects"]
    with open(cohort_json) as fh:
        cohort = json.load(fh)
    shown = shown_subjects(metrics_tsv, predicted, cohort, cap, flags_tsv)
    write_json_atomic(shown, out)
    return shown


def report_files(inp: dict, cfg: dict) -> ReportFiles:
    """The files of the report step (the rule's named inputs `inp` and the config `cfg` of report.smk)."""
    config = cfg.get("config") or {}
    out_dir = cfg.get("output_dir") or config.get("output_dir", "results")
    paths = default_paths(out_dir, cfg.get("store_space")) | (cfg.get("paths") or {})
    predicted = list(subject_lists(inp, cfg).get("subjects") or [])
    cohort = read_json(inp.get("cohort"))
    shown = read_json(inp.get("shown")) or shown_subjects(inp.get("metrics"), predicted, cohort,
                                                          int(cfg.get("max_qc_subjects", MAX_QC_SUBJECTS)),
                                                          inp.get("qc_flags"))
    at = lambda key, s, st="": paths[key].replace("{subject}", s).replace("{step}", st)  # noqa: E731
    models, steps = inp.get("models") or [], cfg.get("qc_steps") or QC_STEPS
    incomplete = (cohort or {}).get("incomplete") or {}  # {subject: {modality: why}}: completed by synthesis
    incomplete = incomplete if isinstance(incomplete, dict) else {}

    def synth_qc(s: str) -> str | None:  # the completed subject's QC figure (qc_synthesis/<subject>.png), if made
        p = at("synthesis_qc", s) if "synthesis_qc" in paths else None
        return p if p and Path(p).is_file() else None

    return ReportFiles(
        metrics=inp.get("metrics"), summary=inp.get("summary"), cohort=cohort, predicted=predicted,
        prediction_qc=[(s, at("store", s), at("prediction", s)) for s in shown["prediction_qc"]],
        n_predicted=shown["n_predicted"], n_subjects=shown["n_subjects"],
        preprocessing_qc=[(s, {st: at("qc", s, st) for st in steps}) for s in shown["preprocessing_qc"]],
        qc_dir=str(Path(paths["qc"]).parent.parent), volumes=[(s, at("native", s)) for s in predicted],
        models=[models] if isinstance(models, str) else list(models), plans=inp.get("plans"),
        postprocessing=inp.get("postprocessing"), split=inp.get("split"), benchmarks=paths["benchmarks"],
        qc_scores=inp.get("qc_scores"), qc_flags=inp.get("qc_flags"),
        qc_flagged=[(s, {st: at("qc", s, st) for st in steps}) for s in shown.get("flagged") or []],
        synthesis=inp.get("synthesis"), synthesis_curve=inp.get("synthesis_curve"),
        completed=[(s, dict(incomplete[s]), synth_qc(s)) for s in predicted
                   if s in incomplete and isinstance(incomplete[s], dict)])


# ---------------------------------------------------------------- sections (plain data for the template)
def _excluded(excluded: list[dict]) -> dict:
    df = pd.DataFrame(excluded, columns=["subject", "step", "file", "problem"])
    return {"count": len(df), "table": table(df, "excluded-table", sortable=True)}


def _warnings(warnings: list[dict]) -> dict:
    return {"table": table(pd.DataFrame(warnings, columns=["subject", "file", "problem"]), "warning-table",
                           sortable=True)}


def _plots(metrics: pd.DataFrame) -> dict:
    space = main_space(metrics)
    return {"figures": metric_figures(metrics, space, space_name(space))}


def _volumes(files: ReportFiles, config: dict) -> dict:
    vol = predicted_volumes(files.volumes, config)
    return {"table": table(vol, "volume-table", sortable=True) if len(vol) else None, "metrics": files.metrics}


def _prediction_qc(files: ReportFiles, dice: pd.Series | None, config: dict, store_space: str) -> dict:
    channel = (config.get("input") or {}).get("reference")
    figures = []
    for s, store, pred in files.prediction_qc:
        title = s + (f", lesion Dice {dice[s]:.3f}" if dice is not None and s in dice else "")
        fig = {"subject": s, "alt": title, "uri": None, "note": None}
        try:
            store = store_path(store)
            if not Path(store).exists():
                raise FileNotFoundError(f"{s}: zarr store missing")
            a = overlay_arrays(store, pred, channel, show_ref=dice is not None)
            what = f" ({a['modality']})" if a["modality"] else ""
            fig["uri"] = overlay_uri(a["image"], a["ref"], a["pred"], a["spacing"],
                                     title + what + ("" if a["pred"] is not None else ", prediction missing"))
        except Exception as exc:  # noqa: BLE001 - one bad subject must not sink the report
            fig["note"] = str(exc) if isinstance(exc, FileNotFoundError) else f"{s}: cannot draw ({exc})"
        figures.append(fig)
    return {"figures": figures, "space": space_name(store_space), "reference": dice is not None,
            "shown": len(figures), "total": files.n_predicted}


def _preprocessing_qc(files: ReportFiles) -> dict:
    rows = files.preprocessing_qc
    steps = list(dict.fromkeys(st for _, pngs in rows for st, p in pngs.items() if Path(p).is_file()))
    flagged = {s for s, _ in files.qc_flagged}  # marked: the cohort QC shows why
    return {"steps": steps, "where": files.qc_dir, "shown": len(rows), "total": files.n_subjects,
            "rows": [{"subject": s, "flagged": s in flagged,
                      "cells": [{"uri": png_uri(pngs[st], 420) if Path(pngs[st]).is_file() else None,
                                 "alt": f"{s} {st}"} for st in steps]} for s, pngs in rows]}


def _fold_label(model: Path) -> str:
    """"fold_0", or "<configuration> fold_0" when the fold's plans.json (model/<configuration>/plans.json, the plan
    rule's) names its configuration (model.configurations)."""
    plans = model.parent.parent / PLANS_FILE
    try:
        conf = Plans.load(plans).configuration if plans.is_file() else None
    except (OSError, ValueError):  # PlansError (not a JSON object) is a ValueError
        conf = None
    return f"{conf} {model.parent.name}" if conf else model.parent.name


def _curves(models: list[str]) -> dict:
    figures, missing = [], []
    for path in models:
        fold = _fold_label(Path(path))
        curve = read_curve(path)
        if curve is None:
            missing.append(fold)
        else:
            figures.append(curve_figure(curve, fold))
    return {"figures": figures, "missing": missing}


def _subjects(metrics: pd.DataFrame, dice: pd.Series, qc_flags: dict[str, str] | None,
              completed: list[tuple[str, dict, str | None]]) -> dict:
    """subject_table, with a "synthetic" column (the subject's synthesized modalities) when some were completed."""
    data = subject_table(metrics, dice, qc_flags)
    synthetic = {str(s): ", ".join(map(str, mods)) for s, mods, _ in completed}
    if synthetic:
        t = data["table"]
        t["columns"] = [*t["columns"], "synthetic"]
        t["rows"] = [[*row, cell(synthetic.get(row[0]["text"], ""), warn=row[0]["text"] in synthetic)]
                     for row in t["rows"]]
    return data


def _runtime(pattern: str | None) -> dict:
    t = runtime_table(pattern) if pattern else pd.DataFrame()
    if t.empty:
        return {"table": None}
    return {"table": table(t, "runtime-table", sortable=True, digits=1), "figure": runtime_figure(t),
            "minutes": f"{t['total s'].sum() / 60:.1f}", "jobs": int(t["jobs"].sum())}


def _provenance(files: ReportFiles, config: dict, commit: str) -> dict:
    import yaml

    versions = pd.DataFrame(list(package_versions().items()), columns=["package", "version"])
    docs = [{"name": Path(p).name if p else name, "text": None if obj is None else json.dumps(obj, indent=2)}
            for name, p in ((PLANS_FILE, files.plans), (POSTPROCESSING_FILE, files.postprocessing),
                            (SPLIT_FILE, files.split)) for obj in [read_json(p)]]
    return {"versions": table(versions, "version-table"), "commit": commit, "files": docs,
            "config": yaml.safe_dump(config, sort_keys=False)}


def _guard(fn, *args) -> dict:
    try:
        return fn(*args)
    except Exception as exc:  # a broken optional part becomes a note (and a logged traceback), not a failed report
        log.warning("report section %s failed", fn.__name__, exc_info=True)
        return {"error": f"This section could not be built: {type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------- assembly
def collect(files: ReportFiles, config: dict, run_dir: str | Path, workflow_dir: str | Path | None = None,
            store_space: str | None = None, now: str | None = None) -> dict:
    """The report's content as a plain dict for report.html.j2: header, cards and the sections in page order
    ({id, title, kind, data}; data {"error": ...} when a section could not be built)."""
    config = dict(config or {})
    metrics, summary = read_tsv(files.metrics), read_tsv(files.summary)
    if metrics is not None and not len(metrics):
        metrics = None  # no rows (nothing predicted): the predict-only view
    evaluated = metrics is not None
    dice, n_evaluated = None, "—"
    if metrics is not None:
        if summary is None:
            from voxflow.core.metrics import summarize

            summary = pd.concat([summarize(g.drop(columns=["subject", "space"])).assign(space=sp)
                                 for sp, g in metrics.groupby("space", sort=False)], ignore_index=True)
        dice, n_evaluated = lesion_dice(metrics), str(metrics["subject"].nunique())
        if store_space is None:  # the stores' grid: the metrics' other space
            store_space = next((str(s) for s in metrics["space"].unique() if s != "native"), None)
    raw_plans = read_json(files.plans)
    plans = Plans.of(raw_plans if isinstance(raw_plans, dict) else {})  # absent or partial: the cards say "unknown"
    folds = sorted((Path(p).parent.name.split("_", 1)[1] for p in files.models), key=lambda f: (len(f), f))
    cohort = files.cohort or {}
    excluded, warnings = cohort.get("excluded") or [], cohort.get("warnings") or []
    n_subjects = (len(cohort["subjects"]) + len(excluded) if cohort.get("subjects") is not None
                  else max(files.n_subjects, len(files.predicted)))
    commit, inp = git_commit(workflow_dir), config.get("input") or {}
    qc_flags = qc_flag_labels(read_qc_tsv(files.qc_flags))  # subject -> its flagged scores (None: no flags.tsv)
    now = now or datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    cards = {"subjects": n_subjects, "excluded": len(excluded), "predicted": len(files.predicted),
             "evaluated": n_evaluated,
             "modalities": ", ".join(inp.get("modalities") or plans.optional("modalities") or []) or "unknown",
             **({"synthesized": len(files.completed)} if files.completed else {}),  # subjects completed
             "model": plans.optional("dim") or (config.get("model") or {}).get("dim", "unknown"),
             "folds trained": f"{len(folds)} ({', '.join(folds)})" if folds else "0",
             "QC flagged": "not computed" if qc_flags is None else len(qc_flags),
             "mode": "evaluation" if evaluated else "predict-only", "date": now,
             "voxflow": package_versions()["voxflow"], "git commit": commit[:12]}
    secs = []
    if excluded:  # first: what the user must look at before trusting anything below
        secs.append(("excluded", f"Excluded subjects ({len(excluded)})", _guard(_excluded, excluded)))
    secs.append(("run", "Run summary", {"cards": [[k, str(v)] for k, v in cards.items()]}))
    if warnings:
        secs.append(("warnings", f"Input warnings ({len(warnings)})", _guard(_warnings, warnings)))
    if evaluated:
        secs += [("summary", "Cohort summary", _guard(summary_tables, summary)),
                 ("plots", "Metric distributions", _guard(_plots, metrics)),
                 ("subjects", "Per-subject metrics", _guard(_subjects, metrics, dice, qc_flags, files.completed))]
    else:
        secs.append(("volumes", "Predicted volumes (ml)", _guard(_volumes, files, config)))
    secs += [("qc-cohort", "Cohort QC", _guard(cohort_qc, files.qc_scores, files.qc_flags, files.qc_flagged,
                                                files.split)),
             ("qc-pred", "Prediction QC" + (" (worst first)" if evaluated else ""),
              _guard(_prediction_qc, files, dice, config, store_space or "store")),
             ("qc-pre", "Preprocessing QC", _guard(_preprocessing_qc, files)),
             ("curves", "Training curves", _guard(_curves, files.models))]
    if has_synthesis(files.synthesis, files.completed):  # a synthesis model or a completed subject (else: none)
        secs.append(("synthesis", SYNTHESIS_TITLE, _guard(synthesis_section, files.synthesis, files.synthesis_curve,
                                                          files.completed)))
    if has_choice(files.postprocessing):  # postprocessing.json or inference.json (no file: no section)
        secs.append(("choice", CHOICE_TITLE, _guard(model_choice, files.postprocessing, plans, config)))
    secs += [("runtime", "Run time per rule", _guard(_runtime, files.benchmarks)),
             ("provenance", "Provenance", _guard(_provenance, files, config, commit))]
    return {"title": "voxflow cohort report", "run_dir": str(Path(run_dir).resolve()), "date": now,
            "colors": {"reference": REF_COLOR, "prediction": PRED_COLOR},
            "sections": [{"id": sid, "title": title, "data": data} for sid, title, data in secs]}


def environment():
    """The Jinja2 environment of the package's templates (autoescaped; an undefined name is an error)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("voxflow.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def render(context: dict) -> str:
    """The report page (one self-contained HTML document) of a `collect` context."""
    return environment().get_template("report.html.j2").render(**context)


def build_report(files: ReportFiles, config: dict, html_path: str | Path, run_dir: str | Path,
                 workflow_dir: str | Path | None = None, store_space: str | None = None) -> dict:
    """Collect, render and write the report (atomically); returns the context. workflow_dir: where to ask
    `git rev-parse HEAD` (default: the current directory)."""
    context = collect(files, config, run_dir, workflow_dir, store_space)
    page = render(context)
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return context


def report(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """The cohort report. inp: metrics, summary (evaluation), cohort, subjects (file of the predicted ones),
    shown (shown_subjects' file), models, plans, postprocessing, split, qc_scores, qc_flags (qc/scores.tsv,
    qc/flags.tsv), synthesis, synthesis_curve (model/synthesis/synthesis.json, curve.csv); cfg: config (merged),
    output_dir, workflow_dir, store_space, paths (patterns of the per-subject files and the benchmarks;
    synthesis_qc: the completed subjects' QC figures), qc_steps, max_qc_subjects."""
    config = cfg.get("config") or {}
    files = report_files(inp, cfg)
    build_report(files, config, out["html"], cfg.get("output_dir") or config.get("output_dir", "results"),
                 workflow_dir=cfg.get("workflow_dir"), store_space=cfg.get("store_space"))
    return {"html": out["html"], "bytes": Path(out["html"]).stat().st_size}
