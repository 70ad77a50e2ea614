"""Config validation and the cohort's subject table, as used by the Snakefile.

Everything the DAG needs about subjects is computed once at parse time (one directory scan),
never per job, so that building the DAG stays fast for thousands of subjects.
"""

from __future__ import annotations

import os
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


# --- cross-field checks, once the cohort is known ---------------------------------------------------------------------

# Top-level folders of output_dir that the workflow writes: an input root inside one of them would be written
# over. output_dir/demo is written only by the demo layout, whose raw data is not an input root: a cohort the
# demo generated can be read back with the folders layout (and config/examples/liver_ct.yaml keeps its data in
# output_dir/data).
OUTPUT_FOLDERS = ("benchmarks", "evaluation", "logs", "model", "predictions", "preprocess", "qc", "report", "status",
                  "template", "validation", "zarr")


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or below it (both resolved: symlinks, .., relative to the working directory)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _check_modality_keys(config: dict, cohort: Cohort) -> list[str]:
    inp, pre = config["input"], config["preprocess"]
    mods = inp["modalities"]
    problems = []
    named = [("input.modality_types", list(inp["modality_types"] or {})),
             ("input.file_names", list(inp["file_names"] or {})),
             ("preprocess.normalize.per_modality", list(pre["normalize"]["per_modality"] or {})),
             ("preprocess.denoise.modalities", list(pre["denoise"]["modalities"] or [])),
             ("preprocess.skullstrip.modality", [m for m in [pre["skullstrip"]["modality"]] if m])]
    for key, names in named:
        unknown = [m for m in names if m not in mods]
        if unknown:
            what = "unknown modality" if len(unknown) == 1 else "unknown modalities"
            problems.append(f"config error at '{key}': {what} {_listing(unknown)}; input.modalities: {mods}")
    if inp["layout"] != "folders":
        for key in ("file_names", "label_file"):
            if inp[key]:
                problems.append(f"config error at 'input.{key}': only the folders layout reads it (input.layout is "
                                f"{inp['layout']!r}); remove it")
    return problems


def _check_labels(config: dict, cohort: Cohort) -> list[str]:
    inp = config["input"]
    values = inp["label_values"]
    if not inp["label"] or values is None:
        return []
    problems = []
    dup = sorted(v for v, n in Counter(values).items() if n > 1)
    if dup:
        problems.append(f"config error at 'input.label_values': {values} lists {_listing(dup)} more than once")
    if 0 not in values:
        problems.append(f"config error at 'input.label_values': {values} lacks 0, the background every label map holds")
    elif not set(values) - {0}:
        problems.append(f"config error at 'input.label_values': {values} has no foreground label")
    unknown = [v for v in config["evaluate"]["labels"] or [] if v not in values]
    if unknown:
        problems.append(f"config error at 'evaluate.labels': {_listing(unknown)} "
                        f"{'is' if len(unknown) == 1 else 'are'} not in input.label_values {values}")
    return problems


def _check_split(config: dict, cohort: Cohort) -> list[str]:
    """The split of a training run (labels, no predict.model_dir), as the workflow makes it (make_split)."""
    from voxflow.learn.plan import make_split

    inp, sp = config["input"], config["split"]
    if not inp["label"] or config["predict"]["model_dir"]:
        return []
    problems = []
    folds = sp["folds_to_train"]
    if folds is not None:
        if not folds:
            problems.append("config error at 'split.folds_to_train': [] trains no fold; null = every fold")
        missing = sorted({k for k in folds if k >= sp["n_folds"]})
        if missing:
            have = "fold 0" if sp["n_folds"] == 1 else f"folds 0-{sp['n_folds'] - 1}"
            problems.append(f"config error at 'split.folds_to_train': {'fold' if len(missing) == 1 else 'folds'} "
                            f"{', '.join(map(str, missing))} {'does' if len(missing) == 1 else 'do'} not exist: "
                            f"split.n_folds {sp['n_folds']} makes {have}")
        dup = sorted(k for k, n in Counter(folds).items() if n > 1)
        if dup:
            problems.append(f"config error at 'split.folds_to_train': {'fold' if len(dup) == 1 else 'folds'} "
                            f"{', '.join(map(str, dup))} listed more than once")
    test = sp["test_subjects"]
    if test:
        known = set(cohort.subjects)
        unknown = list(dict.fromkeys(s for s in test if s not in known))
        if unknown:
            problems.append(f"config error at 'split.test_subjects': {_plural(len(unknown), 'subject')} "
                            f"{'is' if len(unknown) == 1 else 'are'} not in the cohort: {_listing(unknown)}")
        dup = sorted(s for s, n in Counter(test).items() if n > 1)
        if dup:
            problems.append(f"config error at 'split.test_subjects': listed more than once: {_listing(dup)}")
        if unknown or dup:
            return problems
    error = None
    try:
        split = make_split(cohort.subjects, sp["n_folds"], sp["test_fraction"], sp["seed"], test)
    except ValueError as exc:  # too few training subjects for the folds: the pool's size, from one fold
        split, error = make_split(cohort.subjects, 1, sp["test_fraction"], sp["seed"], test), exc
    n, n_test = len(cohort.subjects), len(split["test"])
    if n_test == n:
        if test:
            problems.append(f"config error at 'split.test_subjects': every subject of the cohort ({n}) is a test "
                            "subject: none is left for training")
        else:
            problems.append(f"config error at 'split.test_fraction': {sp['test_fraction']} of {_plural(n, 'subject')} "
                            f"makes {_plural(n_test, 'test subject')}: none is left for training")
    elif error is not None:
        problems.append(f"config error at 'split': {error} (lower split.n_folds or split.test_fraction)")
    return problems


def _input_root(inp: dict) -> tuple[str | None, str]:
    """The folder the inputs are read from and the key that sets it (None for the generated demo cohort)."""
    if inp["layout"] == "demo":
        return None, ""
    if inp["layout"] == "sheet" and not inp["root"]:
        return os.path.dirname(inp["sheet"]) or ".", "the folder of input.sheet"
    return inp["root"], "input.root"


def _check_paths(config: dict, cohort: Cohort) -> list[str]:
    out = config["output_dir"]
    root, key = _input_root(config["input"])
    if root is None:
        return []
    # A folders, brats, msd or bids root is scanned for subjects: an output folder in it would be read as one
    # (and its files as inputs). A sheet names its subjects, and its folder is only where relative paths
    # start: results next to the sheet (project/cohort.tsv, project/results) are a common, harmless layout.
    implicit_sheet_root = config["input"]["layout"] == "sheet" and not config["input"]["root"]
    if _inside(out, root) and not (implicit_sheet_root and not _inside(root, out)):
        where = "is the input root" if _inside(root, out) else f"is inside the input root {root!r}"
        return [f"config error at 'output_dir': {out!r} {where} ({key}): outputs would mix with the input data; "
                "choose an output_dir outside it"]
    for name in OUTPUT_FOLDERS:
        if _inside(root, os.path.join(out, name)):
            at = "input.sheet" if key != "input.root" else "input.root"
            return [f"config error at '{at}': the input root {root!r} is inside {os.path.join(out, name)!r}, a folder "
                    "the workflow writes; move the data or choose another output_dir"]
    return []


def _check_model_dir(config: dict, cohort: Cohort) -> list[str]:
    """Predict-only mode: the trained model folder and its fit with this config."""
    import json

    model = config["predict"]["model_dir"]
    if not model:
        return []
    if not os.path.isdir(model):
        return [f"config error at 'predict.model_dir': {model!r} is not a directory"]
    missing = [n for n in ("plans.json", "postprocessing.json") if not os.path.isfile(os.path.join(model, n))]
    if not any(e.name.startswith("fold_") and os.path.isfile(os.path.join(e.path, "model_final.pt"))
               for e in os.scandir(model)):
        missing.append("fold_<k>/model_final.pt")
    norm = config["preprocess"]["normalize"]
    methods = sorted({norm["per_modality"].get(m, norm["method"]) for m in config["input"]["modalities"]}
                     & {"ct_dataset", "nyul"})
    if methods and not os.path.isfile(os.path.join(model, "normalization.json")):
        missing.append(f"normalization.json (normalization {methods})")
    if missing:
        return [f"config error at 'predict.model_dir': {model!r} lacks {', '.join(missing)}: not the model folder of "
                "a finished training run (output_dir/model)"]
    try:
        plans = json.loads(Path(model, "plans.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"config error at 'predict.model_dir': cannot read {os.path.join(model, 'plans.json')}: {exc}"]
    mods = config["input"]["modalities"]
    if isinstance(plans, dict) and plans.get("modalities") and list(plans["modalities"]) != list(mods):
        return [f"config error at 'input.modalities': {mods}, but the model in {model!r} was trained on "
                f"{list(plans['modalities'])} (plans.json): give the same modalities in the same order"]
    return []


def _check_training(config: dict, cohort: Cohort) -> list[str]:
    from voxflow.learn.launch import global_batch, train_processes

    problems = []
    try:
        world = train_processes(config["train"])
        if config["model"]["batch_size"] is not None and not config["predict"]["model_dir"]:
            global_batch(config["model"]["batch_size"], world, configured=True)
    except ConfigError as exc:
        problems.append(str(exc))
    model = config["model"]
    if (model["dim"] == "2.5d" and model["context_slices"] % 2 == 0 and config["input"]["label"]
            and not config["predict"]["model_dir"]):
        problems.append(f"config error at 'model.context_slices': {model['context_slices']} with model.dim 2.5d; "
                        "use an odd number (the network predicts the centre slice)")
    oc = config["postprocess"]["open_close"]
    if oc is not None:
        unknown = sorted(set(oc) - {"labels", "radius_vox", "op"})
        if unknown or not isinstance(oc.get("labels"), list) or oc.get("op", "open") not in ("open", "close") \
                or not isinstance(oc.get("radius_vox", 1), int) or oc.get("radius_vox", 1) < 0:
            problems.append(f"config error at 'postprocess.open_close': {oc!r}; expected "
                            "{labels: [..], radius_vox: 1, op: open|close}")
    return problems


def _check_preprocess(config: dict, cohort: Cohort) -> list[str]:
    from voxflow.preprocess.native import ct_config_problems

    pre = config["preprocess"]
    problems = list(ct_config_problems(config))
    if pre["granularity"] == "step" and config["input"].get("on_error") == "exclude":
        problems.append("config error at 'preprocess.granularity': 'step' needs input.on_error: stop (a subject is "
                        "excluded on error only when its chain runs as one job); use 'auto' or 'subject'")
    strip = pre["skullstrip"]
    if strip["method"] == "template":
        for name in ("head", "brain_mask"):
            path = strip["template"][name]
            if not path:
                problems.append(f"config error at 'preprocess.skullstrip.template.{name}': method 'template' needs the "
                                f"{'whole-head template image' if name == 'head' else 'template brain mask'}")
            elif not os.path.isfile(path):
                problems.append(f"config error at 'preprocess.skullstrip.template.{name}': {path!r} is not a file")
    norm = pre["normalize"]
    methods = {norm["per_modality"].get(m, norm["method"]) for m in config["input"]["modalities"]}
    lo, hi = norm["percentiles"]
    if methods & {"percentile", "ct_dataset"} and not lo < hi:
        problems.append(f"config error at 'preprocess.normalize.percentiles': {norm['percentiles']}; give [low, high], "
                        "low < high")
    if "ct_window" in methods and norm["window"] is not None and (len(norm["window"]) != 2
                                                                   or not norm["window"][0] < norm["window"][1]):
        problems.append(f"config error at 'preprocess.normalize.window': {norm['window']}; give [low, high] in HU, "
                        "low < high")
    if "nyul" in methods:
        p, scale = norm["nyul"]["percentiles"], norm["nyul"]["scale"]
        if any(a >= b for a, b in zip(p, p[1:])):
            problems.append(f"config error at 'preprocess.normalize.nyul.percentiles': {p}; landmarks must increase")
        if not scale[0] < scale[1]:
            problems.append(f"config error at 'preprocess.normalize.nyul.scale': {scale}; give [low, high], low < high")
    return problems


def check_config(config: dict, cohort: Cohort) -> None:
    """Every mistake of a schema-valid config that needs the cohort or several keys, found at load time: one
    ConfigError listing them all, one `config error at '<key>': ...` line each. `voxflow validate` and the
    Snakefile (workflow/rules/common.smk) both call it right after build_cohort, so they agree."""
    problems = []
    for check in (_check_modality_keys, _check_labels, _check_paths, _check_split, _check_model_dir,
                  _check_training, _check_preprocess):
        problems += check(config, cohort)
    if problems:
        raise ConfigError("\n".join(problems))


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
