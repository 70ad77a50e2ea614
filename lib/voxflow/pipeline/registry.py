"""Every step `voxflow step NAME` runs, by name: the one table from a rule's `step_cmd("NAME")` to the function
that does the work (module:function, imported when called, so that a preprocessing job never imports torch)."""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("voxflow")

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


def run_step(name: str, subject: str, spec: dict, threads: int = 1) -> int:
    """`voxflow step NAME`: the step's function on the rule's files and config; the exit code the rule sees.

    A subject's bad input (InputError) ends in one line, last in the log, naming subject, file and problem (exit
    2); anything else logs its traceback first, then the one line (exit 1)."""
    from voxflow.errors import InputError, error_line, failed_step, one_line

    fn = step_function(name)
    t0 = time.time()
    log.info("step %s subject=%s threads=%d", name, subject, threads)
    try:
        info = fn(subject, spec.get("input", {}), spec.get("output", {}), spec.get("config", {}), threads)
    except InputError as exc:
        # One line, last in the log, that names subject, file and problem (the step: a chain's that failed).
        print(error_line(exc.step or name, str(exc)), file=sys.stderr)
        return 2
    except Exception as exc:  # anything else: traceback first (log.exception), then the one line
        log.exception("step %s failed", name)
        step, cause = failed_step(exc, name)
        print(error_line(step, f"subject={subject}: {one_line(cause, strip=False)}"), file=sys.stderr)
        return 1
    log.info("done %s subject=%s in %.1fs: %s", name, subject, time.time() - t0,
             json.dumps(info, default=str)[:2000] if info else "")
    return 0
