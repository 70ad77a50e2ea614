"""Config validation and the cohort's subject table, as used by the Snakefile.

Everything the DAG needs about subjects is computed once at parse time (one directory scan),
never per job, so that building the DAG stays fast for thousands of subjects.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate against the schema with Snakemake (which fills defaults); explain errors in one line each."""
    import jsonschema
    from snakemake.utils import validate

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.path)):
        key = ".".join(str(p) for p in err.path) or "<top level>"
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            problems.append(f"config error at '{key}': {err.message}; allowed keys: {allowed}")
        elif err.validator == "enum":
            problems.append(f"config error at '{key}': {err.instance!r} is not allowed; allowed values: {err.validator_value}")
        else:
            problems.append(f"config error at '{key}': {err.message}")
    if problems:
        raise ConfigError("\n".join(problems))
    given = dict(config.get("input") or {})
    validate(config, str(schema_path))  # fills defaults
    inp = config["input"]
    if inp["layout"] == "msd" and given.get("label_values") is None:
        inp["label_values"] = None  # taken from dataset.json's labels by voxflow.layouts.msd
    if inp["reference"] is None:
        inp["reference"] = inp["modalities"][0]
    if inp["reference"] not in inp["modalities"]:
        raise ConfigError(f"config error at 'input.reference': {inp['reference']!r} is not one of input.modalities "
                          f"{inp['modalities']}")
    if inp["layout"] in ("folders", "brats", "msd", "bids") and not inp["root"]:
        raise ConfigError(f"config error at 'input.root': the {inp['layout']} layout needs input.root")
    if inp["layout"] == "sheet" and not inp["sheet"]:
        raise ConfigError("config error at 'input.sheet': the sheet layout needs input.sheet (a CSV/TSV file)")
    if inp["layout"] == "bids" and inp["label"] and not inp["derivatives"]:
        raise ConfigError("config error at 'input.derivatives': the bids layout reads labels from a derivatives "
                          f"folder (e.g. derivatives/manual); set it, or input.label: null (now {inp['label']!r})")
    if inp["layout"] == "demo":
        bad = set(inp["modalities"]) - {"t1", "t1c", "t2", "flair"}
        if bad or not 2 <= len(inp["modalities"]) <= 4:
            raise ConfigError("config error at 'input.modalities': the demo cohort has 2-4 of t1, t1c, t2, flair; "
                              f"got {inp['modalities']}")
    return config


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
    bad = list(dict.fromkeys(s for s in ids if not subject_id_ok(s)))
    if not bad:
        return
    what = _plural(len(bad), noun) + (f" {where}" if where else "")
    raise ConfigError(f"config error at '{key}': {what} cannot be used as file and job names: "
                      f"{_listing(bad, show=lambda s: _show_id(s, lines))} "
                      f"(allowed: {SUBJECT_ID_RULE})")


def build_cohort(config: dict) -> Cohort:
    """The cohort of `input.layout` (see voxflow.layouts), once per DAG build. input.subjects are checked
    here; the IDs a layout finds (folder names, sheet cells, derived IDs) by the layout."""
    from voxflow import layouts

    subjects = config["input"]["subjects"]
    if subjects:
        check_subject_ids(subjects, "input.subjects")
        dup = sorted(s for s, n in Counter(subjects).items() if n > 1)
        if dup:
            raise ConfigError(f"config error at 'input.subjects': duplicated subject IDs: {dup}")
    return getattr(layouts, config["input"]["layout"])(config)


def shorten_subject_lists(obj, limit: int = 50, keys: tuple[str, ...] = ("subjects", "test_subjects")):
    """A copy of a config whose subject lists (under `keys`) longer than `limit` are one-line summaries:
    for display, and for command lines (10 000 subject IDs overflow Linux's 128 KiB argument limit).
    Other lists (label values, regions) are values the report computes with, and stay."""
    if isinstance(obj, dict):
        return {k: (f"[{len(v)} subjects: {', '.join(map(str, v[:3]))}, ...]"
                    if k in keys and isinstance(v, (list, tuple)) and len(v) > limit
                    else shorten_subject_lists(v, limit, keys)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [shorten_subject_lists(v, limit, keys) for v in obj]
    return obj
