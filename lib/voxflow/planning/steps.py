"""The planning rules' steps (`voxflow step NAME`, table: voxflow.pipeline.registry): split, fingerprint and plan.
Heavy imports stay inside the functions."""

from __future__ import annotations

import json
from pathlib import Path

from voxflow.core.atomic import write_json_atomic
from voxflow.core.stores import subject_stores
from voxflow.pipeline.status import subject_lists


def split(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    from voxflow.core.split import make_split

    lists = subject_lists(inp, cfg)
    excluded = lists.get("excluded") or []
    flagged = {}
    if inp.get("flags"):  # qc.exclude_flagged: the subjects the cohort QC flagged are not trained on
        from voxflow.qc.cohort import flag_summary, read_flags

        flagged = flag_summary(read_flags(inp["flags"]))
    try:
        sp = make_split(lists["subjects"], cfg["n_folds"], cfg["test_fraction"], cfg["seed"],
                        lists.get("test_subjects"), qc_excluded=flagged, holdout_fraction=cfg["holdout_fraction"],
                        incomplete=lists.get("incomplete"))
    except ValueError as exc:
        raise ValueError(f"{exc}" + (f" after excluding {len(excluded)} subjects "
                                     f"({', '.join(e['subject'] for e in excluded[:5])}"
                                     f"{', ...' if len(excluded) > 5 else ''}; see {inp.get('subjects')})"
                                     if excluded else "")) from None
    sp["excluded"] = excluded  # who was left out, at which step and why (input.on_error: exclude)
    write_json_atomic(sp, out["split"])
    return {"test": sp["test"], "folds": [len(f["val"]) for f in sp["folds"]]}


def fingerprint(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """model/fingerprint.json: the training stores measured once (one dask task per subject)."""
    from voxflow.planning.fingerprint import fingerprint as measure
    from voxflow.core.split import training_subjects

    fp = measure(subject_stores(inp, training_subjects(json.loads(Path(inp["split"]).read_text()))), cfg["scheduler"])
    write_json_atomic(fp, out["fingerprint"])
    return {"subjects": len(fp["subjects"]), "median_shape": fp["median_shape"]}


def plan(subject: str, inp: dict, out: dict, cfg: dict, threads: int = 1) -> dict:
    """A configuration's plans.json from the fingerprint (every automatic decision, readable)."""
    import torch

    from voxflow.planning.plans import Plans
    from voxflow.planning.planner import make_plans

    fp = json.loads(Path(inp["fingerprint"]).read_text())
    device = "cuda" if (cfg["train"]["device"] in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"
    written = make_plans(fp, cfg, cfg["modalities"], cfg["label_values"], device)
    write_json_atomic(written, out["plans"])
    plans = Plans.from_dict(written, source=out["plans"])
    return {"dim": plans.dim, "patch_size": plans.patch_size, "batch_size": plans.batch_size,
            "n_stages": plans.n_stages, "stem": plans.stem, "overridden_by_config": plans.overridden_by_config}
