"""Config validation (the schema, its defaults) and the cohort's subject table, as used by the Snakefile.

Everything the DAG needs about subjects is computed once at parse time (one directory scan),
never per job, so that building the DAG stays fast for thousands of subjects.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from voxflow.inputs import layouts
from voxflow.inputs.cohort import Cohort, check_subject_ids
from voxflow.errors import ConfigError
from voxflow.settings.checks import input_problems


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
            problems.append(f"config error at '{key}': {err.instance!r} is not allowed; "
                            f"allowed values: {err.validator_value}")
        else:
            problems.append(f"config error at '{key}': {err.message}")
    if problems:
        raise ConfigError("\n".join(problems))
    given = dict(config.get("input") or {})
    validate(config, str(schema_path))  # fills defaults
    inp = config["input"]
    if inp["layout"] == "msd" and given.get("label_values") is None:
        inp["label_values"] = None  # taken from dataset.json's labels by voxflow.inputs.layouts.msd
    if inp["reference"] is None:
        inp["reference"] = inp["modalities"][0]
    problems = input_problems(config)  # what build_cohort needs to be right before it reads the input
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def build_cohort(config: dict) -> Cohort:
    """The cohort of `input.layout` (see voxflow.inputs.layouts), once per DAG build. input.subjects are checked
    here; the IDs a layout finds (folder names, sheet cells, derived IDs) by the layout."""
    subjects = config["input"]["subjects"]
    if subjects:
        check_subject_ids(subjects, "input.subjects")
        dup = sorted(s for s, n in Counter(subjects).items() if n > 1)
        if dup:
            raise ConfigError(f"config error at 'input.subjects': duplicated subject IDs: {dup}")
    from voxflow.inputs.missing import mark_missing

    return mark_missing(config, getattr(layouts, config["input"]["layout"])(config))


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
