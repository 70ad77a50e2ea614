"""The cohort's subject table and the rule every subject ID follows (shared by the config and the layouts)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from voxflow.core.layout import QC_FLAGS_FILE, QC_SCORES_FILE
from voxflow.errors import ConfigError


@dataclass
class Cohort:
    """Subjects and the expected path of each of their input files (present or not).

    `problems` holds, per subject, a (file, problem) that the layout found at parse time (an empty
    sheet cell, no T1w in a BIDS folder): that subject's ingest job fails with it, the rest run.
    """

    subjects: list[str]
    images: dict[str, dict[str, str]] = field(default_factory=dict)   # subject -> modality -> path ("" = none)
    labels: dict[str, str | None] = field(default_factory=dict)       # subject -> label path
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # subject -> (file, problem)
    # input.missing: synthesize: subject -> modality -> why it is missing (voxflow.inputs.missing); its path is ""
    missing: dict[str, dict[str, str]] = field(default_factory=dict)


def demo_subject_ids(n: int) -> list[str]:
    return [f"demo{i:03d}" for i in range(n)]


# --- subject IDs ---------------------------------------------------------------------------------------------------

# A subject ID becomes folder, file and job names (preprocess/<id>/, predictions/<id>/<id>_seg.nii.gz, logs,
# `--subject <id>` on a command line) and a Snakemake wildcard value. Allowed: letters of any script (with
# their combining accents: a folder name written on macOS is decomposed), digits and _ . + -; not starting
# with . (hidden, `..`) or - (an option); at most 200 bytes in UTF-8 (a file name holds 255, and the
# longest name built from an ID adds ~30). So no / or \ (no ID leaves the input root), no { } (Snakemake
# wildcards), no quotes, whitespace, control characters or shell/glob characters.
SUBJECT_ID_RULE = "letters, digits and _ . + - , not starting with . or -, at most 200 bytes"
MAX_SUBJECT_ID_BYTES = 200
_ASCII_ID = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+-]*")


# Names a subject cannot have: the cohort QC tables sit next to the subjects' QC folders (qc/<subject>/).
RESERVED_IDS = (QC_SCORES_FILE, QC_FLAGS_FILE)
# Snakemake's pattern for a subject in qc/{subject}: every ID but the reserved ones.
QC_SUBJECT_PATTERN = r"(?!(?:scores|flags)\.tsv$)[^/]+"


def subject_id_ok(s) -> bool:
    """Whether `s` can be a subject ID (see SUBJECT_ID_RULE)."""
    if not isinstance(s, str) or not s:
        return False
    if _ASCII_ID.fullmatch(s):  # the common case, without a per-character loop
        return len(s) <= MAX_SUBJECT_ID_BYTES
    if s[0] in ".-" or not all(c.isalnum() or c in "_.+-" or unicodedata.category(c)[0] == "M" for c in s):
        return False
    return len(s.encode("utf-8")) <= MAX_SUBJECT_ID_BYTES


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _listing(items, limit: int = 10, show=repr) -> str:
    """The first `limit` items, shown one line each (repr escapes newlines), then how many more."""
    items = list(items)
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(show(x) for x in items[:limit]) + more


def _show_id(s: str, lines: dict | None) -> str:
    text = repr(s) if len(s) <= 60 else repr(s[:50]) + "..."
    return f"{text} (line {lines[s]})" if lines and s in lines else text


def check_subject_ids(ids, key: str, noun: str = "subject ID", where: str = "", lines: dict | None = None) -> None:
    """Raise a one-line ConfigError at `key` listing the IDs that cannot be subject IDs (subject_id_ok).

    The single check of every ID source: input.subjects (build_cohort), and each layout's discovered
    IDs (folder names, sheet cells with their `lines`, IDs derived from file or folder names): `noun`
    and `where` say what they are ("subject folder name", "in /data")."""
    ids = list(ids)
    reserved = [s for s in dict.fromkeys(ids) if s in RESERVED_IDS]
    if reserved:
        raise ConfigError(f"config error at '{key}': {_listing(reserved)} cannot be a subject ID: the cohort QC "
                          f"tables qc/scores.tsv and qc/flags.tsv have that name")
    bad = list(dict.fromkeys(s for s in ids if not subject_id_ok(s)))
    if not bad:
        return
    what = _plural(len(bad), noun) + (f" {where}" if where else "")
    raise ConfigError(f"config error at '{key}': {what} cannot be used as file and job names: "
                      f"{_listing(bad, show=lambda s: _show_id(s, lines))} "
                      f"(allowed: {SUBJECT_ID_RULE})")
