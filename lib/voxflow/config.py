"""Config validation and the cohort's subject table, as used by the Snakefile.

Everything the DAG needs about subjects is computed once at parse time (one directory scan),
never per job, so that building the DAG stays fast for thousands of subjects.
"""

from __future__ import annotations

import os
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
    validate(config, str(schema_path))  # fills defaults
    inp = config["input"]
    if inp["reference"] is None:
        inp["reference"] = inp["modalities"][0]
    if inp["reference"] not in inp["modalities"]:
        raise ConfigError(f"config error at 'input.reference': {inp['reference']!r} is not one of input.modalities "
                          f"{inp['modalities']}")
    if inp["layout"] == "folders" and not inp["root"]:
        raise ConfigError("config error at 'input.root': the folders layout needs input.root")
    if inp["layout"] == "demo":
        bad = set(inp["modalities"]) - {"t1", "t1c", "t2", "flair"}
        if bad or not 2 <= len(inp["modalities"]) <= 4:
            raise ConfigError("config error at 'input.modalities': the demo cohort has 2-4 of t1, t1c, t2, flair; "
                              f"got {inp['modalities']}")
    return config


@dataclass
class Cohort:
    """Subjects and the expected path of each of their input files (present or not)."""

    subjects: list[str]
    images: dict[str, dict[str, str]] = field(default_factory=dict)   # subject -> modality -> path
    labels: dict[str, str | None] = field(default_factory=dict)       # subject -> label path


def demo_subject_ids(n: int) -> list[str]:
    return [f"demo{i:03d}" for i in range(n)]


def build_cohort(config: dict) -> Cohort:
    inp, out = config["input"], config["output_dir"]
    mods, ext = inp["modalities"], inp["extension"]
    if inp["layout"] == "demo":
        subjects = inp["subjects"] or demo_subject_ids(config["demo"]["n_subjects"])
        root = os.path.join(out, "demo", "raw")
        ext = ".nii.gz"
    else:
        root = inp["root"]
        if not os.path.isdir(root):
            raise ConfigError(f"config error at 'input.root': {root!r} is not a directory")
        subjects = inp["subjects"] or sorted(e.name for e in os.scandir(root) if e.is_dir()
                                             and not e.name.startswith("."))
        if not subjects:
            raise ConfigError(f"config error at 'input.root': no subject folders in {root!r}")
    dup = sorted({s for s in subjects if subjects.count(s) > 1})
    if dup:
        raise ConfigError(f"duplicated subject IDs: {dup}")
    cohort = Cohort(subjects=list(subjects))
    for s in subjects:
        names = inp.get("file_names") or {}
        cohort.images[s] = {m: os.path.join(root, s, names.get(m, f"{m}{ext}")) for m in mods}
        label_name = inp.get("label_file") or f"{inp['label']}{ext}"
        cohort.labels[s] = os.path.join(root, s, label_name) if inp["label"] else None
    return cohort
