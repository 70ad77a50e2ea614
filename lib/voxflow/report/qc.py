"""The report's cohort-QC section: the per-subject quality scores (qc/scores.tsv) as small strip plots, the
outlier flags (qc/flags.tsv, worst first) with the flagged subjects' preprocessing QC images, and the flagged
subjects that split.json kept out of training (qc.exclude_flagged). Plain data for report.html.j2; the files
read are declared inputs of the `report` rule (the flagged subjects' QC images through the checkpoint
report_subjects, which lists them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from voxflow.core.layout import OutputLayout
from voxflow.qc import cohort as qc_cohort
from voxflow.qc.scores import MIN_SUBJECTS_FOR_Z, SCORES
from voxflow.report.data import qc_flag_table, qc_held_out_table, qc_score_table, read_json, read_qc_tsv
from voxflow.report.plots import png_uri, qc_score_figures

SCORE_COLUMNS = set(qc_cohort.SCORE_COLUMNS)  # the columns the rule qc_flags writes
FLAG_COLUMNS = set(qc_cohort.FLAG_COLUMNS)


def flagged_order(flags_tsv, cap: int) -> list[str]:
    """The flagged subjects of flags.tsv, worst first (the file's order), at most `cap`."""
    flags = read_qc_tsv(flags_tsv)
    if flags is None or "subject" not in flags:
        return []
    return list(dict.fromkeys(flags["subject"].astype(str)))[:cap]


def _check(df: pd.DataFrame, path, columns: set[str]) -> pd.DataFrame:
    missing = columns - set(df.columns)
    if missing:
        raise ValueError(f"{Path(path).name} lacks the column(s) {', '.join(sorted(missing))}")
    return df


def held_out(split_json) -> list[dict]:
    """split.json's qc_excluded ([] when absent: no qc.exclude_flagged, or an older split)."""
    entries = (read_json(split_json) or {}).get("qc_excluded") or []
    return [e for e in entries if isinstance(e, dict)]


def cohort_qc(scores_tsv: str | None, flags_tsv: str | None, flagged: Sequence[tuple[str, dict[str, str]]],
              split_json: str | None) -> dict:
    """The section's data. `flagged`: (subject, {step: QC png}) of the flagged subjects the checkpoint listed,
    worst first; their images are shown below the flag table."""
    kept = held_out(split_json)
    base = {"computed": False, "scores_file": str(scores_tsv or OutputLayout("").qc_scores),
            "held_out": qc_held_out_table(kept) if kept else None}
    scores = read_qc_tsv(scores_tsv)
    if scores is None:
        return base
    scores = _check(scores, scores_tsv, SCORE_COLUMNS)
    flags = read_qc_tsv(flags_tsv)
    flags = _check(flags, flags_tsv, FLAG_COLUMNS) if flags is not None else None
    n_subjects = int(scores["subject"].nunique())  # as voxflow.qc.cohort counts them to decide on z-scores
    marks = set() if flags is None else {(str(s), str(m), str(n)) for s, m, n in
                                         flags[["subject", "modality", "score"]].itertuples(index=False)}
    names = list(dict.fromkeys(scores["score"].astype(str)))
    by_subject = {} if flags is None else {str(s): g for s, g in flags.groupby("subject", sort=False)}
    steps = list(dict.fromkeys(st for _, pngs in flagged for st, p in pngs.items() if Path(p).is_file()))
    rows = [{"subject": s, "flags": ", ".join(f"{r.modality} {r.score}" for r in by_subject[s].itertuples()),
             "cells": [{"uri": png_uri(pngs[st], 420) if st in pngs and Path(pngs[st]).is_file() else None,
                        "alt": f"{s} {st} (flagged)"} for st in steps]}
            for s, pngs in flagged if s in by_subject]
    n_flagged = len(by_subject)
    return base | {
        "computed": True, "n_subjects": n_subjects, "min_subjects": MIN_SUBJECTS_FOR_Z,
        "small": n_subjects < MIN_SUBJECTS_FOR_Z, "figures": qc_score_figures(scores, marks),
        "flags_file": str(flags_tsv or OutputLayout("").qc_flags), "has_flags": flags is not None,
        "table": qc_flag_table(flags) if flags is not None and len(flags) else None,
        "n_flags": 0 if flags is None else len(flags), "n_flagged": n_flagged,
        "steps": steps if rows else [], "rows": rows if steps else [],
        "scores": qc_score_table([n for n in SCORES if n in names] + [n for n in names if n not in SCORES])}
