"""Every step `voxflow step NAME` runs, by name: the one table from a rule's `step_cmd("NAME")` to the function
that does the work (module:function, imported when called, so that a preprocessing job never imports torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

STEPS: dict[str, str] = {
    # the built-in demo cohort and the MNI152 template
    "demo": "voxflow.steps:demo",
    "template": "voxflow.steps:template",
    # a subject's preprocessing chain (voxflow.chain lists their files and order)
    "validate": "voxflow.validate:validate",
    "ingest": "voxflow.steps:ingest",
    "coreg": "voxflow.steps:coreg",
    "denoise": "voxflow.steps:denoise",
    "n4": "voxflow.steps:n4",
    "skullstrip": "voxflow.steps:skullstrip",
    "mni": "voxflow.steps:mni",
    "native": "voxflow.steps:native",
    "to_zarr": "voxflow.steps:to_zarr",
    "space_mask": "voxflow.steps:space_mask",
    "qc_scores": "voxflow.steps:qc_scores",
    "chain": "voxflow.steps:chain",  # the whole chain in one job
    # cohort
    "normalization_stats": "voxflow.steps:normalization_stats",
    "qc_flags": "voxflow.qc_cohort:qc_flags",
    "split": "voxflow.learn.steps:split",
    "fingerprint": "voxflow.learn.steps:fingerprint",
    "plan": "voxflow.learn.steps:plan",
    "train": "voxflow.learn.steps:train",
    "postprocess_plan": "voxflow.learn.steps:postprocess_plan",
    "choose_configuration": "voxflow.learn.steps:choose_configuration",
    "predict": "voxflow.learn.steps:predict",
    "train_synthesis": "voxflow.synth.complete:train_synthesis",
    "complete_subject": "voxflow.synth.complete:complete_subject",
    "evaluate": "voxflow.evaluate:evaluate",
    "aggregate": "voxflow.evaluate:aggregate",
    "report": "voxflow.report:report",
}


def step_function(name: str) -> Callable:
    """The function of step `name` (signature: subject, inputs, outputs, config, threads)."""
    try:
        module, func = STEPS[name].split(":")
    except KeyError:
        raise KeyError(f"unknown step {name!r}; known: {sorted(STEPS)}") from None
    return getattr(importlib.import_module(module), func)
