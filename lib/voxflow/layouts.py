"""Input layouts: where each subject's scans and label are, for every `input.layout`.

One function per layout returns a `Cohort`. They run once at DAG-parse time, so they read
directory listings (one per subject folder at most) and never open or stat the images: a
10 000-subject cohort must parse in about a second. A subject whose files cannot be resolved
(an empty sheet cell, no T1w in its BIDS folder, two candidate files) is not a config error:
it gets a `Cohort.problems` entry, and its ingest job fails with that one line while the rest
of the cohort runs.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter

from voxflow.config import Cohort, ConfigError, demo_subject_ids


def _select(found: list[str], inp: dict, where: str) -> list[str]:
    """input.subjects, when given, picks (and orders) subjects among those the layout found."""
    if not inp["subjects"]:
        if not found:
            raise ConfigError(f"config error at 'input.root': no subjects found in {where}")
        return found
    unknown = [s for s in inp["subjects"] if s not in set(found)]
    if unknown:
        raise ConfigError(f"config error at 'input.subjects': {unknown[:10]} not found in {where}")
    return list(inp["subjects"])


def _root_dir(inp: dict) -> str:
    root = inp["root"]
    if not os.path.isdir(root):
        raise ConfigError(f"config error at 'input.root': {root!r} is not a directory")
    return root


def _listdir(path: str) -> list[str]:
    try:
        return [n for n in os.listdir(path) if not n.startswith(".")]
    except OSError:
        return []


# --- demo and folders (unchanged behaviour) ----------------------------------------------------------------

def demo(config: dict) -> Cohort:
    """The generated cohort: files appear under output_dir/demo/raw when the demo rule runs."""
    inp = config["input"]
    subjects = inp["subjects"] or demo_subject_ids(config["demo"]["n_subjects"])
    return _per_subject_folders(subjects, inp, os.path.join(config["output_dir"], "demo", "raw"), ".nii.gz")


def folders(config: dict) -> Cohort:
    """<root>/<subject>/<modality><extension> (extension "" for a DICOM series folder per modality)."""
    inp = config["input"]
    root = _root_dir(inp)
    subjects = inp["subjects"] or sorted(e.name for e in os.scandir(root) if e.is_dir()
                                         and not e.name.startswith("."))
    if not subjects:
        raise ConfigError(f"config error at 'input.root': no subject folders in {root!r}")
    return _per_subject_folders(subjects, inp, root, inp["extension"])


def _per_subject_folders(subjects: list[str], inp: dict, root: str, ext: str) -> Cohort:
    dup = sorted(s for s, n in Counter(subjects).items() if n > 1)
    if dup:
        raise ConfigError(f"duplicated subject IDs: {dup}")
    names = inp.get("file_names") or {}
    label_name = inp.get("label_file") or f"{inp['label']}{ext}"
    cohort = Cohort(subjects=list(subjects))
    for s in subjects:
        cohort.images[s] = {m: os.path.join(root, s, names.get(m, f"{m}{ext}")) for m in inp["modalities"]}
        cohort.labels[s] = os.path.join(root, s, label_name) if inp["label"] else None
    return cohort


# --- sheet ---------------------------------------------------------------------------------------------------

def _delimiter(path: str, first_line: str) -> str:
    low = path.lower()
    if low.endswith((".tsv", ".tab")):
        return "\t"
    if low.endswith(".csv"):
        return ","
    return "\t" if first_line.count("\t") > first_line.count(",") else ","




def sheet(config: dict) -> Cohort:
    """A CSV/TSV sample sheet: column `subject`, one column per modality, optional label column
    (named like input.label). Paths are relative to the sheet's folder or absolute; every path
    must stay inside input.root (default the sheet's folder). An empty cell is a missing file."""
    inp = config["input"]
    path = inp["sheet"]
    if not os.path.isfile(path):
        raise ConfigError(f"config error at 'input.sheet': {path!r} is not a file")
    base = os.path.dirname(path)
    root = inp["root"] if inp["root"] else (base or ".")
    with open(path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    first = text.split("\n", 1)[0]
    rows = list(csv.reader(text.splitlines(), delimiter=_delimiter(path, first)))
    if not rows:
        raise ConfigError(f"config error at 'input.sheet': {path} is empty")
    header = [h.strip() for h in rows[0]]
    col = {h: i for i, h in enumerate(header)}
    if "subject" not in col:
        raise ConfigError(f"config error at 'input.sheet': {path} has no 'subject' column (columns: {header})")
    missing_cols = [m for m in inp["modalities"] if m not in col]
    if missing_cols:
        raise ConfigError(f"config error at 'input.modalities': {missing_cols} are not columns of {path} "
                          f"(columns: {header})")
    label = inp["label"]
    if label and label not in col:
        raise ConfigError(f"config error at 'input.label': no label column {label!r} in {path} (columns: {header}); "
                          "set input.label: null for a cohort without labels")

    def cell(row: list[str], name: str) -> str:
        i = col[name]
        return row[i].strip() if i < len(row) else ""

    # containment is lexical (no filesystem access, symlinks not followed), on absolute paths
    cwd = os.getcwd()
    root_abs = os.path.normpath(os.path.join(cwd, root))
    prefix = root_abs.rstrip(os.sep) + os.sep
    cohort, seen = Cohort(subjects=[]), {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        s = cell(row, "subject")
        if not s or "/" in s or s in (".", ".."):
            raise ConfigError(f"config error at 'input.sheet': {path} line {lineno}: invalid subject ID {s!r}")
        seen.setdefault(s, []).append(lineno)
        if len(seen[s]) > 1:
            continue
        files = {m: cell(row, m) for m in inp["modalities"]}
        if label:
            files["label"] = cell(row, label)
        resolved = {}
        for key, value in files.items():
            if not value:
                what = "label" if key == "label" else f"modality '{key}'"
                cohort.problems.setdefault(s, (path, f"{what} is missing for this subject (empty cell in line {lineno})"))
                resolved[key] = ""
                continue
            full = os.path.normpath(value if value[0] == os.sep else os.path.join(base, value))
            full_abs = full if full[0] == os.sep else os.path.normpath(cwd + os.sep + full)
            if not (full_abs.startswith(prefix) or full_abs == root_abs):
                raise ConfigError(f"config error at 'input.sheet': subject={s} file={value}: path escapes the data "
                                  f"root {root_abs} (input.root; default the sheet's folder)")
            resolved[key] = full
        cohort.subjects.append(s)
        cohort.labels[s] = (resolved.pop("label") or None) if label else None
        cohort.images[s] = resolved
    dup = {s: lines for s, lines in seen.items() if len(lines) > 1}
    if dup:
        listing = ", ".join(f"{s} (lines {', '.join(map(str, lines))})" for s, lines in list(dup.items())[:10])
        raise ConfigError(f"config error at 'input.sheet': duplicated subject IDs in {path}: {listing}")
    return _restrict(cohort, _select(cohort.subjects, inp, path))


def _restrict(cohort: Cohort, subjects: list[str]) -> Cohort:
    if subjects == cohort.subjects:
        return cohort
    keep = set(subjects)
    return Cohort(subjects=subjects, images={s: cohort.images[s] for s in subjects},
                  labels={s: cohort.labels[s] for s in subjects},
                  problems={s: p for s, p in cohort.problems.items() if s in keep})
