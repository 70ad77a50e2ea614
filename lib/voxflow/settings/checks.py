"""Cross-field config checks, once the cohort is known: one place that `voxflow validate` and the Snakefile
(workflow/rules/common.smk) both call right after `voxflow.settings.loader.build_cohort`, so that a config mistake
stops the run at load time, with one `config error at '<key>': ...` line each, not after hours of work."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from voxflow.core.layout import (ANY_FOLD_MODEL, NORMALIZATION_FILE, PLANS_FILE, POSTPROCESSING_FILE, WRITTEN_FOLDERS,
                                 ModelFolder, OutputLayout, fold_models)
from voxflow.inputs.cohort import Cohort, _listing, _plural
from voxflow.errors import ConfigError
from voxflow.settings.model import ChainSettings


# --- cross-field checks, once the cohort is known ---------------------------------------------------------------------


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


def _check_missing(config: dict, cohort: Cohort) -> list[str]:
    """input.unusable and demo.missing name known subjects and modalities; synthesis needs a second modality and
    the predict-only mode cannot train the synthesis model."""
    inp, mods, problems = config["input"], config["input"]["modalities"], []
    known = set(cohort.subjects)
    lists = [("input.unusable", inp["unusable"] or {})]
    if inp["layout"] == "demo":
        lists.append(("demo.missing", config["demo"]["missing"] or {}))
    for key, table in lists:
        unknown = sorted(s for s in table if s not in known)
        if unknown:
            problems.append(f"config error at '{key}': {_listing(unknown)} not in the cohort")
        bad = sorted({m for names in table.values() for m in names if m not in mods})
        if bad:
            problems.append(f"config error at '{key}': unknown modalit{'y' if len(bad) == 1 else 'ies'} "
                            f"{_listing(bad)}; input.modalities: {mods}")
    if inp["missing"] == "synthesize" and len(mods) < 2:
        problems.append("config error at 'input.missing': synthesize needs at least two modalities (one to "
                        f"synthesize from); input.modalities: {mods}")
    if cohort.missing and config["predict"]["model_dir"]:
        problems.append("config error at 'input.missing': synthesize trains the synthesis model on the cohort's "
                        "training subjects, which predict-only mode (predict.model_dir) does not have; "
                        f"{len(cohort.missing)} subjects lack a modality")
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
    from voxflow.core.split import make_split

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
    for name in WRITTEN_FOLDERS:  # the folders of output_dir the workflow writes: an input root there is written over
        folder = OutputLayout(out).at(name)
        if _inside(root, folder):
            at = "input.sheet" if key != "input.root" else "input.root"
            return [f"config error at '{at}': the input root {root!r} is inside {folder!r}, a folder "
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
    folder = ModelFolder(model)
    inference = folder.inference
    if os.path.isfile(inference):  # a model of several configurations (model.configurations): the chosen ones
        from voxflow.core.layout import inference_models

        missing = [] if os.path.isfile(folder.plans) else [PLANS_FILE]
        try:
            missing += [os.path.relpath(m, model) for m in inference_models(inference) if not os.path.isfile(m)]
        except (OSError, ValueError, KeyError) as exc:
            return [f"config error at 'predict.model_dir': cannot read {inference}: {exc}"]
    else:
        missing = [n for n in (PLANS_FILE, POSTPROCESSING_FILE) if not os.path.isfile(folder.file(n))]
        if not fold_models(model):
            missing.append(ANY_FOLD_MODEL)
    norm = config["preprocess"]["normalize"]
    methods = sorted({norm["per_modality"].get(m, norm["method"]) for m in config["input"]["modalities"]}
                     & {"ct_dataset", "nyul"})
    if methods and not os.path.isfile(folder.normalization):
        missing.append(f"{NORMALIZATION_FILE} (normalization {methods})")
    if missing:
        return [f"config error at 'predict.model_dir': {model!r} lacks {', '.join(missing)}: not the model folder of "
                "a finished training run (output_dir/model)"]
    try:
        plans = json.loads(Path(folder.plans).read_text())
    except (OSError, ValueError) as exc:
        return [f"config error at 'predict.model_dir': cannot read {folder.plans}: {exc}"]
    mods = config["input"]["modalities"]
    if isinstance(plans, dict) and plans.get("modalities") and list(plans["modalities"]) != list(mods):
        return [f"config error at 'input.modalities': {mods}, but the model in {model!r} was trained on "
                f"{list(plans['modalities'])} (plans.json): give the same modalities in the same order"]
    return []


def _check_training(config: dict, cohort: Cohort) -> list[str]:
    from voxflow.settings.launch import global_batch, train_processes

    problems: list[str] = []
    world = 1
    try:
        world = train_processes(config["train"])
        if config["model"]["batch_size"] is not None and not config["predict"]["model_dir"]:
            global_batch(config["model"]["batch_size"], world, configured=True)
    except ConfigError as exc:
        problems.append(str(exc))
    synth_batch = config["synthesis"]["batch_size"]
    if synth_batch % world and (cohort.missing or (config["train"]["augment"] or {}).get("synthetic_modality_p")):
        problems.append(f"config error at 'synthesis.batch_size': {synth_batch} does not split over the {world} "
                        f"training processes (train.gpus / train.processes); use a multiple of {world}")
    model = config["model"]
    if ("2.5d" in [model["dim"], *(model.get("configurations") or [])] and model["context_slices"] % 2 == 0
            and config["input"]["label"]
            and not config["predict"]["model_dir"]):
        problems.append(f"config error at 'model.context_slices': {model['context_slices']} with model.dim 2.5d; "
                        "use an odd number (the network predicts the centre slice)")
    confs = list(model.get("configurations") or []) or [model["dim"]]
    patch = model.get("patch_size")
    if patch is not None and not config["predict"]["model_dir"]:
        axes = {c: 2 if c in ("2d", "2.5d") else 3 for c in confs}  # a 2D/2.5D patch is [y, x]
        wrong = [c for c in confs if len(patch) != axes[c]]
        if wrong:
            problems.append(f"config error at 'model.patch_size': {list(patch)} has {len(patch)} values but "
                            f"configuration {', '.join(wrong)} needs {axes[wrong[0]]} "
                            "(2D/2.5D: [y, x], 3D: [z, y, x]); with several configurations leave it null (each plans "
                            "its own)")
    sp = config["split"]
    if (model["cascade"] or "3d_cascade" in (model.get("configurations") or [])) and not config["predict"]["model_dir"]:
        if sp["n_folds"] < 2 or (sp["folds_to_train"] is not None and sorted(set(sp["folds_to_train"]))
                                 != list(range(sp["n_folds"]))):
            problems.append("config error at 'model.cascade': the full-resolution stage trains on every training "
                            "subject's out-of-fold low-resolution prediction, so every fold is trained: split.n_folds "
                            ">= 2 and split.folds_to_train: null")
    if len(model.get("configurations") or []) > 1 and sp["n_folds"] == 1 and not sp["holdout_fraction"] \
            and not config["predict"]["model_dir"]:
        problems.append("config error at 'model.configurations': choosing among configurations needs out-of-fold "
                        "subjects: split.n_folds > 1, or split.holdout_fraction > 0 with split.n_folds 1")
    train = config["train"]
    if train.get("regions") and not config["predict"]["model_dir"]:
        from voxflow.core.labels import region_labels

        try:
            region_labels(train["regions"], config["input"]["label_values"], train.get("region_labels"))
        except ValueError as exc:
            problems.append(f"config error at 'train.regions': {exc}")
        if train["loss"] == "wce":
            problems.append("config error at 'train.loss': wce (class-weighted softmax CE) has no region form; "
                            "use dice_ce (Dice + BCE per region) with train.regions")
    elif train.get("region_labels"):
        problems.append("config error at 'train.region_labels': it only applies with train.regions")
    oc = config["postprocess"]["open_close"]
    if oc is not None:
        unknown = sorted(set(oc) - {"labels", "radius_vox", "op"})
        if unknown or not isinstance(oc.get("labels"), list) or oc.get("op", "open") not in ("open", "close") \
                or not isinstance(oc.get("radius_vox", 1), int) or oc.get("radius_vox", 1) < 0:
            problems.append(f"config error at 'postprocess.open_close': {oc!r}; expected "
                            "{labels: [..], radius_vox: 1, op: open|close}")
    return problems


def ct_problems(config: dict) -> list[str]:
    """Combinations that cannot work for CT, one line each."""
    pre = config["preprocess"]
    chain = ChainSettings.from_sections(config["input"], pre, config["input"]["label"] is not None)
    strip_on = pre["skullstrip"]["modality"] or chain.reference
    problems = []
    if pre["skullstrip"]["method"] == "deepbet" and chain.is_ct(strip_on):
        problems.append(f"config error at 'preprocess.skullstrip.method': deepbet is an MR brain extractor and "
                        f"{strip_on!r} is CT; use none (body CT) or template")
    if "ct_window" in chain.norm_methods.values() and pre["normalize"]["window"] is None:
        problems.append("config error at 'preprocess.normalize.window': method ct_window needs a [low, high] "
                        "Hounsfield window")
    if chain.space == "mni" and chain.is_ct(chain.reference) and pre["skullstrip"]["method"] == "none":
        problems.append("config error at 'preprocess.space': a CT reference without skull stripping cannot be "
                        "registered to the MNI152 brain template; use preprocess.space: native")
    return problems


def _check_preprocess(config: dict, cohort: Cohort) -> list[str]:
    pre = config["preprocess"]
    chain = ChainSettings.from_sections(config["input"], pre, config["input"]["label"] is not None)
    problems = ct_problems(config)
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
    methods = set(chain.norm_methods.values())
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


def _check_output_and_names(config: dict, cohort: Cohort) -> list[str]:
    problems = []
    if not str(config["output_dir"]).strip():
        problems.append("config error at 'output_dir': empty; give the folder the results go to (e.g. results)")
    ext = config["input"]["extension"]
    if ext and not ext.startswith("."):
        problems.append(f"config error at 'input.extension': {ext!r} does not start with '.': the files would be "
                        f"named like t1{ext}; use {'.' + ext!r}")
    return problems


def _check_inputs_found(config: dict, cohort: Cohort, sample: int = 20) -> list[str]:
    """A modality (or the label) whose file is missing in every one of the first subjects is a naming mistake
    of the config (a case, an extension, input.file_names), not a cohort of broken subjects: said now, once,
    instead of every subject being excluded after its validation. At most `sample` subjects, a stat each."""
    if config["input"]["layout"] == "demo":  # generated by the workflow
        return []
    subjects = [s for s in cohort.subjects[:sample] if s not in cohort.problems]
    def image_of(m: str) -> Callable[[str], str | None]:
        return lambda s: cohort.images[s].get(m)

    keys = [(m, "input.modalities", image_of(m)) for m in config["input"]["modalities"]]
    if config["input"]["label"]:
        keys.append((config["input"]["label"], "input.label", cohort.labels.get))
    problems = []
    for name, key, path_of in keys:
        paths = [p for p in (path_of(s) for s in subjects) if p]
        if len(paths) < 2 or any(os.path.exists(p) for p in paths):
            continue
        folder = os.path.dirname(paths[0])
        try:
            held = sorted(n for n in os.listdir(folder) if not n.startswith("."))
        except OSError:
            held = []
        shown = ", ".join(held[:8]) + (", ..." if len(held) > 8 else "") if held else "nothing"
        problems.append(f"config error at '{key}': no file for {name!r} in any of the first {len(paths)} subjects "
                        f"(e.g. {paths[0]}; {folder} holds {shown}): check input.modalities, input.label, "
                        "input.extension and input.file_names")
    return problems


def input_problems(config: dict) -> list[str]:
    """The input section's own cross-field mistakes, found before the cohort is built from it (the layout needs
    its root or sheet; the reference must be one of the modalities): voxflow.settings.schema.validate_config calls
    it."""
    inp = config["input"]
    problems: list[str] = []
    if inp["reference"] not in inp["modalities"]:
        problems.append(f"config error at 'input.reference': {inp['reference']!r} is not one of input.modalities "
                        f"{inp['modalities']}")
    if inp["layout"] in ("folders", "brats", "msd", "bids") and not inp["root"]:
        problems.append(f"config error at 'input.root': the {inp['layout']} layout needs input.root")
    if inp["layout"] == "sheet" and not inp["sheet"]:
        problems.append("config error at 'input.sheet': the sheet layout needs input.sheet (a CSV/TSV file)")
    if inp["layout"] == "bids" and inp["label"] and not inp["derivatives"]:
        problems.append("config error at 'input.derivatives': the bids layout reads labels from a derivatives "
                        f"folder (e.g. derivatives/manual); set it, or input.label: null (now {inp['label']!r})")
    if inp["layout"] == "demo":
        bad = set(inp["modalities"]) - {"t1", "t1c", "t2", "flair"}
        if bad or not 2 <= len(inp["modalities"]) <= 4:
            problems.append("config error at 'input.modalities': the demo cohort has 2-4 of t1, t1c, t2, flair; "
                            f"got {inp['modalities']}")
    return problems


def check_config(config: dict, cohort: Cohort) -> None:
    """Every mistake of a schema-valid config that needs the cohort or several keys, found at load time: one
    ConfigError listing them all, one `config error at '<key>': ...` line each. `voxflow validate` and the
    Snakefile (workflow/rules/common.smk) both call it right after build_cohort, so they agree."""
    problems = []
    for check in (_check_output_and_names, _check_modality_keys, _check_missing, _check_labels, _check_paths,
                  _check_split, _check_model_dir, _check_training, _check_preprocess, _check_inputs_found):
        problems += check(config, cohort)
    if problems:
        raise ConfigError("\n".join(problems))
