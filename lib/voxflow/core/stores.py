"""The one reader of a subject's zarr store (what preprocess.store writes): the arrays, the geometry and the
attributes, for every stage after preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

from voxflow.errors import InputError


def read_subject_store(path: str | Path) -> dict:
    """Read a whole store back (arrays as numpy) — for tests, evaluation and small cohorts."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    meta = dict(root.attrs["voxflow"])
    out = {"image": root["0"][:], "meta": meta, "mask": root["labels/brain/0"][:]}
    out["label"] = root["labels/lesion/0"][:] if meta["has_label"] else None
    return out


def store_path(path: str) -> str:
    """A subject's zarr store from what a rule names as its input: the store itself, or the subject's status
    file (status/subjects/<subject>.json), which stands for the store where no rule can declare it (input.on_error:
    exclude, one job per subject: an excluded subject has none)."""
    if str(path).endswith(".json"):
        status = json.loads(Path(path).read_text())
        if status.get("status") != "ok" or not status.get("store"):
            raise InputError(status.get("subject", "?"), path, f"subject was excluded at its {status.get('step')} "
                                                                f"step: {status.get('problem')}")
        return status["store"]
    return str(path)


def subject_stores(inp: dict, subjects: list[str] | None = None) -> dict[str, str]:
    """Subject -> store path: from the manifest `inp["stores"]` (the training_stores rule) and any
    inputs named store_<subject>; restricted to `subjects` if given."""
    found = json.loads(Path(inp["stores"]).read_text()) if inp.get("stores") else {}
    found.update({k[6:]: store_path(v) for k, v in inp.items() if k.startswith("store_")})
    return found if subjects is None else {s: found[s] for s in subjects}
