"""Every step `voxflow step NAME` runs, by name: the one table from a rule's `step_cmd("NAME")` to the function
that does the work (module:function, imported when called, so that a preprocessing job never imports torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

STEPS: dict[str, str] = {
    # the built-in demo cohort and the MNI152 template
    "demo": "voxflow.demo.steps:demo",
    "template": "voxflow.preprocess.steps:template",
    # a subject's preprocessing chain (voxflow.pipeline.chain lists their files and order)
    "validate": "voxflow.inputs.validate:validate",
    "ingest": "voxflow.preprocess.steps:ingest",
    "coreg": "voxflow.preprocess.steps:coreg",
    "denoise": "voxflow.preprocess.steps:denoise",
    "n4": "voxflow.preprocess.steps:n4",
    "skullstrip": "voxflow.preprocess.steps:skullstrip",
    "mni": "voxflow.preprocess.steps:mni",
    "native": "voxflow.preprocess.steps:native",
    "to_zarr": "voxflow.preprocess.steps:to_zarr",
    "space_mask": "voxflow.preprocess.steps:space_mask",
    "qc_scores": "voxflow.preprocess.steps:qc_scores",
    "chain": "voxflow.preprocess.steps:chain",  # the whole chain in one job
    # cohort
    "normalization_stats": "voxflow.preprocess.steps:normalization_stats",
    "qc_flags": "voxflow.qc.cohort:qc_flags",
    "split": "voxflow.planning.steps:split",
    "fingerprint": "voxflow.planning.steps:fingerprint",
    "plan": "voxflow.planning.steps:plan",
    "train": "voxflow.training.steps:train",
    "postprocess_plan": "voxflow.postprocessing.steps:postprocess_plan",
    "choose_configuration": "voxflow.inference.steps:choose_configuration",
    "predict": "voxflow.inference.steps:predict",
    "train_synthesis": "voxflow.synth.complete:train_synthesis",
    "complete_subject": "voxflow.synth.complete:complete_subject",
    "evaluate": "voxflow.evaluation.evaluate:evaluate",
    "aggregate": "voxflow.evaluation.evaluate:aggregate",
    "report": "voxflow.report.build:report",
}


def step_function(name: str) -> Callable:
    """The function of step `name` (signature: subject, inputs, outputs, config, threads)."""
    try:
        module, func = STEPS[name].split(":")
    except KeyError:
        raise KeyError(f"unknown step {name!r}; known: {sorted(STEPS)}") from None
    return getattr(importlib.import_module(module), func)
