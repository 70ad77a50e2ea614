"""The cohort's quality table and its outlier flags (rule qc_flags): qc/scores.tsv and qc/flags.tsv.

Every included subject's qc/<subject>/scores.json is read in one dask task per subject (thousands of small files:
the reads overlap), the long table subject x modality x score is written, and each (modality, score) is compared
across the cohort with robust z-scores and hard sanity bounds (voxflow.qc.scores.flag_outliers). With fewer than
MIN_SUBJECTS_FOR_Z subjects only the bounds flag: the log and the report say so.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from voxflow.qc.scores import MIN_SUBJECTS_FOR_Z, SCORES, flag_outliers

log = logging.getLogger("voxflow.qc")
SCORE_COLUMNS = ["subject", "modality", "score", "value"]
FLAG_COLUMNS = ["subject", "modality", "score", "value", "median", "z", "reason"]


def read_scores(path: str) -> list[dict]:
    data = json.loads(Path(path).read_text())
    return [{"subject": data["subject"], "modality": mod, "score": name, "value": value}
            for mod, values in data["scores"].items() for name, value in values.items()]


def score_table(files: Mapping[str, str], scheduler: str = "threads") -> pd.DataFrame:
    """subject -> its scores.json, read with dask (one task per file), as one long table."""
    import dask

    from voxflow.core.parallel import compute

    rows = compute([dask.delayed(read_scores)(p) for p in files.values()], scheduler) if files else []
    table = pd.DataFrame([r for part in rows for r in part], columns=SCORE_COLUMNS)
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    return table.sort_values(["subject", "modality", "score"], kind="stable").reset_index(drop=True)


def cohort_flags(table: pd.DataFrame, flag_z: float = 3.5) -> pd.DataFrame:
    """Flags per (modality, score) over the subjects that have it, worst first (voxflow.qc.scores.flag_outliers:
    robust z past `flag_z` in the score's bad direction, or outside its sanity bounds)."""
    keyed = {f"{m}\t{s}": (m, s) for m, s in table[["modality", "score"]].drop_duplicates().itertuples(index=False)}
    scores: dict[str, dict[str, float]] = {}
    for row in table.itertuples(index=False):
        scores.setdefault(row.subject, {})[f"{row.modality}\t{row.score}"] = row.value
    direction = {k: SCORES.get(s, ("both",))[0] for k, (_, s) in keyed.items()}
    bounds = {k: SCORES[s][1] for k, (_, s) in keyed.items() if s in SCORES}
    spread = {k: SCORES[s][2] for k, (_, s) in keyed.items() if s in SCORES}
    flags = flag_outliers(scores, flag_z=flag_z, bounds=bounds, direction=direction, min_spread=spread)
    rows = [{"subject": f["subject"], "modality": keyed[f["score"]][0], "score": keyed[f["score"]][1],
             "value": f["value"], "median": f["median"], "z": f["z"], "reason": f["reason"]} for f in flags]
    return pd.DataFrame(rows, columns=FLAG_COLUMNS)


def flag_summary(flags: pd.DataFrame) -> dict[str, list[str]]:
    """subject -> "<modality> <score>=<value> (median <median>)" for each of its flags, worst first."""
    out: dict[str, list[str]] = {}
    for f in flags.itertuples(index=False):
        out.setdefault(f.subject, []).append(f"{f.modality} {f.score}={f.value:.4g} (median {f.median:.4g})")
    return out


def read_flags(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=True)


def qc_flags(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """Rule qc_flags: the included subjects' scores (status/cohort.json) -> qc/scores.tsv and qc/flags.tsv."""
    from voxflow.core.atomic import atomic_path

    subjects: Sequence[str] = json.loads(Path(inp["cohort"]).read_text())["subjects"]
    files = {s: cfg["scores"].replace("{subject}", s) for s in subjects}
    table = score_table(files, cfg.get("scheduler", "threads"))
    flags = cohort_flags(table, float(cfg["flag_z"]))
    n = table["subject"].nunique()
    if n < MIN_SUBJECTS_FOR_Z:
        print(f"voxflow QC: {n} subjects scored (< {MIN_SUBJECTS_FOR_Z}): only the hard sanity bounds flag, no "
              "robust z-scores", file=sys.stderr)
    for key, frame in (("scores", table), ("flags", flags)):
        with atomic_path(out[key]) as tmp:
            frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    for f in flags.itertuples(index=False):
        print(f"voxflow QC FLAG subject={f.subject} {f.modality} {f.score}={f.value:.4g} (cohort median "
              f"{f.median:.4g}): {f.reason}", file=sys.stderr)
    return {"subjects": n, "flags": len(flags), "flagged": sorted(set(flags["subject"]))}
