"""Where things are: the path patterns under output_dir and in a model folder, defined once (the rules, the steps,
the report, export-model and voxflow predict all build their paths here)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

# The files of a model folder (<output_dir>/model, or a configuration's model/<configuration>/ of
# model.configurations): what the training writes, export-model packs and voxflow predict reads.
MODEL_FILE = "model_final.pt"  # fold_<k>/: the trained network, with its training curve
CHECKPOINT_FILE = "checkpoint_latest.pt"  # fold_<k>/: where a killed fold resumes
PLANS_FILE = "plans.json"
SETTINGS_FILE = "settings.json"
POSTPROCESSING_FILE = "postprocessing.json"
INFERENCE_FILE = "inference.json"  # a model of several configurations: the choice, in place of postprocessing.json
FINGERPRINT_FILE = "fingerprint.json"
NORMALIZATION_FILE = "normalization.json"
SPLIT_FILE = "split.json"
STORES_FILE = "stores.json"
FOLD_MODELS = f"fold_*/{MODEL_FILE}"  # glob of the fold models in a model folder
ANY_FOLD_MODEL = f"fold_<k>/{MODEL_FILE}"  # how a message names a missing fold model


def fold_name(fold: int | str) -> str:
    """A fold's folder name, fold_<k>."""
    return f"fold_{fold}"


def fold_index(name: str) -> int | None:
    """The fold number of a folder named fold_<k>; None for any other name."""
    m = re.fullmatch(r"fold_(\d+)", name)
    return int(m.group(1)) if m else None


def fold_models(model_dir: str | os.PathLike) -> list[Path]:
    """The fold models of a model folder, fold_<k>/model_final.pt (files), by fold number."""
    found = [(k, p) for p in Path(model_dir).glob(FOLD_MODELS)
             if (k := fold_index(p.parent.name)) is not None and p.is_file()]
    return [p for _, p in sorted(found, key=lambda kp: kp[0])]


def fold_dir(model_dir: str | os.PathLike, fold: int | str, configuration: str | None = None) -> str:
    """<model_dir>[/<configuration>]/fold_<k>."""
    return os.path.join(model_dir, *([configuration] if configuration else []), fold_name(fold))


def fold_model(model_dir: str | os.PathLike, fold: int | str, configuration: str | None = None) -> str:
    """<model_dir>[/<configuration>]/fold_<k>/model_final.pt."""
    return os.path.join(fold_dir(model_dir, fold, configuration), MODEL_FILE)


def fold_model_name(fold: int | str, configuration: str | None = None) -> str:
    """A fold model's name inside a model folder, '/'-separated (inference.json's and an archive's):
    [<configuration>/]fold_<k>/model_final.pt."""
    return "/".join([*([configuration] if configuration else []), fold_name(fold), MODEL_FILE])


def read_inference(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def inference_models(path: str | Path) -> list[str]:
    """The chosen models' paths (inference.json keeps them relative to its folder: a model folder moves whole)."""
    return [str(Path(path).parent / m) for m in read_inference(path)["models"]]


def sub_path(root: str, step: str, name: str) -> str:
    """Per-subject file of a step: <root>/preprocess/<subject>/<step>/<name>."""
    return os.path.join(root, "preprocess", "{subject}", step, name)


def qc_path(root: str, step: str) -> str:
    return os.path.join(root, "qc", "{subject}", f"{step}.png")


def qc_scores_path(root: str) -> str:
    return os.path.join(root, "qc", "{subject}", "scores.json")


def store_pattern(root: str) -> str:
    return os.path.join(root, "zarr", "{subject}.zarr")


def validation_table(root: str) -> str:
    return os.path.join(root, "validation", "subjects", "{subject}.tsv")


def template_paths(root: str, resolution_mm: int) -> dict[str, str]:
    """The MNI152 template (image, brain mask, grey- and white-matter maps) at the registration's resolution,
    written once per run."""
    image = os.path.join(root, "template", f"mni152_{resolution_mm}mm.nii.gz")
    return {"image": image, **template_files(image)}


def template_files(image: str) -> dict[str, str]:
    """The files written with the template `image` (template_paths): its brain mask and tissue maps."""
    base = image[: -len(".nii.gz")]
    return {"mask": f"{base}_mask.nii.gz", "gm": f"{base}_gm.nii.gz", "wm": f"{base}_wm.nii.gz"}


def fill(pattern: str, subject: str) -> str:
    return pattern.replace("{subject}", subject)


def output_folders() -> list[tuple[str, str]]:
    """The folders of a run under output_dir and what each holds (`voxflow where`, `make demo`'s last lines)."""
    return [("report", "report.html: the cohort report (self-contained, opens offline)"),
            ("evaluation", "metrics.tsv (per subject, label, space), summary.tsv (mean, std, median, IQR)"),
            ("predictions", "<subject>/<subject>_seg.nii.gz: predictions in native space (+ _seg_mni, "
                            "or _seg_resampled in native-space runs: on the stores' grid)"),
            ("model", "plans.json, fingerprint.json, split.json, fold_<k>/ (model, curve.csv/png)"),
            ("zarr", "per-subject zarr stores (OME-Zarr)"),
            ("qc", "QC images and scores.json per subject and step; scores.tsv, flags.tsv (cohort QC)"),
            ("preprocess", "intermediate NIfTI per step, transforms in <subject>/xfm"),
            ("logs", "one log per rule and subject"), ("benchmarks", "run time per rule and subject")]
