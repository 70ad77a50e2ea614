"""Where things are: the path patterns under output_dir and in a model folder, defined once (the rules, the steps,
the report, export-model and voxflow predict all build their paths here)."""

from __future__ import annotations

import json
from pathlib import Path
import os


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
