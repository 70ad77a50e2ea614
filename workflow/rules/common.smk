# Shared helpers for the rules: the config resolved once (SETTINGS), the subject table, and the one shell
# command every rule runs, `voxflow step NAME` (the function is in voxflow.pipeline.registry's table), with logs and
# thread limits.
import inspect
import json
from snakemake.common import overwrite_function_params
from snakemake.exceptions import WorkflowError
import os
import shlex
import sys

from voxflow.errors import ConfigError
from voxflow.inputs.missing import missing_summary
from voxflow.settings import load_config_dict
from voxflow.settings.launch import launcher
from voxflow.settings.loader import shorten_subject_lists
from voxflow.core.atomic import write_json_atomic
from voxflow.core.layout import OutputLayout

# Three `run:` blocks (subject_status, cohort_status in preprocess.smk; report_subjects in report.smk) import
# what they call under the module names it had before the stage packages: `voxflow.status` (now
# voxflow.pipeline.status) and `voxflow.report` (a package now, exposing write_shown_subjects). Snakemake's code
# rerun trigger compares a run block's text, so renaming the import there would rerun cohort_status in every
# results folder made before and, through status/cohort.json, the whole cohort's training. The old name is an
# alias here, for those blocks only; new code imports voxflow.pipeline.status.
import voxflow.pipeline.status

sys.modules.setdefault("voxflow.status", voxflow.pipeline.status)

# The config Snakemake merged (config/config.yaml, --configfile) loaded as `voxflow validate` loads it
# (voxflow.settings.load_config_dict: validated in place against the packaged schema, defaults filled, its cohort
# built and checked), then resolved once into SETTINGS (voxflow.settings.Settings): every config mistake found
# here, one `config error at '<key>': ...` line each, before any rule is defined. The rules read SETTINGS (and the
# names below, its values), never `config` itself.
try:
    LOADED = load_config_dict(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
COHORT, SETTINGS = LOADED.cohort, LOADED.settings

OUT = SETTINGS.output_dir
INP = SETTINGS.section("input")
MODS = list(SETTINGS.chain.modalities)
REF = SETTINGS.chain.reference
HAS_LABEL = SETTINGS.chain.has_label
PRE = SETTINGS.chain.preprocess  # the preprocess section
SUBJECTS = COHORT.subjects
CONDA_ENV = "../../envs/voxflow.yaml"
NORM_JSON = SETTINGS.normalization_json  # dataset-level normalization (nyul, ct_dataset), else None
ON_ERROR = SETTINGS.on_error  # exclude: a failing subject is left out, the rest runs on; stop: the run stops
FUSED = SETTINGS.fused  # one job per subject (the whole chain), or one job per step
STORE_DECLARED = SETTINGS.store_declared  # see voxflow.settings.Settings.store_declared
EXCLUDE_FLAGGED = SETTINGS.exclude_flagged
# Every path under output_dir, and the model folder's files (LAYOUT.model): voxflow.core.layout, the one layout
# that the steps, the report, export-model and voxflow predict read too. The rules name no path of their own.
LAYOUT = OutputLayout(OUT)
store = LAYOUT.store  # zarr/<subject>.zarr; the run blocks of subject_status and training_stores call store(...)


def store_input(subject):
    """The file a consumer of a subject's store names as its input: the store, or its status file."""
    return store(subject) if STORE_DECLARED else LAYOUT.status(subject)


wildcard_constraints:
    subject="[^/]+",


def job_function(fn):
    """Mark a function Snakemake calls per job (input, params, resources) with its parameters, read
    once here: Snakemake otherwise runs inspect.signature on every call, ~65 000 times per 3000
    subjects, about a tenth of the dry run (bench/dag.py). Snakemake's own helper for this, not a public
    API: tests/project/test_snakemake_internals.py fails if an upgrade stops honouring it."""
    overwrite_function_params(fn, inspect.signature(fn).parameters)
    return fn


def mem_mb(kind):
    """Memory of a job (light or heavy, from config.resources), doubled at each retry: a job killed
    for memory on a cluster is resubmitted (the SLURM profile sets `retries`) with more."""
    base = SETTINGS.mem_mb(kind)
    return job_function(lambda wildcards, attempt: base * attempt)


def runtime_min(kind):
    """Wall-time limit in minutes (Snakemake's standard `runtime`), from config.resources; longer on retry.
    A training fold's covers train.budget_minutes (voxflow.settings.Settings.runtime_min)."""
    base = SETTINGS.runtime_min(kind)
    return job_function(lambda wildcards, attempt: base * attempt)


def io_params(section):
    """params function: the rule's named inputs/outputs and its config section (a dict, or a
    function of the wildcards), as JSON for `voxflow step`."""

    def _fn(wildcards, input, output):
        cfg = section(wildcards) if callable(section) else section
        return json.dumps({"input": dict(input.items()), "output": dict(output.items()), "config": cfg})

    return job_function(_fn)


# Config keys that change how a job runs, not what it computes: left out of `settings` below, so that
# more threads or another dask scheduler do not rerun the plan and, through plans.json, every fold.
EXECUTION_KEYS = frozenset(
    {"scheduler", "threads", "workers", "checkpoint_every", "gpus", "processes", "ddp_backend", "max_qc_subjects"}
)


def semantic(cfg):
    if isinstance(cfg, dict):
        return {k: semantic(v) for k, v in cfg.items() if k not in EXECUTION_KEYS}
    return cfg


def settings_text(cfg):
    """Canonical text of a config section (keys sorted): the params trigger compares reprs, and the key
    order of a config depends on how its YAML was written. In a dict: Snakemake would expand {wildcards}
    in a plain string param."""
    return {"json": json.dumps(semantic(cfg), sort_keys=True, default=str)}


def step_params(section):
    """params of a `voxflow step` rule: `io`, the JSON of files and config on the command line, and
    `settings`, the config alone. Snakemake's params rerun trigger ignores params computed from a job's
    input or output (`io`), so `settings` is what makes a changed config rerun the jobs it concerns."""
    if callable(section):
        settings = job_function(lambda wildcards: settings_text(section(wildcards)))
    else:
        settings = settings_text(section)
    return {"io": io_params(section), "settings": settings}


def python_cmd():
    """The interpreter that runs Snakemake (shell-quoted), so that every rule finds the project's own
    environment whatever PATH holds (`.venv/bin/snakemake` from a fresh shell); with --sdm conda, the
    rule's activated environment's `python`."""
    methods = getattr(getattr(workflow, "deployment_settings", None), "deployment_method", None) or ()
    if any("conda" in str(m).lower() for m in methods):
        return "python"
    return shlex.quote(sys.executable)


PYTHON = python_cmd()


def step_cmd(name, subject="{wildcards.subject:q}", nproc=1):
    """The shell command of a rule; `subject` names the job in logs and errors (cohort rules: "cohort").

    nproc > 1 (multi-GPU or multi-process training): torchrun starts nproc copies of the step (DDP),
    each with its share of the threads; on failure the first `voxflow ERROR` line is shown, not
    torchrun's summary."""
    if nproc > 1:
        t = f"$(( {{threads}} / {nproc} > 0 ? {{threads}} / {nproc} : 1 ))"
        return (
            f"OMP_NUM_THREADS={t} ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS={t} MKL_NUM_THREADS={t} "
            f"{launcher(nproc, PYTHON)} step {name} --subject {subject} --threads {{threads}} --io {{params.io:q}} "
            "> {log} 2>&1 || (grep -m 1 'voxflow ERROR' {log} >&2 || tail -n 1 {log} >&2; exit 1)"
        )
    return (
        "OMP_NUM_THREADS={threads} ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS={threads} MKL_NUM_THREADS={threads} "
        f"{PYTHON} -m voxflow step {name} --subject {subject} --threads {{threads}} --io {{params.io:q}} "
        "> {log} 2>&1 || (tail -n 1 {log} >&2; exit 1)"
    )


def all_targets():
    # the cohort's input problems, one table (one job per subject: merged when the run ends, validate.smk),
    # and every subject's status: included, or excluded with the step and the reason
    targets = ([] if FUSED else [LAYOUT.problems_table]) + [LAYOUT.cohort_status, LAYOUT.qc_flags]
    # Only the end products are named: the QC images and the stores come with the status files, and the
    # predictions (of the subjects that were not excluded: known once the checkpoint cohort_status ran,
    # plan.smk) with the report. Naming 4 files per subject here cost seconds of DAG building at 10 000 subjects.
    if SETTINGS.writes_report:
        targets += [LAYOUT.report_html]
    if SETTINGS.exports_model:  # what `voxflow export-model` packs with the folds
        targets += [LAYOUT.model.settings]
    if EVALUATE:
        targets += [LAYOUT.summary]
    return targets
