# Shared helpers for the rules: config validation, the subject table, and the one shell
# command every per-subject rule runs (`voxflow step NAME`), with logs and thread limits.
import inspect
import json
from types import SimpleNamespace
from snakemake.exceptions import WorkflowError
import os
import shlex
import sys

from voxflow.config import ConfigError, build_cohort, shorten_subject_lists, validate_config
from voxflow.learn.launch import launcher
from voxflow.preprocess.store import write_json_atomic

# The config and its cohort, checked as `voxflow validate` checks them (voxflow.validate.main): every config
# mistake found here, one `config error at '<key>': ...` line each, before any rule is defined.
try:
    from voxflow.config_checks import check_config

    validate_config(config, os.path.join(workflow.basedir, "config", "config.schema.yaml"))
    COHORT = build_cohort(config)
    check_config(config, COHORT)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

OUT = config["output_dir"]
INP = config["input"]
MODS = INP["modalities"]
REF = INP["reference"]
HAS_LABEL = INP["label"] is not None
PRE = config["preprocess"]
RES = config["resources"]
SUBJECTS = COHORT.subjects
CONDA_ENV = "../../envs/voxflow.yaml"
# Where the stores' grid comes from: the MNI registration, or the native-space crop + resampling.
SPACE_STEP = "mni" if PRE["space"] == "mni" else "native"
# Every modality CT, no skull stripping, native space: N4 would only copy the images and skull stripping
# 'none' would keep the whole field of view, so the chain goes from co-registration (or denoising)
# straight to the native-space crop.
CT_DIRECT = (PRE["space"] == "native" and PRE["skullstrip"]["method"] == "none"
             and all(INP["modality_types"].get(m, "mr") == "ct" for m in MODS))
PRE_N4_STEP = "denoise" if PRE["denoise"]["enabled"] else "coreg"
QC_STEPS = ([] if CT_DIRECT else ["n4", "skullstrip"]) + [SPACE_STEP]
SPACE_MASK = os.path.join(OUT, "preprocess", "{subject}", SPACE_STEP,
                          "brain_mask.nii.gz" if SPACE_STEP == "mni" else "mask.nii.gz")
SPACE_XFM = os.path.join(OUT, "preprocess", "{subject}", "xfm" if SPACE_STEP == "mni" else "native/xfm")
# Dataset-level normalization (ct_dataset, nyul): learned over the training subjects into the model
# folder (predict-only: the trained model's own file), read back by every subject's to_zarr.
NORM_METHODS = {m: PRE["normalize"]["per_modality"].get(m, PRE["normalize"]["method"]) for m in MODS}
NORM_JSON = (os.path.join(config["predict"]["model_dir"] or os.path.join(OUT, "model"), "normalization.json")
             if set(NORM_METHODS.values()) & {"ct_dataset", "nyul"} else None)

# What a failing subject does (input.on_error): `exclude` leaves it out of the cohort and the rest runs on,
# `stop` stops the run. Exclusion needs the subject's chain to be one job that always ends with its status
# file (status/subjects/<subject>.json: included, or excluded with the step and the reason): Snakemake runs nothing
# downstream of a failed job, so a failed per-step job would block training for everybody.
ON_ERROR = INP["on_error"]
# Granularity of the per-subject chain: one job per step, or one job per subject running every step
# in one process (preprocess.smk). DAG building costs a few ms per job in Snakemake, so 10 000
# subjects x 7 steps took minutes; fused, it is one job per subject. Dataset-level normalization
# puts a cohort rule between the space step and to_zarr: then to_zarr is a job of its own.
FUSED = PRE["granularity"] == "subject" or (PRE["granularity"] == "auto"
                                            and (ON_ERROR == "exclude" or len(SUBJECTS) > 200))
STATUS = os.path.join(OUT, "status", "subjects", "{subject}.json")
COHORT_STATUS = os.path.join(OUT, "status", "cohort.json")
# Whether a rule declares the zarr store as its output. The fused job of the exclude mode cannot (a job
# must write every declared output, and an excluded subject has no store): there the status file stands
# for the store, and the steps that read a store resolve it (voxflow.steps.store_path).
STORE_DECLARED = not FUSED or NORM_JSON is not None or ON_ERROR == "stop"


def store(subject):
    return os.path.join(OUT, "zarr", f"{subject}.zarr")


def store_input(subject):
    """The file a consumer of a subject's store names as its input: the store, or its status file."""
    return store(subject) if STORE_DECLARED else STATUS.replace("{subject}", subject)


wildcard_constraints:
    subject="[^/]+",


def sub_path(step, name):
    """Per-subject file of a step: results/preprocess/<subject>/<step>/<name>."""
    return os.path.join(OUT, "preprocess", "{subject}", step, name)


def images(step, prefix="img_"):
    """Float intermediates are uncompressed NIfTI: gzip shrinks float32 scans by ~10% and costs
    ~1.3 s per 1 mm volume, a third of the preprocessing time. Masks and labels stay gzipped."""
    return {f"{prefix}{m}": sub_path(step, f"{m}.nii") for m in MODS}


def log_path(rule_name):
    return os.path.join(OUT, "logs", rule_name, "{subject}.log")


def bench_path(rule_name):
    return os.path.join(OUT, "benchmarks", rule_name, "{subject}.tsv")


def qc_path(step):
    return os.path.join(OUT, "qc", "{subject}", f"{step}.png")


def job_function(fn):
    """Mark a function Snakemake calls per job (input, params, resources) with its parameters, read
    once here: Snakemake otherwise runs inspect.signature on every call, ~65 000 times per 3000
    subjects, about a tenth of the dry run (bench/dag.py). `_overwrite_params` is Snakemake's own hook
    for this (snakemake.common.overwrite_function_params)."""
    fn._overwrite_params = inspect.signature(fn).parameters
    return fn


def mem_mb(kind):
    """Memory of a job ("light"/"heavy" from config.resources), doubled at each retry: a job killed
    for memory on a cluster is resubmitted (the SLURM profile sets `retries`) with more."""
    base = RES[f"mem_mb_{kind}"]
    return job_function(lambda wildcards, attempt: base * attempt)


def runtime_min(kind):
    """Wall-time limit in minutes (Snakemake's standard `runtime`), from config.resources; longer on retry."""
    base = RES[f"runtime_min_{kind}"]
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
EXECUTION_KEYS = frozenset({"scheduler", "threads", "workers", "checkpoint_every", "gpus", "processes",
                            "ddp_backend", "max_qc_subjects"})


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


class StepIO:
    """One per-subject step's files (patterns with {subject}) and config, declared once: its own rule
    reads them, and so does the fused rule (preprocess.granularity: subject), in CHAIN order."""

    def __init__(self, name, input, output, config):
        self.name, self.input, self.output, self.config = name, input, output, config
        CHAIN.append(self)

    def outputs(self, *exclude):
        return {k: v for k, v in self.output.items() if k not in exclude}

    def for_subject(self, subject):
        w = SimpleNamespace(subject=subject)
        inp = self.input(w) if callable(self.input) else self.input
        cfg = self.config(w) if callable(self.config) else self.config
        fill = lambda d: {k: v.replace("{subject}", subject) for k, v in d.items()}  # noqa: E731
        return {"name": self.name, "input": fill(inp), "output": fill(self.output), "config": cfg}


CHAIN = []


def qc_report(step):
    """The QC figure of a step, as a Snakemake report item."""
    return report(qc_path(step), caption="../report/qc.rst", category="Preprocessing QC",
                  subcategory="{subject}", labels={"subject": "{subject}", "step": step})


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


def raw_reference(wildcards):
    return COHORT.images[wildcards.subject][REF]


def all_targets():
    # the cohort's input problems, one table (one job per subject: merged when the run ends, validate.smk),
    # and every subject's status: included, or excluded with the step and the reason
    targets = ([] if FUSED else [os.path.join(OUT, "validation", "problems.tsv")]) + [COHORT_STATUS]
    # Only the end products are named: the QC images and the stores come with the status files, and the
    # predictions (of the subjects that were not excluded: known once the checkpoint cohort_status ran,
    # plan.smk) with the report. Naming 4 files per subject here cost seconds of DAG building at 10 000 subjects.
    if config["predict"]["model_dir"] or (HAS_LABEL and config["train"]["epochs"] > 0):
        targets += [os.path.join(OUT, "report", "report.html")]
    if EVALUATE:
        targets += [os.path.join(OUT, "evaluation", "summary.tsv")]
    return targets
