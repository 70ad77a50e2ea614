"""The config loaded once, as the Snakefile loads it: the YAML over config/config.yaml, validated against the
packaged schema (its defaults filled), the cohort's subject table built, the cross-field checks run and the
result resolved into Settings. `voxflow.settings.load(configfile)` reads files (`voxflow validate`, the
benches, notebooks); `load_config_dict(config)` takes the dict Snakemake already merged (workflow/rules/common.smk).

Everything the DAG needs about subjects is computed once at parse time (one directory scan),
never per job, so that building the DAG stays fast for thousands of subjects.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxflow.errors import ConfigError
from voxflow.inputs import layouts
from voxflow.inputs.cohort import Cohort, check_subject_ids
from voxflow.settings.checks import check_config
from voxflow.settings.model import Settings
from voxflow.settings.schema import validate_config

# The Snakefile's `configfile:` (relative to the working directory, as Snakemake reads it): the values every
# config file is laid over.
BASE_CONFIGFILE = "config/config.yaml"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Loaded:
    """A loaded config: the validated dict (schema defaults filled; the very dict given to load_config_dict),
    its cohort, and the Settings resolved from both."""

    config: dict[str, Any]
    cohort: Cohort
    settings: Settings


def read_config_file(path: PathLike) -> dict:
    """A config file's mapping, or a one-line ConfigError: missing, a directory, unreadable, invalid YAML,
    or not a mapping (a list, a scalar, an empty file: Snakemake rejects those too)."""
    import yaml

    if os.path.isdir(path):
        raise ConfigError(f"config error: {path} is a directory, not a config file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config error: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config error: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"config error: {path} is not valid YAML: {what}{where}") from None
    if not isinstance(data, dict):
        held = "it is empty" if data is None else f"it holds a {'list' if isinstance(data, list) else 'single value'}"
        raise ConfigError(f"config error: {path} is not a mapping ({held}); a config file holds key: value pairs "
                          "such as output_dir: results")
    return data


def read_config(configfile: PathLike | None = None, base: PathLike | None = BASE_CONFIGFILE) -> dict:
    """The config as Snakemake merges it, before validation: `base` (the Snakefile's `configfile:`; skipped when
    None or absent) updated by `configfile` (as `snakemake --configfile` does: nested sections merged key by key).
    A file that is not a readable YAML mapping is a ConfigError (one line naming the file)."""
    from snakemake.utils import update_config

    config: dict = {}
    if base and os.path.isfile(base):
        config = read_config_file(base)
    if configfile is not None:
        update_config(config, read_config_file(configfile))
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


def resolve(config: dict, cohort: Cohort) -> Settings:
    """The validated config (voxflow.settings.schema.validate_config) checked across its fields against the cohort
    (ConfigError listing every mistake), then resolved into its typed Settings."""
    check_config(config, cohort)
    return Settings.from_config(config, cohort)


def load_config_dict(config: dict, schema: PathLike | None = None) -> Loaded:
    """An already merged config (Snakemake's `config`, read_config's dict) loaded: validated in place against the
    schema (the packaged one unless given; defaults filled, so the caller's dict is the validated config), its
    cohort built, checked and resolved. Every mistake is a ConfigError, one `config error at '<key>': ...` line each.
    """
    validate_config(config, schema)
    cohort = build_cohort(config)
    return Loaded(config, cohort, resolve(config, cohort))


def load(configfile: PathLike | None = None, *, base: PathLike | None = BASE_CONFIGFILE,
         schema: PathLike | None = None) -> Loaded:
    """The config a run of the workflow with `--configfile configfile` sees, loaded: `base` (config/config.yaml
    relative to the working directory, as the Snakefile's `configfile:`; skipped when None or absent) updated by
    `configfile`, then load_config_dict. No configfile: the base alone."""
    return load_config_dict(read_config(configfile, base), schema)


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
