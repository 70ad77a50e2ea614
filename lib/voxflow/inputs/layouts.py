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

from voxflow.core.layout import OutputLayout
from voxflow.inputs.cohort import Cohort, check_subject_ids, demo_subject_ids, subject_id_ok
from voxflow.errors import ConfigError


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
    return _per_subject_folders(subjects, inp, OutputLayout(config["output_dir"]).demo_raw, ".nii.gz")


def folders(config: dict) -> Cohort:
    """<root>/<subject>/<modality><extension> (extension "" for a DICOM series folder per modality)."""
    inp = config["input"]
    root = _root_dir(inp)
    subjects = inp["subjects"] or sorted(e.name for e in os.scandir(root) if e.is_dir()
                                         and not e.name.startswith("."))
    if not subjects:
        raise ConfigError(f"config error at 'input.root': no subject folders in {root!r}")
    if not inp["subjects"]:  # input.subjects were checked by build_cohort
        check_subject_ids(subjects, "input.root", "subject folder name", f"in {root}")
    return _per_subject_folders(subjects, inp, root, inp["extension"])


def _per_subject_folders(subjects: list[str], inp: dict, root: str, ext: str) -> Cohort:
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
    must stay inside input.root (default the sheet's folder). An empty cell or a path outside the
    root is that subject's problem (a duplicated subject ID is a config error)."""
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
    cohort = Cohort(subjects=[])
    seen: dict[str, list[int]] = {}
    bad: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        s = cell(row, "subject")
        if not subject_id_ok(s):  # every row is checked, also those input.subjects leaves out
            bad.setdefault(s, lineno)
            continue
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
                cohort.problems.setdefault(
                    s, (path, f"{what} is missing for this subject (empty cell in line {lineno})"))
                resolved[key] = ""
                continue
            full = os.path.normpath(value if value[0] == os.sep else os.path.join(base, value))
            full_abs = full if full[0] == os.sep else os.path.normpath(cwd + os.sep + full)
            if not (full_abs.startswith(prefix) or full_abs == root_abs):
                # that subject's problem, not the cohort's; the file is never opened
                cohort.problems.setdefault(s, (value, f"path escapes the data root {root_abs} (input.root; "
                                                      f"default the sheet's folder; line {lineno} of {path})"))
                resolved[key] = ""
                continue
            resolved[key] = full
        cohort.subjects.append(s)
        cohort.labels[s] = (resolved.pop("label") or None) if label else None
        cohort.images[s] = resolved
    check_subject_ids(list(bad), "input.sheet", "subject ID", f"in {path}", lines=bad)
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


# --- BraTS ---------------------------------------------------------------------------------------------------

# config modality -> (suffix up to BraTS 2021: <subject>_<suffix>, BraTS 2023: <subject>-<suffix>)
BRATS_NAMES = {
    "t1": ("t1", "t1n"), "t1n": ("t1", "t1n"),
    "t1c": ("t1ce", "t1c"), "t1ce": ("t1ce", "t1c"), "t1gd": ("t1ce", "t1c"),
    "t2": ("t2", "t2w"), "t2w": ("t2", "t2w"),
    "flair": ("flair", "t2f"), "t2f": ("flair", "t2f"),
    "seg": ("seg", "seg"),
}


def brats(config: dict) -> Cohort:
    """<root>/<subject>/<subject>_{t1,t1ce,t2,flair,seg}.nii.gz (to BraTS 2021) or
    <subject>-{t1n,t1c,t2w,t2f,seg}.nii.gz (BraTS 2023), per subject whichever is there (see
    BRATS_NAMES: config modalities t1, t1c, t2, flair read both; other names are used as suffixes).
    One listing per subject folder picks the naming; a file absent in both is expected in the
    naming the subject's other files use, so its ingest names a concrete missing file."""
    inp = config["input"]
    root, ext = _root_dir(inp), inp["extension"]
    found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    subjects = _select(found, inp, root)
    if not inp["subjects"]:
        check_subject_ids(subjects, "input.root", "subject folder name", f"in {root}")
    keys = list(inp["modalities"]) + ([inp["label"]] if inp["label"] else [])
    cohort = Cohort(subjects=subjects)
    for s in subjects:
        present = set(_listdir(os.path.join(root, s)))
        cands = {k: (f"{s}_{BRATS_NAMES.get(k, (k, k))[0]}{ext}", f"{s}-{BRATS_NAMES.get(k, (k, k))[1]}{ext}")
                 for k in keys}
        new_style = sum(c[1] in present for c in cands.values()) > sum(c[0] in present for c in cands.values())
        paths = {k: os.path.join(root, s, next((n for n in c if n in present), c[new_style])) for k, c in cands.items()}
        cohort.images[s] = {m: paths[m] for m in inp["modalities"]}
        cohort.labels[s] = paths[inp["label"]] if inp["label"] else None
    return cohort


# --- Medical Segmentation Decathlon / nnU-Net raw --------------------------------------------------------------

def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def msd_dataset(root: str) -> dict:
    path = os.path.join(root, "dataset.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config error at 'input.root': the msd layout needs {path} (channel names and labels)"
                          ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config error at 'input.root': cannot read {path}: {exc}") from None


def msd_labels(ds: dict) -> list[int]:
    """Label values of dataset.json: MSD {"0": "background", ...} or nnU-Net v2 {"background": 0, ...}
    (region lists contribute their members)."""
    values = set()
    for k, v in (ds.get("labels") or {}).items():
        if isinstance(v, str) and k.strip().isdigit():
            values.add(int(k))
        else:
            values.update(int(x) for x in (v if isinstance(v, list) else [v]))
    return sorted(values)


def msd(config: dict) -> Cohort:
    """imagesTr/<case>_<channel:04d><ending>, labelsTr/<case><ending>, imagesTs/ (no labels), with
    dataset.json naming the channels (`modality` in MSD, `channel_names` in nnU-Net v2). Config
    modalities are those names, matched ignoring case and punctuation (flair = FLAIR, t1w = T1w);
    input.label_values unset = dataset.json's labels."""
    inp = config["input"]
    root = _root_dir(inp)
    ds = msd_dataset(root)
    channels = ds.get("channel_names") or ds.get("modality") or {}
    by_name = {_norm_name(str(n)): int(i) for i, n in channels.items()}
    if not by_name:
        raise ConfigError(f"config error at 'input.root': {root}/dataset.json names no channels "
                          "(neither 'modality' nor 'channel_names')")
    unknown = [m for m in inp["modalities"] if _norm_name(m) not in by_name]
    if unknown:
        raise ConfigError(f"config error at 'input.modalities': {unknown} are not channels of {root}/dataset.json; "
                          f"allowed values: {[str(n) for n in channels.values()]}")
    if inp["label"] and inp["label_values"] is None:
        inp["label_values"] = msd_labels(ds) or None
    ending = ds.get("file_ending", ".nii.gz")
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    cases: dict[str, str] = {}  # case -> image folder
    for folder in inp["msd_sets"]:
        d = os.path.join(root, folder)
        for name in sorted(_listdir(d)):
            if not name.endswith(ending):
                continue
            m = pattern.match(name)
            if not m:
                raise ConfigError(f"config error at 'input.root': {d}/{name} has no _NNNN channel suffix: the msd "
                                  "layout reads one file per channel (convert 4D MSD files with "
                                  "nnUNetv2_convert_MSD_dataset)")
            if cases.setdefault(m.group(1), folder) != folder:
                raise ConfigError(f"config error at 'input.root': case {m.group(1)} is in both imagesTr and imagesTs")
    where = " and ".join(os.path.join(root, f) for f in inp["msd_sets"])
    subjects = _select(sorted(cases), inp, where)
    if not inp["subjects"]:
        check_subject_ids(subjects, "input.root", "subject ID", f"from the file names in {where}")
    cohort = Cohort(subjects=subjects)
    for s in subjects:
        folder = os.path.join(root, cases[s])
        cohort.images[s] = {m: os.path.join(folder, f"{s}_{by_name[_norm_name(m)]:04d}{ending}")
                            for m in inp["modalities"]}
        if not inp["label"]:
            cohort.labels[s] = None
        elif cases[s] == "imagesTr":
            cohort.labels[s] = os.path.join(root, "labelsTr", f"{s}{ending}")
        else:
            cohort.labels[s] = None
            cohort.problems[s] = (folder, f"imagesTs case {s} has no label; run imagesTs with input.label: null")
    return cohort


# --- BIDS ------------------------------------------------------------------------------------------------------

def _bids_sessions(root: str) -> list[tuple[str, str]]:
    """(subject ID, relative folder) per sub-X or sub-X/ses-Y that holds an anat folder."""
    out = []
    for sub in sorted(n for n in _listdir(root) if n.startswith("sub-")):
        entries = _listdir(os.path.join(root, sub))
        sessions = sorted(n for n in entries if n.startswith("ses-"))
        if sessions:
            out += [(f"{sub}_{ses}", os.path.join(sub, ses)) for ses in sessions]
        elif "anat" in entries:
            out.append((sub, sub))
    return out


def _bids_suffixes(folder: str, ext: str) -> dict[str, list[str]]:
    """suffix (lower case) -> file names of folder/anat ending in _<suffix><ext>."""
    found: dict[str, list[str]] = {}
    for name in sorted(_listdir(os.path.join(folder, "anat"))):
        if name.endswith(ext) and "_" in name:
            found.setdefault(name[: -len(ext)].rsplit("_", 1)[1].lower(), []).append(name)
    return found


def bids(config: dict) -> Cohort:
    """BIDS raw: sub-X/[ses-Y/]anat/*_<suffix><extension>, config modalities = suffixes (T1w, T2w,
    FLAIR; case ignored); subject ID sub-X or sub-X_ses-Y. Labels: the same relative folder under
    input.derivatives, file *_<input.label><extension>. A missing or ambiguous file (two runs) is
    that subject's problem."""
    inp = config["input"]
    root, ext = _root_dir(inp), inp["extension"]
    sessions = dict(_bids_sessions(root))
    subjects = _select(list(sessions), inp, f"{root} (sub-*/[ses-*/]anat)")
    if not inp["subjects"]:
        check_subject_ids(subjects, "input.root", "subject ID", f"from the sub-*/ses-* folder names in {root}")
    deriv = os.path.join(root, inp["derivatives"]) if inp["label"] else None
    if deriv and not os.path.isdir(deriv):
        raise ConfigError(f"config error at 'input.derivatives': {deriv!r} is not a directory")
    cohort = Cohort(subjects=subjects)
    for s in subjects:
        rel = sessions[s]
        wanted = [(m, os.path.join(root, rel), m) for m in inp["modalities"]]
        if deriv:
            wanted.append(("label", os.path.join(deriv, rel), inp["label"]))
        listing: dict[str, dict[str, list[str]]] = {}
        files: dict[str, str] = {}
        for key, folder, suffix in wanted:
            names = listing.setdefault(folder, _bids_suffixes(folder, ext)).get(suffix.lower(), [])
            anat = os.path.join(folder, "anat")
            files[key] = os.path.join(anat, names[0]) if len(names) == 1 else ""
            if len(names) != 1 and s not in cohort.problems:
                what = "label" if key == "label" else f"modality '{key}'"
                problem = (f"no *_{suffix}{ext} file for {what}" if not names else
                           f"{len(names)} *_{suffix}{ext} files for {what} ({', '.join(names[:3])}): keep one")
                cohort.problems[s] = (anat, problem)
        cohort.labels[s] = (files.pop("label") or None) if deriv else None
        cohort.images[s] = files
    return cohort
