"""Subjects that lack a modality, found once at parse time (input.missing, input.unusable, demo.missing).

A modality is missing when the layout found no file for it (an empty sheet cell, no file in a BIDS folder), when
its file does not exist, or when input.unusable lists it (the file exists but must not be used, e.g. ruined by
motion). With `input.missing: reject` (the default) such a subject is excluded with a one-line reason, as before.
With `synthesize` it is kept: its chain runs with the reference image standing in for the missing modality (so
every step's files exist), to_zarr writes zeros in that channel and names it in the store's attrs, and the rule
complete_subject fills it with the synthesis model's output (voxflow.synth) in a copy of the store before
inference. Such subjects never train a model: they join the test subjects (voxflow.core.split.make_split).
"""

from __future__ import annotations

import os

from voxflow.inputs.cohort import Cohort

NO_FILE = "no file"
UNUSABLE = "unusable (input.unusable)"
DELETED = "deleted (demo.missing)"


def _about_missing(text: str, mods: list[str]) -> bool:
    """The layout's problem only says that one of these modalities has no file (an empty cell, no BIDS file)."""
    return any(f"'{m}'" in text for m in mods) or text.startswith("no *_")


def mark_missing(config: dict, cohort: Cohort) -> Cohort:
    """Find each subject's missing and unusable modalities. synthesize: record them in `cohort.missing` (their
    paths set to "") and drop the layout's problem when that is all it says; reject: an unusable modality is the
    subject's problem. The reference modality cannot be synthesized (it defines the subject's grid): a subject
    missing it keeps its problem, as does one with no modality left."""
    inp = config["input"]
    synthesize = inp["missing"] == "synthesize"
    unusable = inp.get("unusable") or {}
    deleted = config["demo"].get("missing") or {} if inp["layout"] == "demo" else {}
    if not (synthesize or unusable or deleted):
        return cohort
    ref, mods = inp["reference"], list(inp["modalities"])
    demo = inp["layout"] == "demo"
    for s in cohort.subjects:
        images = cohort.images[s]
        why: dict[str, str] = {}
        for m in mods:
            if m in (deleted.get(s) or []):
                why[m] = DELETED
            elif m in (unusable.get(s) or []):
                why[m] = UNUSABLE
            elif synthesize and (not images.get(m) or (not demo and not os.path.exists(images[m]))):
                why[m] = NO_FILE
        if not why:
            continue
        problem = cohort.problems.get(s)
        for m, reason in why.items():
            if reason != NO_FILE and not synthesize and not problem:
                problem = (images.get(m) or "-", f"modality '{m}' is {reason}; input.missing: synthesize would "
                                                 "synthesize it")
                cohort.problems[s] = problem
            images[m] = ""
        if not synthesize:
            continue
        if ref in why:
            if not problem or _about_missing(problem[1], [ref]):
                cohort.problems[s] = (problem[0] if problem else "-", f"reference modality '{ref}' is missing "
                                      f"({why[ref]}): it cannot be synthesized (it defines the subject's grid; "
                                      "input.reference may name another modality)")
            continue
        if problem and not _about_missing(problem[1], list(why)):
            continue  # another problem: the subject fails with it
        cohort.problems.pop(s, None)
        cohort.missing[s] = why
    return cohort


def missing_summary(cohort: Cohort) -> str:
    """One line for the log: how many subjects get a modality synthesized, and which."""
    if not cohort.missing:
        return ""
    shown = ", ".join(f"{s} ({', '.join(m)})" for s, m in list(cohort.missing.items())[:5])
    more = ", ..." if len(cohort.missing) > 5 else ""
    return f"input.missing: synthesize: {len(cohort.missing)} subjects get a modality synthesized: {shown}{more}"
