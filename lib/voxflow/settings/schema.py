"""The config schema and the validation against it.

The schema ships with the package (voxflow/settings/config.schema.yaml, package data: found through
importlib.resources, so an installed voxflow validates a config from any directory); config/config.yaml, the
Snakefile's `configfile:`, holds the demo's values over its defaults.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from importlib import resources
from pathlib import Path

import yaml

from voxflow.errors import ConfigError
from voxflow.settings.checks import input_problems

SCHEMA_NAME = "config.schema.yaml"


def packaged_schema() -> AbstractContextManager[Path]:
    """The schema that ships with voxflow, as a file path for the duration of the `with` block (a temporary copy
    only where the package is not a plain folder, e.g. a zip)."""
    return resources.as_file(resources.files("voxflow.settings") / SCHEMA_NAME)


def schema_text() -> str:
    """The packaged schema's YAML text."""
    return (resources.files("voxflow.settings") / SCHEMA_NAME).read_text(encoding="utf-8")


def validate_config(config: dict, schema_path: str | os.PathLike[str] | None = None) -> dict:
    """Validate against the schema (the packaged one unless `schema_path` is given) with Snakemake, which fills
    the defaults in place; explain errors in one line each (`config error at '<key>': ...`). Returns `config`."""
    with nullcontext(Path(schema_path)) if schema_path is not None else packaged_schema() as path:
        return _validate(config, path)


def _validate(config: dict, schema_path: Path) -> dict:
    import jsonschema
    from snakemake.utils import validate

    schema = yaml.safe_load(schema_path.read_text())
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
